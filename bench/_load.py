"""Shared pieces of the benchmarks: a keep-alive HTTP load generator in worker processes."""
from __future__ import annotations

import http.client
import multiprocessing
import statistics
import time


def _client_loop(port: int, paths: list[str], headers: dict, seconds: float, result_queue) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    count, errors, latencies = 0, 0, []
    deadline = time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        if started >= deadline:
            break
        connection.request("GET", paths[(count + errors) % len(paths)], headers=headers)
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status == 200:
            count += 1
        else:
            errors += 1
    connection.close()
    result_queue.put((count, errors, latencies))


def measure(port: int, path: str | list[str], headers: dict | None = None, seconds: float = 5.0,
            clients: int = 4) -> dict:
    """Requests per second and latency of GET `path` with `clients` keep-alive connections.  Given
    a list of paths, each client goes round it from its own place (spread evenly)."""
    paths = [path] if isinstance(path, str) else path
    queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_client_loop, args=(port, _rotated(paths, client * len(paths) // clients),
                                                                  headers or {}, seconds, queue))
               for client in range(clients)]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    ok = sum(r[0] for r in results)
    latencies = sorted(l for r in results for l in r[2])
    return {"rps": ok / seconds, "errors": sum(r[1] for r in results),
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan")}


def _rotated(items: list, start: int) -> list:
    return items[start:] + items[:start]
