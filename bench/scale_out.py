"""Scale-out: POST /api/chat throughput and WebSocket frames/s with 1 server on SQLite, 1 server on
PostgreSQL and 2 servers on PostgreSQL (one data directory, one database), side by side in one run.

Usage: python bench/scale_out.py [--seconds 8] [--clients 8] [--deltas 200] [--rounds 2]

Every server is its own gunicorn master with one gevent worker; the load is spread evenly over the
servers of a setup.  One fake provider (tests/fake_provider.py, in its own process) answers every
setup alike and at once: a chat gets "ok", a streamed chat `--deltas` text deltas with no delay, so
the servers, not the provider, set the pace.  PostgreSQL is the one at STARPOD_TEST_POSTGRES_URL
(default 127.0.0.1:5432); each setup gets a fresh database, dropped afterwards.  Setups alternate
round by round (after an unrecorded warm-up) so drift hits all alike; the best round of each counts.

The clients run on the same machine as the servers and PostgreSQL: with fewer free cores than
2 servers + PostgreSQL + clients need, 2 servers cannot double the throughput of 1.  The load
average and the core count are printed beside the figures, and each setup's units per CPU-second
of its server processes beside its throughput: what a server does with a core of its own, the
steadier figure on a busy machine.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fake_provider, pgtest  # noqa: E402
from tests.support import LiveServer  # noqa: E402

ADMIN_KEY = "sp_live_" + "ab" * 20
WARM_UP_SECS = 2.0
SETUPS = ("1 server, SQLite", "1 server, PostgreSQL", "2 servers, PostgreSQL")
UNITS = ("chats/s", "frames/s", "chats/cpu-s", "frames/cpu-s")
GOALS = {  # label: (setup, baseline setup, units compared, minimum ratio, why)
    "2 servers / 1 (PostgreSQL), measured": (
        "2 servers, PostgreSQL", "1 server, PostgreSQL", UNITS[:2], 1.0,
        "> 1 with a free core per server (about 2); a saturated machine cannot show it"),
    "2 servers / 1 (PostgreSQL), per CPU-s": (
        "2 servers, PostgreSQL", "1 server, PostgreSQL", UNITS[2:], 0.8,
        ">= 0.8: acting as one costs a server at most 20 % more CPU per unit, so n servers on n cores do ~n x"),
    "PostgreSQL / SQLite (1 server), measured": (
        "1 server, PostgreSQL", "1 server, SQLite", UNITS[:2], 0.5,
        ">= 0.5: a network database costs at most half"),
}


# --- the provider process --------------------------------------------------------------------

def _provider_main(deltas: int, ready, stop) -> None:
    fake = fake_provider.FakeProvider().start()

    def answer(recorded):
        if "stream please" in json.dumps(recorded.body["messages"][-1]):
            return fake_provider.Reply("x" * deltas, chunks=deltas)
        return fake_provider.Reply("ok")

    fake.default = answer
    ready.send(fake.environ(STARPOD_API_KEY=ADMIN_KEY))
    stop.recv()
    fake.stop()


# --- load clients (one process each) ---------------------------------------------------------

def _chat_client(port: int, seconds: float, results) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"text": "hello"})
    headers = {"X-API-Key": ADMIN_KEY, "Content-Type": "application/json"}
    done = errors = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        connection.request("POST", "/api/chat", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            done += 1
        else:
            errors += 1
    results.put((done, errors))


def _stream_client(port: int, seconds: float, results) -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?token={ADMIN_KEY}", timeout=60)
    frames = errors = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        ws.send(json.dumps({"type": "message", "text": "stream please"}))
        while True:
            frame = json.loads(ws.recv())
            frames += 1
            if frame["type"] in ("stream_end", "error"):
                errors += frame["type"] == "error" or bool(frame.get("is_error"))
                break
    ws.close()
    results.put((frames, errors))


def run_clients(target, ports: list[int], clients: int, seconds: float) -> tuple[float, int, int]:
    """(units per second, units, errors) of `clients` processes spread evenly over `ports`."""
    results = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=target, args=(ports[i % len(ports)], seconds, results))
               for i in range(clients)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    totals = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started  # includes the last unit each client finished
    units = sum(t[0] for t in totals)
    return units / elapsed, units, sum(t[1] for t in totals)


# --- setups ----------------------------------------------------------------------------------

class Setup:
    """The servers of one setup on a fresh data directory (and a fresh database on PostgreSQL)."""

    def __init__(self, name: str, environ: dict, scratch: Path):
        self.name = name
        self.database = pgtest.ModuleDatabase().create() if "PostgreSQL" in name else None
        home = Path(tempfile.mkdtemp(dir=scratch)) / "home"
        env = dict(environ)
        if self.database is not None:
            env["DATABASE_URL"] = self.database.url_for(home)
        count = 2 if name.startswith("2 ") else 1
        self.servers = [LiveServer(home, env=env) for _ in range(count)]
        for server in self.servers:
            server.start()

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def cpu_seconds(self) -> float:
        """CPU time used so far by every process of this setup's servers."""
        total = 0.0
        for server in self.servers:
            master = psutil.Process(server.process.pid)
            for process in [master, *master.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def measure(self, target, clients: int, seconds: float) -> tuple[float, float, int]:
        """(units per second, units per server CPU-second, errors) of one load."""
        cpu_before = self.cpu_seconds()
        rate, units, errors = run_clients(target, self.ports, clients, seconds)
        return rate, units / max(self.cpu_seconds() - cpu_before, 1e-9), errors

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.database is not None:
            self.database.drop()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    unreachable = pgtest.unreachable_reason()
    if unreachable:
        sys.exit(unreachable)

    ready, ready_child = multiprocessing.Pipe()
    stop, stop_child = multiprocessing.Pipe()
    provider = multiprocessing.Process(target=_provider_main, args=(args.deltas, ready_child, stop_child))
    provider.start()
    environ = ready.recv()
    print(f"{args.clients} clients, {args.seconds:.0f} s per measurement, {args.rounds} rounds, "
          f"{args.deltas} deltas per streamed chat; before: {load()}")
    best = {name: dict.fromkeys(UNITS, 0.0) for name in SETUPS}
    with tempfile.TemporaryDirectory() as scratch:
        setups = [Setup(name, environ, Path(scratch)) for name in SETUPS]
        try:
            for setup in setups:  # unrecorded: SDK imports, connection pools, caches warm up
                setup.measure(_chat_client, args.clients, WARM_UP_SECS)
                setup.measure(_stream_client, args.clients, WARM_UP_SECS)
            for round_number in range(1, args.rounds + 1):
                for setup in setups:
                    chats, chats_per_cpu, chat_errors = setup.measure(_chat_client, args.clients, args.seconds)
                    frames, frames_per_cpu, stream_errors = setup.measure(_stream_client, args.clients, args.seconds)
                    print(f"round {round_number}  {setup.name:<22} POST /api/chat {chats:6.1f}/s "
                          f"({chat_errors} errors)  WS {frames:6.0f} frames/s ({stream_errors} errors)  {load()}")
                    figures = dict(zip(UNITS, (chats, frames, chats_per_cpu, frames_per_cpu)))
                    for unit, value in figures.items():
                        best[setup.name][unit] = max(best[setup.name][unit], value)
        finally:
            for setup in setups:
                setup.stop()
            stop.send("stop")
            provider.join()

    print(f"\n{'best of rounds':<24}" + "".join(f"{unit:>14}" for unit in UNITS))
    for name in SETUPS:
        print(f"{name:<24}" + "".join(f"{best[name][unit]:>14.1f}" for unit in UNITS))
    print("(per CPU-s: units per CPU-second of the setup's server processes, i.e. what a server does "
          "with a core of its own; PostgreSQL's own CPU is not counted)")
    print(f"\n{'ratio':<42}{'chat':>7}{'frames':>8}  goal")
    for label, (setup, baseline, units, minimum, why) in GOALS.items():
        ratios = [best[setup][unit] / best[baseline][unit] for unit in units]
        verdict = "met" if min(ratios) >= minimum else "NOT met"
        print(f"{label:<42}{ratios[0]:>6.2f}x{ratios[1]:>7.2f}x  {why} ({verdict})")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
