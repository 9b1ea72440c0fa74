"""Cost of the live agent config and of settings writes, measured side by side in one run.

Usage: python bench/settings_live_config.py [--calls 20000] [--puts 40] [--seconds 3]
1. In process: `config.agent` when agent.toml is unchanged (one stat), right after a change (stat +
   re-read + compare, for 2 s), and a naive re-parse on every access, in microseconds per call.
2. A real 2-worker server: PUT /api/settings/general latency (lock + fsync + rename + reload),
   whether a GET on fresh connections right after each PUT ever shows the old value, and GET
   req/s of the live config next to the public health endpoint.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import measure  # noqa: E402
from starpod.config import LiveAgentConfig, parse_agent_config  # noqa: E402
from starpod.home import AGENT_TOML  # noqa: E402
from tests.support import LiveServer  # noqa: E402

ADMIN_KEY = "sp_live_" + "5b" * 20


def per_call_us(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def in_process(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.toml"
        path.write_text(AGENT_TOML)
        old = time.time_ns() - 10_000_000_000
        os.utime(path, ns=(old, old))  # settled file: outside the re-check window
        live = LiveAgentConfig(path)
        live.get()
        steady = per_call_us(live.get, calls)
        os.utime(path, ns=(time.time_ns(), time.time_ns()))  # just written
        racy = per_call_us(live.get, calls)
        naive = per_call_us(lambda: parse_agent_config(path.read_text()), max(calls // 10, 100))
    print(f"config.agent unchanged file     {steady:8.2f} us/call  (stat only)")
    print(f"config.agent within 2 s of edit {racy:8.2f} us/call  (stat + re-read + compare)")
    print(f"naive re-parse every access     {naive:8.2f} us/call")


def live_server(puts: int, seconds: float) -> None:
    general = {"provider": "anthropic", "model": "claude-haiku-4-5", "max_turns": 30, "max_tokens": 16384,
               "agent_name": "Aster", "server_addr": "127.0.0.1:3000"}
    headers = {"X-API-Key": ADMIN_KEY}
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Path(tmp) / "home", workers=2, env={"STARPOD_API_KEY": ADMIN_KEY}).start()
        try:
            latencies, stale = [], 0
            for i in range(puts):
                started = time.perf_counter()
                response = requests.put(f"{server.base_url}/api/settings/general", headers=headers,
                                        json={**general, "max_turns": 100 + i}, timeout=30)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                for _ in range(4):  # fresh connections: both workers get asked
                    seen = requests.get(f"{server.base_url}/api/settings/general", headers=headers, timeout=30)
                    stale += seen.json()["max_turns"] != 100 + i
            print(f"PUT general p50 {statistics.median(latencies) * 1000:6.2f} ms  "
                  f"max {max(latencies) * 1000:6.2f} ms  ({puts} PUTs)")
            print(f"GETs right after a PUT showing the old value: {stale} of {puts * 4}")
            time.sleep(2.1)  # let the file settle so GETs measure the steady state
            for name, path, hdrs in (("health", "/api/health", {}), ("general", "/api/settings/general", headers)):
                result = measure(server.port, path, hdrs, seconds, 4)
                print(f"GET {name:<8} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
                      f"errors {result['errors']}")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--puts", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    in_process(args.calls)
    live_server(args.puts, args.seconds)


if __name__ == "__main__":
    main()
