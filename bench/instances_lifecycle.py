"""Local instance lifecycle timings through the real server (gunicorn, two gevent workers).

Usage: python bench/instances_lifecycle.py [--instances 2]
Creates N instances (each a child Starpod server), then times, per instance: create (until its
/api/health answers), get, health (includes a 0.1 s CPU sample), pause, resume (restart from
paused), full restart (restart from running) and delete.  Then stops and starts the managing
server and reports whether the running instances were adopted (same server process) and how long
a list takes right after the restart.  Prints the median of each operation side by side.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import LiveServer  # noqa: E402

ADMIN_KEY = "sp_live_" + "ab" * 20


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}

    def record(name: str, method: str, path: str, expect: int):
        ms, response = timed(lambda: server.request(method, path, ADMIN_KEY))
        assert response.status_code == expect, (name, response.status_code, response.text)
        times.setdefault(name, []).append(ms)
        return response

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        server = LiveServer(home, workers=2, env={"STARPOD_API_KEY": ADMIN_KEY}).start()
        ids = []
        try:
            for _ in range(args.instances):
                ids.append(record("create", "POST", "/api/instances", 201).json()["id"])
            for iid in ids:
                record("get", "GET", f"/api/instances/{iid}", 200)
                record("health", "GET", f"/api/instances/{iid}/health", 200)
                record("pause", "POST", f"/api/instances/{iid}/pause", 200)
                record("resume", "POST", f"/api/instances/{iid}/restart", 200)
                record("full restart", "POST", f"/api/instances/{iid}/restart", 200)
            pids = {iid: (home / "instances" / iid / "gunicorn.pid").read_text() for iid in ids}
            server.stop()
            server = LiveServer(home, workers=2).start()
            listed = record("list after restart", "GET", "/api/instances", 200).json()
            adopted = sum(1 for item in listed if item["status"] == "running"
                          and (home / "instances" / item["id"] / "gunicorn.pid").read_text() == pids[item["id"]])
            for iid in ids:
                record("delete", "DELETE", f"/api/instances/{iid}", 204)
        finally:
            server.stop()
            for iid in ids:  # never leave a child server behind, even after a failure
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int((home / "instances" / iid / "gunicorn.pid").read_text()), signal.SIGKILL)

    print(f"{'operation':<20} {'median ms':>10}  (n)")
    for name, values in times.items():
        print(f"{name:<20} {statistics.median(values):10.1f}  ({len(values)})")
    print(f"adopted after server restart: {adopted}/{len(ids)} instances kept their server process")


if __name__ == "__main__":
    main()
