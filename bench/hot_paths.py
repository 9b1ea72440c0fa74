"""Request hot paths against `/api/health` on one gevent worker, measured side by side in one run.

Usage: python bench/hot_paths.py [--seconds 3] [--clients 4] [--rounds 2] [--chunks 20000]

Starts the real server (gunicorn, one gevent worker) on a temporary data directory seeded with
200 sessions (one holding 50 messages) and a memory index of `--chunks` chunks (generated
markdown, indexed before the server starts), then alternates every endpoint round by round with
keep-alive clients (so drift hits all alike).  Rate limiting is switched on
(`[auth] rate_limit_requests = 1000000`) and off between measurements by rewriting the live
agent.toml, so "on" and "off" run on the same worker.  Prints each endpoint's req/s, its ratio to
`/api/health` (or to the same route with the limit off) and the goal, twice: from the measured
req/s, and from the worker's CPU time per request (1 / CPU per request is the req/s the worker
could serve on a core of its own; on a loaded machine it is the steadier figure, as the load
clients and everything else running share the cores).  The same request repeated is answered from
the server's per-process result caches while nothing is written; the search over every rare term
in turn shows the cost of a search that misses its cache.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import measure  # noqa: E402
from bench.memory_search import RARE_TERMS, generate  # noqa: E402
from starpod.config import MemoryConfig  # noqa: E402
from starpod.memory import MemoryStore  # noqa: E402
from tests.support import LiveServer  # noqa: E402

ADMIN_KEY = "sp_live_" + "ab" * 20
SESSIONS = 200
RATE_LIMIT_ON = 1_000_000
MESSAGES = 50
SELECTIVE_TERM = "rare1234"  # bench.memory_search marks ~3 % of lines with one of 3,000 rare terms
# Every rare term in turn: searches the server's result cache (64 entries) has not seen recently.
SEARCH_MISSES = "memory/search, rare terms in turn"


def build_memory(home: Path, chunks: int) -> None:
    """Markdown for `chunks` chunks, indexed now so the server starts on an up-to-date index."""
    started = time.perf_counter()
    generate(home, chunks, random.Random(42))
    time.sleep(2.1)  # mtimes leave the racy window, so the server's start-up reindex skips them
    store = MemoryStore(home, MemoryConfig)
    store.open()
    count = store.index.chunk_count()
    store.close()
    print(f"memory index: {count} chunks built in {time.perf_counter() - started:.0f} s")


def set_rate_limit(home: Path, requests: int) -> bool:
    """Rewrite the live agent.toml's limit; True when it changed (the worker re-reads it)."""
    toml = home / "config" / "agent.toml"
    text = toml.read_text()
    updated = re.sub(r"(?m)^rate_limit_requests = \d+", f"rate_limit_requests = {requests}", text)
    if updated == text:
        return False
    toml.write_text(updated)
    return True


def seed_sessions(home: Path) -> str:
    """Insert the sessions straight into the server's database; returns the one with messages."""
    stamp = "2026-01-01T00:00:{:02d}.{:06d}Z"
    connection = sqlite3.connect(home / "db" / "starpod.db", timeout=30)
    ids = [str(uuid.uuid4()) for _ in range(SESSIONS)]
    with connection:
        connection.executemany(
            "INSERT INTO session_metadata (id, created_at, last_message_at, is_closed, summary, message_count,"
            " channel, channel_session_key, title, user_id, is_read) VALUES (?, ?, ?, 0, NULL, ?, 'main', ?, ?,"
            " 'admin', 1)",
            [(sid, stamp.format(0, n), stamp.format(n % 60, n), MESSAGES, sid, f"Session number {n}")
             for n, sid in enumerate(ids)])
        connection.executemany(
            "INSERT INTO session_messages (session_id, role, content, timestamp) VALUES (?, ?, ?, ?)",
            [(ids[0], ("user", "assistant")[n % 2], f"Message {n}: " + "some words of chat text " * 8,
              stamp.format(n, 0)) for n in range(MESSAGES)])
    connection.close()
    return ids[0]


def report(name: str, value: float, reference: float, goal: float | None, unit: str) -> None:
    ratio = value / reference
    verdict = "" if goal is None else f"goal >= {goal:.2f}  {'ok' if round(ratio, 2) >= goal else 'MISSED'}"
    print(f"{name:<36} {value:8.0f} {unit:<9}  {ratio:5.2f}x  {verdict}")


def wait_until_idle(worker: psutil.Process, timeout: float = 60.0) -> None:
    """Until the worker's start-up work in the background (SDK warm-up) is over: < 5 % CPU for 1 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = worker_cpu(worker)
        time.sleep(1.0)
        if worker_cpu(worker) - before < 0.05:
            return


def worker_cpu(worker: psutil.Process) -> float:
    times = worker.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=20_000)
    args = parser.parse_args()

    auth = {"X-API-Key": ADMIN_KEY}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        build_memory(home, args.chunks)
        server = LiveServer(home, workers=1, env={"STARPOD_API_KEY": ADMIN_KEY}).start()
        try:
            session_id = seed_sessions(home)
            endpoints = [  # (name, path, headers, rate limit)
                ("health", "/api/health", {}, 0),
                ("auth/verify", "/api/auth/verify", auth, 0),
                ("sessions?limit=20", "/api/sessions?limit=20", auth, 0),
                ("sessions?limit=20, rate limit on", "/api/sessions?limit=20", auth, RATE_LIMIT_ON),
                ("sessions?limit=1", "/api/sessions?limit=1", auth, 0),
                ("sessions?limit=1, rate limit on", "/api/sessions?limit=1", auth, RATE_LIMIT_ON),
                ("sessions/<id>/messages (50 rows)", f"/api/sessions/{session_id}/messages", auth, 0),
                (f"memory/search?q={SELECTIVE_TERM}", f"/api/memory/search?q={SELECTIVE_TERM}", auth, 0),
                (SEARCH_MISSES, [f"/api/memory/search?q=rare{term}" for term in range(RARE_TERMS)], auth, 0),
            ]
            totals = {name: [] for name, *_ in endpoints}
            cpu = {name: [] for name, *_ in endpoints}
            worker = psutil.Process(server.process.pid).children()[0]
            wait_until_idle(worker)
            for round_no in range(1, args.rounds + 1):
                for name, path, headers, limit in endpoints:
                    if set_rate_limit(home, limit):
                        time.sleep(2.1)  # past the config's racy window: no re-read on every request
                    measure(server.port, path, headers, 0.3, 1)  # warm-up: config, caches, SQL
                    cpu_before = worker_cpu(worker)
                    result = measure(server.port, path, headers, args.seconds, args.clients)
                    cpu_us = (worker_cpu(worker) - cpu_before) * 1e6 / max(1.0, result["rps"] * args.seconds)
                    totals[name].append(result["rps"])
                    cpu[name].append(cpu_us)
                    print(f"round {round_no} {name:<36} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:.2f} ms"
                          f"  worker CPU {cpu_us:6.0f} us/req  errors {result['errors']}")
        finally:
            server.stop()
    mean = {name: sum(values) / len(values) for name, values in totals.items()}
    # Worker CPU per request, as req/s the worker could serve with a core to itself: on a loaded
    # machine the clients and other processes take CPU too, and this ratio ignores them.
    capacity = {name: 1e6 * len(values) / sum(values) for name, values in cpu.items()}
    print(f"\n{args.chunks} chunks, {args.clients} keep-alive clients, {args.rounds} x {args.seconds:.0f} s rounds,"
          f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, figures, unit in (("measured req/s", mean, "req/s"),
                                 ("worker capacity (1 / worker CPU per request)", capacity, "req/cpu-s")):
        print(f"-- {label}")
        report("health", figures["health"], figures["health"], None, unit)
        report("auth/verify", figures["auth/verify"], figures["health"], 0.85, unit)
        for name in ("sessions?limit=20", "sessions/<id>/messages (50 rows)", f"memory/search?q={SELECTIVE_TERM}",
                     SEARCH_MISSES):
            report(name, figures[name], figures["health"], 0.6, unit)
        print("   rate limit on vs off, same route:")
        for name in ("sessions?limit=1", "sessions?limit=20"):  # verify is public: never rate limited
            report(name, figures[f"{name}, rate limit on"], figures[name], 0.9, unit)


if __name__ == "__main__":
    main()
