"""Benchmark: server start-up and the first chat after it.

Starts the real server (the Procfile's gunicorn command, one gevent worker) against the fake
provider from tests/ and measures, for a first start (empty data directory) and a restart:
- start → first 200 from /api/health (process spawn to the first answered poll, 10 ms apart);
- the first POST /api/chat, sent `--settle` seconds after that first 200 (a person opening the
  UI and typing), against the tenth; the provider SDK must already be warm for them to match.
  The key is verified once before (argon2 runs once per key per worker, by design).

    python bench/startup.py [--rounds 3] [--settle 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_provider import FakeProvider, Reply  # noqa: E402
from tests.support import LiveServer  # noqa: E402

API_KEY = "sp_live_" + "cd" * 20
POLL_SECS = 0.01
START_TIMEOUT_SECS = 60.0
CHATS = 10


def first_health(server: LiveServer) -> float:
    """Seconds from spawning the server to its first 200 on /api/health."""
    started = time.perf_counter()
    server.spawn()
    while time.perf_counter() < started + START_TIMEOUT_SECS:
        try:
            if requests.get(f"{server.base_url}/api/health", timeout=5).status_code == 200:
                return time.perf_counter() - started
        except requests.RequestException:
            pass
        time.sleep(POLL_SECS)
    raise TimeoutError("the server did not answer /api/health")


def chat_latencies(server: LiveServer) -> list[float]:
    http = requests.Session()
    http.headers["X-API-Key"] = API_KEY
    # argon2 verifies a key once per worker by design; pay that outside the chats compared.
    http.get(f"{server.base_url}/api/auth/verify", timeout=60).raise_for_status()
    latencies = []
    for i in range(CHATS):
        started = time.perf_counter()
        http.post(f"{server.base_url}/api/chat", json={"text": f"hello {i}"}, timeout=60).raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


def one_round(home: Path, env: dict, settle: float) -> tuple[float, float, float]:
    server = LiveServer(home, workers=1, env=env)
    try:
        to_health = first_health(server)
        time.sleep(settle)
        chats = chat_latencies(server)
    finally:
        server.stop()
    return to_health, chats[0], chats[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="restarts measured (after one first start)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between the first 200 and the first chat")
    args = parser.parse_args()

    fake = FakeProvider().start()
    fake.default = Reply("ok", input_tokens=10, output_tokens=2)
    env = {**fake.environ(), "STARPOD_API_KEY": API_KEY}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".starpod"
        first_start = one_round(home, env, args.settle)
        restarts = [one_round(home, env, args.settle) for _ in range(args.rounds)]
    fake.stop()

    def row(label: str, value_ms: float, goal: str) -> None:
        print(f"{label:<52}{value_ms:>10.0f}{goal:>16}")

    print(f"{'measure (ms)':<52}{'value':>10}{'goal':>16}")
    row("first start: start -> first /api/health 200", first_start[0] * 1000, "<= 1000")
    row("restart: start -> first /api/health 200 (median)",
        statistics.median(r[0] for r in restarts) * 1000, "<= 1000")
    row("first start: first chat", first_start[1] * 1000, "~ tenth chat")
    row("first start: tenth chat", first_start[2] * 1000, "")
    row("restart: first chat (median)", statistics.median(r[1] for r in restarts) * 1000, "~ tenth chat")
    row("restart: tenth chat (median)", statistics.median(r[2] for r in restarts) * 1000, "")


if __name__ == "__main__":
    main()
