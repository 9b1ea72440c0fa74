"""Memory index benchmark: reindex throughput, incremental restart and search latency.

Generates a data directory of markdown (about 100,000 chunks at the default chunk size, a fifth
of it in per-user spaces), then reports, for each engine over the same files and queries:
- full reindex throughput (MB/s) from an index of the same files (a rebuild), and per CPU-second
  of this process plus the PostgreSQL backends serving it (when PostgreSQL runs on this machine):
  the steadier figure on a busy machine,
- incremental restart time with nothing changed (opening the store again),
- median and p95 search latency for selective terms (≤ 100 hits) and common terms (≥ 10k hits, or
  a tenth of the chunks in a smaller run),
  for a common and a selective word together, and for common terms with the RANK_CAP shortcut
  switched off (for comparison, on a sixth of the queries).

    python bench/memory_search.py [--chunks 100000] [--dir PATH] [--queries 300] [--database-url URL]

SQLite (FTS5) is always measured; `--database-url postgresql://…` (an empty database) adds the
PostgreSQL index beside it, with the ratio PostgreSQL / SQLite of each figure.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starpod.config import MemoryConfig  # noqa: E402
from starpod.memory import MemoryStore, index  # noqa: E402

LINES_PER_FILE = 650          # ≈ 40 chunks of 1600 bytes with 320 bytes of overlap
CHUNKS_PER_FILE = 40
RARE_TERMS = 3000
USERS = ["u1", "u2", "u3", "u4", "u5"]


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(words)


def generate(root: Path, chunks: int, rng: random.Random) -> tuple[int, list[str]]:
    """Write the markdown tree; returns (bytes written, the vocabulary ordered by frequency)."""
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf
    files = max(1, chunks // CHUNKS_PER_FILE)
    total = 0
    for n in range(files):
        owner = USERS[n % len(USERS)] if n % 5 == 0 else None
        base = root / "users" / owner / "knowledge" if owner else root / "knowledge" / f"topic{n % 50}"
        base.mkdir(parents=True, exist_ok=True)
        stream = rng.choices(words, weights, k=LINES_PER_FILE * 12)
        lines = []
        for i in range(LINES_PER_FILE):
            line = " ".join(stream[i * 12:(i + 1) * 12])
            if i % 40 == 0:
                line = "## " + line
            if rng.random() < 0.03:
                line += f" rare{rng.randrange(RARE_TERMS)}"
            lines.append(line)
        text = "\n".join(lines) + "\n"
        (base / f"note{n}.md").write_text(text)
        total += len(text.encode())
    return total, words


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def latencies(store: MemoryStore, queries: list[str]) -> tuple[float, float]:
    """Median and p95 of searches computed afresh: queries repeat, and the store caches results."""
    samples = []
    for query in queries:
        store._results.clear()
        samples.append(timed(store.search, query, "u1", 10))
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def hit_count(store: MemoryStore, term: str) -> int:
    with store.index.connection() as conn:
        return conn.execute(f"SELECT count(*) FROM memory_fts WHERE {store.index.MATCH_SQL} AND owner IN ('', 'u1')",
                            (store.index.match_query(term),)).fetchone()[0]


GOALS = {  # figure → its goal, for either engine
    "full reindex (MB/s)": ">= 5", "restart, nothing changed (s)": "<= 2",
    "selective median (ms)": "<= 5", "common p95 (ms)": "<= 50",
}


def measure(root: Path, database_url: str | None, queries: dict[str, list[str]]) -> dict[str, float]:
    """Every figure of one engine over the data directory `root`."""
    settings = MemoryConfig()
    store = MemoryStore(root, lambda: settings, database_url)
    store.open()
    backends, started, cpu_started = BackendCpu(database_url), time.perf_counter(), time.process_time()
    with backends:
        stats = store.reindex(full=True)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started + backends.used
    figures = {"chunks indexed": store.index.chunk_count(), "full reindex (MB/s)": stats["bytes"] / 1e6 / seconds,
               "full reindex (MB per CPU-s)": stats["bytes"] / 1e6 / cpu}
    store.close()
    restart = MemoryStore(root, lambda: settings, database_url)
    started = time.perf_counter()
    restart.open()
    figures["restart, nothing changed (s)"] = time.perf_counter() - started
    for name in ("selective", "common"):  # warm the caches
        latencies(restart, queries[name][:20])
    for name, texts in queries.items():
        if name == "common, no RANK_CAP":
            capped, index.RANK_CAP = index.RANK_CAP, 10 ** 9
        median, p95 = latencies(restart, texts)
        if name == "common, no RANK_CAP":
            index.RANK_CAP = capped
        figures[f"{name} median (ms)"], figures[f"{name} p95 (ms)"] = median, p95
    restart.close()
    return figures


class BackendCpu:
    """CPU-seconds used, while it is entered, by the PostgreSQL backends serving the database of
    `database_url` that run on this machine (none for SQLite).  Sampled every SAMPLE_SECS, so that
    connections opened and closed meanwhile count (but for their last fraction of a sample)."""

    SAMPLE_SECS = 0.1

    def __init__(self, database_url: str | None):
        self.url = database_url
        self.used = 0.0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "BackendCpu":
        if self.url:
            import psycopg
            self._conn = psycopg.connect(self.url, autocommit=True)
            self._sample(first=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.url:
            self._stop.set()
            self._thread.join()
            self._sample()
            self._conn.close()
            self.used = sum(used - self._first.get(pid, 0.0) for pid, used in self._last.items())

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECS):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        pids = [pid for (pid,) in self._conn.execute("SELECT pid FROM pg_stat_activity "
                                                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:  # gone, or not on this machine
                continue
            (self._first if first else self._last)[pid] = times.user + times.system


def choose_queries(root: Path, words: list[str], count: int, common_hits_min: int,
                   rng: random.Random) -> tuple[dict, str]:
    """The query sets (terms picked by their hits in a SQLite index of `root`) and their hit ranges."""
    settings = MemoryConfig()
    store = MemoryStore(root, lambda: settings)
    store.open()
    rare = [f"rare{rng.randrange(RARE_TERMS)}" for _ in range(count)]
    common_terms = [w for w in words[:60] if hit_count(store, w) >= common_hits_min][:20]
    rare_hits = [hit_count(store, t) for t in rare[:50]]
    common_hits = [hit_count(store, t) for t in common_terms]
    store.close()
    common = [rng.choice(common_terms) for _ in range(count)]
    queries = {"selective": rare, "common": common,
               "common + selective": [f"{rng.choice(common_terms)} {t}" for t in rare],
               "common, no RANK_CAP": common[:max(1, count // 6)]}
    hits = (f"selective terms {min(rare_hits)}-{max(rare_hits)} hits, "
            f"common terms {min(common_hits)}-{max(common_hits)} hits (of user u1 and the shared space)")
    return queries, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="data directory (default: a temp dir)")
    parser.add_argument("--database-url", default=None,
                        help="an empty postgresql:// database: measure the PostgreSQL index beside SQLite")
    args = parser.parse_args()
    rng = random.Random(42)
    root = (args.dir or Path(tempfile.mkdtemp(prefix="starpod-bench-"))) / ".starpod"
    if root.exists():
        sys.exit(f"{root} exists; pass a new --dir")

    started = time.perf_counter()
    size, words = generate(root, args.chunks, rng)
    print(f"generated {size / 1e6:.1f} MB of markdown in {time.perf_counter() - started:.1f} s under {root}")
    time.sleep(2.1)  # let every mtime leave the racy window, as on any real restart
    queries, hits = choose_queries(root, words, args.queries, min(10_000, args.chunks // 10), rng)
    print(hits)
    engines = {"SQLite FTS5": measure(root, None, queries)}
    if args.database_url:
        engines["PostgreSQL"] = measure(root, args.database_url, queries)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_table(engines)


def print_table(engines: dict[str, dict[str, float]]) -> None:
    names = list(engines)
    header = f"{'':34}" + "".join(f"{name:>14}" for name in names)
    ratio = len(names) == 2
    print(header + (f"{'PG / SQLite':>13}" if ratio else "") + "   goal")
    for figure in engines[names[0]]:
        values = [engines[name][figure] for name in names]
        row = f"{figure:34}" + "".join(f"{value:>14.2f}" if isinstance(value, float) else f"{value:>14}"
                                       for value in values)
        if ratio:
            row += f"{values[1] / values[0]:>12.2f}x" if values[0] else f"{'':>13}"
        print(row + (f"   {GOALS[figure]}" if figure in GOALS else ""))


if __name__ == "__main__":
    main()
