"""Memory index benchmark: reindex throughput, incremental restart and search latency.

Generates a data directory of markdown (about 100,000 chunks at the default chunk size, a fifth
of it in per-user spaces), then reports:
- full reindex throughput (MB/s) from an empty index,
- incremental restart time with nothing changed (opening the store again),
- median and p95 search latency for selective terms (≤ 100 hits) and common terms (≥ 10k hits),
  and for common terms with the RANK_CAP shortcut switched off (for comparison).

    python bench/memory_search.py [--chunks 100000] [--dir PATH] [--queries 300] [--database-url URL]

`--database-url postgresql://…` measures the PostgreSQL index (in that database) instead of SQLite.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

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
    samples = sorted(timed(store.search, q, "u1", 10) for q in queries)
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def hit_count(store: MemoryStore, term: str) -> int:
    with store.index.connection() as conn:
        return conn.execute(f"SELECT count(*) FROM memory_fts WHERE {store.index.MATCH_SQL} AND owner IN ('', 'u1')",
                            (store.index.match_query(term),)).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="data directory (default: a temp dir)")
    parser.add_argument("--database-url", default=None, help="a postgresql:// URL: benchmark the PostgreSQL index")
    args = parser.parse_args()
    rng = random.Random(42)
    root = (args.dir or Path(tempfile.mkdtemp(prefix="starpod-bench-"))) / ".starpod"
    if root.exists():
        sys.exit(f"{root} exists; pass a new --dir")

    started = time.perf_counter()
    size, words = generate(root, args.chunks, rng)
    print(f"generated {size / 1e6:.1f} MB of markdown in {time.perf_counter() - started:.1f} s under {root}")
    time.sleep(2.1)  # let every mtime leave the racy window, as on any real restart

    settings = MemoryConfig()
    store = MemoryStore(root, lambda: settings, args.database_url)
    store.open()
    started = time.perf_counter()
    stats = store.reindex(full=True)
    seconds = time.perf_counter() - started
    chunks = store.index.chunk_count()
    print(f"full reindex: {stats['files']} files, {chunks} chunks, {stats['bytes'] / 1e6:.1f} MB "
          f"in {seconds:.2f} s = {stats['bytes'] / 1e6 / seconds:.1f} MB/s")
    store.close()

    restart = MemoryStore(root, lambda: settings, args.database_url)
    started = time.perf_counter()
    stats = restart.open()
    print(f"incremental restart, nothing changed: {time.perf_counter() - started:.3f} s "
          f"({stats['unchanged']} unchanged, {stats['indexed']} re-indexed)")

    rare = [f"rare{rng.randrange(RARE_TERMS)}" for _ in range(args.queries)]
    common_terms = [w for w in words[:60] if hit_count(restart, w) >= 10_000][:20]
    common = [rng.choice(common_terms) for _ in range(args.queries)]
    rare_hits = [hit_count(restart, t) for t in rare[:50]]
    common_hits = [hit_count(restart, t) for t in common_terms]
    for queries in (rare, common):  # warm the page cache
        latencies(restart, queries[:20])
    sel_med, sel_p95 = latencies(restart, rare)
    com_med, com_p95 = latencies(restart, common)
    print(f"selective terms ({min(rare_hits)}-{max(rare_hits)} hits): median {sel_med:.2f} ms, p95 {sel_p95:.2f} ms")
    print(f"common terms ({min(common_hits)}-{max(common_hits)} hits): median {com_med:.2f} ms, p95 {com_p95:.2f} ms")
    two_word = [f"{rng.choice(common_terms)} {t}" for t in rare]
    tw_med, tw_p95 = latencies(restart, two_word)
    print(f"common + selective (two words): median {tw_med:.2f} ms, p95 {tw_p95:.2f} ms")
    capped, index.RANK_CAP = index.RANK_CAP, 10 ** 9
    ex_med, ex_p95 = latencies(restart, common)
    index.RANK_CAP = capped
    print(f"common terms, every match ranked (no RANK_CAP): median {ex_med:.2f} ms, p95 {ex_p95:.2f} ms")
    restart.close()
    print("goals: selective median <= 5 ms, common p95 <= 50 ms, reindex >= 5 MB/s, restart <= 2 s")


if __name__ == "__main__":
    main()
