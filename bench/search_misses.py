"""hot_paths' memory search rows on their own, for one checkout or two side by side, on a reusable index.

    python bench/search_misses.py [--chunks 100000] [--home DIR] [--against TREE] [--rounds 4] [--seconds 3]

Measures, on one gunicorn gevent worker per checkout, `/api/health`, the same search repeated
(answered from the server's result cache) and every rare term in turn (each search a cache miss),
as hot_paths does, and prints each one's req/s and worker CPU per request beside `/api/health`'s with
hot_paths' goal (>= 0.60).  With `--against TREE` (another checkout, e.g. a detached worktree of the
base commit) a server of each tree runs on its own copy of the data directory and the two are
measured in turns, round after round, so both meet the same load from outside the benchmark.
`--home DIR` keeps the generated data directory (and its copies) in DIR: a later run with the same
DIR and `--chunks` starts at once instead of indexing again.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import measure  # noqa: E402
from bench.hot_paths import (ADMIN_KEY, SEARCH_MISSES, SELECTIVE_TERM, build_memory, report,  # noqa: E402
                             wait_until_idle, worker_cpu)
from bench.memory_search import RARE_TERMS  # noqa: E402
from tests.support import REPO, LiveServer  # noqa: E402

GOAL = 0.6
AUTH = {"X-API-Key": ADMIN_KEY}
ENDPOINTS = [  # (name, path or paths, headers)
    ("health", "/api/health", {}),
    (f"memory/search?q={SELECTIVE_TERM}", f"/api/memory/search?q={SELECTIVE_TERM}", AUTH),
    (SEARCH_MISSES, [f"/api/memory/search?q=rare{term}" for term in range(RARE_TERMS)], AUTH),
]


def data_directory(base: Path, chunks: int) -> Path:
    """`base/<chunks>/home`, generated and indexed unless an earlier run left it there."""
    home = base / str(chunks) / "home"
    if not (home / "db" / "memory.db").exists():
        shutil.rmtree(home, ignore_errors=True)
        build_memory(home, chunks)
    return home


def server_home(home: Path, label: str) -> Path:
    """A copy of `home` for one server (mtimes kept, so its start-up reindex finds nothing to do)."""
    copy = home.parent / f"home-{label.replace(' ', '-')}"
    if not copy.exists():
        shutil.copytree(home, copy)
    return copy


def run(trees: dict[str, Path], home: Path, rounds: int, seconds: float, clients: int) -> None:
    servers = {}
    try:
        for label, tree in trees.items():
            servers[label] = LiveServer(server_home(home, label), workers=1, env={"STARPOD_API_KEY": ADMIN_KEY},
                                        tree=tree).start()
        workers = {label: psutil.Process(server.process.pid).children()[0] for label, server in servers.items()}
        for worker in workers.values():
            wait_until_idle(worker)
        rps = {(label, name): [] for label in trees for name, *_ in ENDPOINTS}
        cpu = {key: [] for key in rps}
        for round_no in range(1, rounds + 1):
            order = list(trees) if round_no % 2 else list(trees)[::-1]
            for label in order:
                for name, path, headers in ENDPOINTS:
                    measure(servers[label].port, path, headers, 0.3, 1)  # warm-up
                    before = worker_cpu(workers[label])
                    result = measure(servers[label].port, path, headers, seconds, clients)
                    cpu_us = (worker_cpu(workers[label]) - before) * 1e6 / max(1.0, result["rps"] * seconds)
                    rps[(label, name)].append(result["rps"])
                    cpu[(label, name)].append(cpu_us)
                    print(f"round {round_no} {label:<10} {name:<36} {result['rps']:8.0f} req/s  p50"
                          f" {result['p50_ms']:.2f} ms  worker CPU {cpu_us:6.0f} us/req  errors {result['errors']}")
    finally:
        for server in servers.values():
            server.stop()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, {clients} keep-alive clients,"
          f" {rounds} x {seconds:.0f} s rounds, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label in trees:
        mean = {name: sum(rps[(label, name)]) / rounds for name, *_ in ENDPOINTS}
        capacity = {name: 1e6 * rounds / sum(cpu[(label, name)]) for name, *_ in ENDPOINTS}
        print(f"== {label} ({trees[label]})")
        for title, figures, unit in (("measured req/s", mean, "req/s"),
                                     ("worker capacity (1 / worker CPU per request)", capacity, "req/cpu-s")):
            print(f"-- {title}")
            report("health", figures["health"], figures["health"], None, unit)
            for name, *_ in ENDPOINTS[1:]:
                report(name, figures[name], figures["health"], GOAL, unit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--home", type=Path, help="keep the generated data directory here, for later runs")
    parser.add_argument("--against", type=Path, help="another checkout: measured in turns with this one")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    trees = {"this tree": REPO}
    if args.against is not None:
        trees["other"] = args.against.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.home.resolve() if args.home is not None else Path(tmp)
        run(trees, data_directory(base, args.chunks), args.rounds, args.seconds, args.clients)


if __name__ == "__main__":
    main()
