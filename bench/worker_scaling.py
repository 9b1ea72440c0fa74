"""Throughput of a mixed read load on 1 and on 2 gunicorn gevent workers, measured side by side.

Usage: python bench/worker_scaling.py [--seconds 5] [--rounds 3] [--connections 32] [--chunks 20000]

Two servers run at once on copies of one seeded data directory (200 sessions, one holding 50
messages, a memory index of `--chunks` chunks): one with a single worker, one with two.  Rounds
alternate between them, so drift on a shared machine hits both alike; the idle one costs nothing.
The load is an even mix of `/api/health`, `/api/auth/verify`, `/api/sessions?limit=20`,
`/api/sessions/<id>/messages` and `/api/memory/search`, sent by one client process that keeps
`--connections` keep-alive connections busy through raw non-blocking sockets (one request in flight
per connection, a new connection every `--reconnect` requests so the kernel's accept spreads them
over the workers).  The client shares the machine's cores with the workers: its CPU is printed
beside the server's, as is the load average, so the reader can see what bounds the ratio.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import selectors
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hot_paths import ADMIN_KEY, SELECTIVE_TERM, build_memory, seed_sessions, wait_until_idle  # noqa: E402
from tests.support import LiveServer  # noqa: E402

GOAL = 1.7


def mixed_requests(session_id: str) -> list[bytes]:
    """The raw GET requests of the mix, keep-alive, each with the admin key except health."""
    paths = ["/api/auth/verify", "/api/sessions?limit=20", f"/api/sessions/{session_id}/messages",
             f"/api/memory/search?q={SELECTIVE_TERM}"]
    public = [b"GET /api/health HTTP/1.1\r\nHost: bench\r\n\r\n"]
    return public + [f"GET {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {ADMIN_KEY}\r\n\r\n".encode()
                     for path in paths]


class _Connection:
    """One keep-alive connection: sends the next request of the mix once the previous answer is in."""

    def __init__(self, port: int, requests: list[bytes], offset: int):
        self.port = port
        self.requests = requests
        self.next = offset
        self.sent_here = 0
        self.sock: socket.socket | None = None
        self.buffer = b""

    def open(self) -> socket.socket:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.sent_here = 0
        return self.sock

    def send(self) -> None:
        self.sock.sendall(self.requests[self.next % len(self.requests)])  # small: fits the socket buffer
        self.next += 1
        self.sent_here += 1
        self.buffer = b""

    def response_status(self) -> int | None:
        """The status of the complete response in the buffer, None while it is incomplete."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].lower()
        length_at = head.find(b"\r\ncontent-length:")
        if length_at < 0:
            raise RuntimeError("response without Content-Length")
        length = int(head[length_at + 17:].split(b"\r\n", 1)[0])
        if len(self.buffer) < head_end + 4 + length:
            return None
        return int(self.buffer[9:12])


def drive(port: int, requests: list[bytes], connections: int, seconds: float, reconnect: int, results) -> None:
    """Client process: keep every connection busy for `seconds`; reports (ok, errors, CPU seconds)."""
    selector = selectors.DefaultSelector()
    clients = [_Connection(port, requests, offset) for offset in range(connections)]
    for client in clients:
        selector.register(client.open(), selectors.EVENT_READ, client)
        client.send()
    ok = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            client = key.data
            chunk = client.sock.recv(262144)
            if not chunk:
                raise RuntimeError("server closed a keep-alive connection")
            client.buffer += chunk
            status = client.response_status()
            if status is None:
                continue
            ok, errors = (ok + 1, errors) if status == 200 else (ok, errors + 1)
            if client.sent_here >= reconnect:
                selector.unregister(client.sock)
                client.sock.close()
                selector.register(client.open(), selectors.EVENT_READ, client)
            client.send()
    for client in clients:
        client.sock.close()
    results.put((ok, errors, time.process_time()))


def measure(server: LiveServer, requests: list[bytes], args) -> dict:
    """req/s of the mix, the workers' CPU (cores busy) and the client's CPU over one round."""
    workers = psutil.Process(server.process.pid).children()
    before = [cpu_seconds(worker) for worker in workers]
    results = multiprocessing.Queue()
    client = multiprocessing.Process(target=drive, args=(server.port, requests, args.connections, args.seconds,
                                                         args.reconnect, results))
    started = time.monotonic()
    client.start()
    ok, errors, client_cpu = results.get()
    client.join()
    elapsed = time.monotonic() - started
    each = [cpu_seconds(worker) - earlier for worker, earlier in zip(workers, before)]
    worker_cpu = sum(each)
    return {"rps": ok / args.seconds, "errors": errors, "worker_cores": worker_cpu / elapsed,
            "busiest_share": max(each) / max(worker_cpu, 1e-9),  # 1/workers when the load is even
            "worker_us": worker_cpu * 1e6 / max(ok, 1), "client_cores": client_cpu / elapsed,
            "client_us": client_cpu * 1e6 / max(ok, 1)}


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def start_servers(tmp: Path, chunks: int) -> tuple[dict[int, LiveServer], str]:
    """A seeded data directory, copied; a 1-worker and a 2-worker server on the two copies."""
    seeded = tmp / "seeded"
    build_memory(seeded, chunks)
    seeder = LiveServer(seeded, workers=1, env={"STARPOD_API_KEY": ADMIN_KEY}).start()
    try:
        session_id = seed_sessions(seeded)
    finally:
        seeder.stop()
    servers = {}
    for count in (1, 2):
        home = tmp / f"workers-{count}"
        shutil.copytree(seeded, home, ignore=shutil.ignore_patterns("run"))  # run/: the seeder's runtime state
        servers[count] = LiveServer(home, workers=count, env={"STARPOD_API_KEY": ADMIN_KEY}).start()
    return servers, session_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--reconnect", type=int, default=200, help="requests per connection before a new one")
    parser.add_argument("--chunks", type=int, default=20_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        servers, session_id = start_servers(Path(tmp), args.chunks)
        requests = mixed_requests(session_id)
        figures = {count: [] for count in servers}
        try:
            for server in servers.values():
                for worker in psutil.Process(server.process.pid).children():
                    wait_until_idle(worker)
                measure(server, requests, argparse.Namespace(**{**vars(args), "seconds": 1.0}))  # warm-up
            for round_no in range(1, args.rounds + 1):
                order = list(servers.items())
                random.Random(round_no).shuffle(order)
                for count, server in order:
                    result = measure(server, requests, args)
                    figures[count].append(result)
                    print(f"round {round_no} {count} worker(s): {result['rps']:7.0f} req/s  errors {result['errors']}"
                          f"  workers {result['worker_cores']:.2f} cores ({result['worker_us']:.0f} us/req)"
                          f"  client {result['client_cores']:.2f} cores ({result['client_us']:.0f} us/req)")
        finally:
            for server in servers.values():
                server.stop()
    mean = {count: {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} for count, rows in figures.items()}
    print(f"\nmixed read load, {args.connections} keep-alive connections, {args.rounds} x {args.seconds:.0f} s rounds,"
          f" {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for count, row in mean.items():
        print(f"{count} worker(s): {row['rps']:7.0f} req/s   workers {row['worker_cores']:.2f} cores"
              f" ({row['worker_us']:.0f} us CPU/req)   client {row['client_cores']:.2f} cores"
              f" ({row['client_us']:.0f} us CPU/req)")
    ratio = mean[2]["rps"] / mean[1]["rps"]
    print(f"throughput 2 workers / 1 worker       {ratio:5.2f}x  goal >= {GOAL:.2f}  "
          f"{'ok' if round(ratio, 2) >= GOAL else 'MISSED'}")
    # What the second core bought: 2 workers' CPU per request against 1 worker's (1.00 = no
    # contention between workers), and how many cores the workers actually got.
    cost_ratio = mean[2]["worker_us"] / mean[1]["worker_us"]
    print(f"worker CPU per request, 2 vs 1        {cost_ratio:5.2f}x  (1.00: the workers do not slow each other;"
          f" busiest of the 2 workers did {100 * mean[2]['busiest_share']:.0f} % of the work)")
    print(f"cores the workers got                 {mean[1]['worker_cores']:.2f} with 1 worker,"
          f" {mean[2]['worker_cores']:.2f} of {os.cpu_count()} with 2 (the client took {mean[2]['client_cores']:.2f})")
    # Not a measurement: what the ratio would be if 2 workers had every core the client leaves.
    print(f"projected, workers owning the cores   {(os.cpu_count() - mean[2]['client_cores']) / cost_ratio:5.2f}x"
          f"  (= ({os.cpu_count()} - client cores) / CPU-per-request ratio)")


if __name__ == "__main__":
    main()
