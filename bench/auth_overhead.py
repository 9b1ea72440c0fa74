"""Authenticated `GET /api/auth/verify` vs public `GET /api/health`, one gevent worker, same run.

Usage: python bench/auth_overhead.py [--seconds 5] [--clients 4] [--rounds 2]
Starts the real server (gunicorn, one gevent worker) on a free loopback port with a temporary
data directory, then alternates the two endpoints so drift affects both alike.  Prints req/s,
median latency and the ratio verify/health (goal >= 0.8; argon2 on every request would give ~0.05).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import measure  # noqa: E402
from tests.support import LiveServer  # noqa: E402

ADMIN_KEY = "sp_live_" + "be" * 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Path(tmp) / "home", workers=1, env={"STARPOD_API_KEY": ADMIN_KEY}).start()
        try:
            measure(server.port, "/api/auth/verify", {"X-API-Key": ADMIN_KEY}, 1.0, 1)  # warm-up
            totals = {"health": [], "verify": []}
            for round_no in range(1, args.rounds + 1):
                for name, path, headers in (("health", "/api/health", {}),
                                            ("verify", "/api/auth/verify", {"X-API-Key": ADMIN_KEY})):
                    result = measure(server.port, path, headers, args.seconds, args.clients)
                    totals[name].append(result["rps"])
                    print(f"round {round_no} {name:<6} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:.2f} ms"
                          f"  errors {result['errors']}")
        finally:
            server.stop()
    health = sum(totals["health"]) / len(totals["health"])
    verify = sum(totals["verify"]) / len(totals["verify"])
    print(f"health  {health:8.0f} req/s (public, no auth)")
    print(f"verify  {verify:8.0f} req/s (authenticated, argon2 cached)")
    print(f"ratio verify/health = {verify / health:.2f}  (goal >= 0.80)")


if __name__ == "__main__":
    main()
