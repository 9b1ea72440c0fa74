"""Benchmark: server-side overhead of POST /api/chat and GET /api/sessions latency.

Runs a real gunicorn server (gevent worker) against the fake provider from tests/, which answers
instantly.  Overhead per chat = client-measured latency − time the provider spent answering.
Beside it, the worker's CPU time per chat (its daily-log append after the reply included), the
steadier figure on a shared, loaded machine.
The sessions list is measured with 10,000 stored sessions.

    python bench/chat_overhead.py [--chats 300] [--lists 300]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hot_paths import wait_until_idle, worker_cpu  # noqa: E402
from starpod import prepare_storage  # noqa: E402
from starpod.config import Config  # noqa: E402
from starpod.db import database  # noqa: E402
from starpod.models import Session  # noqa: E402
from starpod.timeutil import to_rfc3339, utcnow  # noqa: E402
from tests.fake_provider import FakeProvider, Reply  # noqa: E402
from tests.support import live_server  # noqa: E402

API_KEY = "sp_live_" + "ab" * 20
STORED_SESSIONS = 10_000


def seed_sessions(home: Path, count: int) -> None:
    config = Config(home=home, environ={})
    prepare_storage(config)
    from datetime import timedelta
    start = utcnow()
    rows = [{"id": str(uuid.uuid4()), "created_at": to_rfc3339(start - timedelta(seconds=i)),
             "last_message_at": to_rfc3339(start - timedelta(seconds=i)), "channel": "main",
             "channel_session_key": str(uuid.uuid4()), "title": f"session {i}", "user_id": "admin",
             "message_count": 3} for i in range(count)]
    with database.connection_context(), database.atomic():
        for offset in range(0, count, 500):
            Session.insert_many(rows[offset:offset + 500]).execute()
    database.close_all()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--lists", type=int, default=300)
    args = parser.parse_args()

    fake = FakeProvider().start()
    fake.default = Reply("ok", input_tokens=100, output_tokens=5)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".starpod"
        env = {**fake.environ(), "STARPOD_API_KEY": API_KEY}
        with live_server(home, workers=1, env=env) as server:
            http = requests.Session()
            http.headers["X-API-Key"] = API_KEY
            url = f"{server.base_url}/api/chat"
            for _ in range(20):  # warm up: memory index, SDK client, connection pools
                http.post(url, json={"text": "warm up"}).raise_for_status()
            worker = psutil.Process(server.process.pid).children()[0]
            wait_until_idle(worker)
            fake.requests.clear()
            overheads, totals = [], []
            cpu_before = worker_cpu(worker)
            for i in range(args.chats):
                started = time.perf_counter()
                response = http.post(url, json={"text": f"benchmark message {i}", "channel_session_key": f"k{i % 10}"})
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                totals.append(elapsed * 1000)
                overheads.append((elapsed - fake.requests[-1].provider_seconds) * 1000)
            wait_until_idle(worker)  # the last daily-log appends run after their replies
            cpu_per_chat = (worker_cpu(worker) - cpu_before) * 1000 / args.chats

            seed_home = home
        seed_sessions(seed_home, STORED_SESSIONS)
        with live_server(seed_home, workers=1, env=env) as server:
            http = requests.Session()
            http.headers["X-API-Key"] = API_KEY
            url = f"{server.base_url}/api/sessions"
            for _ in range(20):
                http.get(url).raise_for_status()
            wait_until_idle(psutil.Process(server.process.pid).children()[0])  # its SDK warm-up done
            lists = []
            for _ in range(args.lists):
                started = time.perf_counter()
                response = http.get(url)
                lists.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            assert len(response.json()) == 20
    fake.stop()

    print(f"{'measure':<44}{'median':>10}{'p90':>10}{'goal':>10}")
    print(f"{'POST /api/chat overhead (ms, excl. provider)':<44}{statistics.median(overheads):>10.2f}"
          f"{percentile(overheads, 0.9):>10.2f}{'<= 3':>10}")
    print(f"{'POST /api/chat total latency (ms)':<44}{statistics.median(totals):>10.2f}"
          f"{percentile(totals, 0.9):>10.2f}{'':>10}")
    print(f"{'worker CPU per chat (ms)':<44}{cpu_per_chat:>10.2f}{'':>10}{'':>10}")
    print(f"{'GET /api/sessions, 10k sessions (ms)':<44}{statistics.median(lists):>10.2f}"
          f"{percentile(lists, 0.9):>10.2f}{'<= 20':>10}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
