"""WebSocket load on one gunicorn gevent worker, with the fake provider in its own process.

(a) N idle authenticated connections held open (each proves it is alive by answering a frame);
(b) C concurrent chats streaming D deltas each: total frames/s, frames lost, the delivered
    `text_delta` frames per CPU-second of the server (goal >= 10,000; provider stream parsing,
    storage and fan-out all count), and the added latency between the provider writing a chunk
    and the client receiving its `text_delta` (goal p95 <= 20 ms; every chunk carries a unique
    token; both sides stamp it with the system-wide monotonic clock), run twice:
    "in step" (all chats start together, so their chunks arrive in bursts of C and the last of a
    burst waits for the other C-1: the worst case) and "staggered" (starts spread over one chunk
    interval: the steady state of independent chats).  frames/s is paced by the provider.  The
    machine's cores are shared by the server, the provider and this client, so each run also
    prints the CPU each used, plus that of every other process (load outside the benchmark
    inflates the latency);
(c) the same for chats followed from the *other* of two workers (resume), i.e. through the
    database and the doorbell wake-up.
With `--against TREE` (another checkout, e.g. a detached worktree of the base commit) it runs
instead (b) "in step" on one server of each tree, alternating between them round after round, so
both meet the same load from outside the benchmark: on a shared machine the figures of runs made
one after the other differ by more than most changes do.
Each server is measured once its workers have warmed up (provider SDK imported, start-up objects
frozen out of the garbage collector: startup.py), which is start-up work, not streaming.

    python bench/ws_load.py [--idle 1000] [--chats 200] [--deltas 200] [--delay 0.02]
    python bench/ws_load.py --against ../starpod-base [--rounds 4] [--chats 200]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fake_provider  # noqa: E402
from tests.support import REPO, LiveServer, wait_until  # noqa: E402

TOKEN_WIDTH = 8  # "c123d045" style tokens: one per chunk
DELTAS_PER_CPU_SECOND_GOAL = 10_000
P95_GOAL_MS = 20.0


def token(chat: int, index: int) -> str:
    return f"c{chat:03d}d{index:03d}"


# --- the provider process --------------------------------------------------------------------

def _provider_main(deltas: int, delay: float, ready, commands) -> None:
    emitted: dict[str, float] = {}
    original = fake_provider._is_text_delta

    def stamp(data: dict) -> bool:  # called right after each SSE frame was written and flushed
        is_delta = original(data)
        if is_delta and data.get("type") == "content_block_delta":
            emitted[data["delta"]["text"]] = time.monotonic()
        return is_delta

    fake_provider._is_text_delta = stamp
    fake = fake_provider.FakeProvider().start()

    def answer(recorded):
        chat = int(re.search(r"chat (\d+)", json.dumps(recorded.body["messages"][-1])).group(1))
        text = "".join(token(chat, i) for i in range(deltas))
        return fake_provider.Reply(text, chunks=deltas, chunk_delay=delay)

    fake.default = answer
    ready.send(fake.environ())
    while commands.recv() == "stamps":
        commands.send(dict(emitted))
        emitted.clear()
    fake.stop()


def warmed_up(server: LiveServer, workers: int) -> LiveServer:
    """`server` once each worker has imported its provider SDK in the background (startup.py):
    start-up work that would otherwise count in the first measurement's CPU and latency."""
    wait_until(lambda: server.log_text().count("provider SDK warmed up") >= workers, "the SDK warm-up")
    return server


# --- clients ---------------------------------------------------------------------------------

def connect(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=120, enable_multithread=False)


def hold_idle(url: str, count: int) -> int:
    """Open `count` connections, then count those still answering a frame."""
    sockets = []
    for _ in range(count):
        try:
            sockets.append(connect(url))
        except (OSError, websocket.WebSocketException):
            break
    alive = 0
    for ws in sockets:
        try:
            ws.send("{}")
            if json.loads(ws.recv())["type"] == "error":
                alive += 1
        except (OSError, websocket.WebSocketException):
            pass
    for ws in sockets:
        ws.close()
    return alive


def worker_of(server_pid: int, ws: websocket.WebSocket) -> int | None:
    port = ws.sock.getsockname()[1]
    for worker in psutil.Process(server_pid).children():
        if any(c.raddr and c.raddr.port == port for c in worker.net_connections(kind="tcp")):
            return worker.pid
    return None


def on_other_worker(url: str, server_pid: int, ws: websocket.WebSocket) -> websocket.WebSocket:
    """A second connection that the kernel gave to the other worker."""
    mine = worker_of(server_pid, ws)
    while True:
        other = connect(url)
        if worker_of(server_pid, other) != mine:
            return other
        other.close()


def run_chat(url: str, chat: int, results: list, barrier: threading.Barrier, cross_pid: int | None = None,
             offset: float = 0.0) -> None:
    ws = connect(url)
    follower = on_other_worker(url, cross_pid, ws) if cross_pid else None
    barrier.wait()
    time.sleep(offset)
    ws.send(json.dumps({"type": "message", "text": f"chat {chat}"}))
    frames, received = [], {}
    first = json.loads(ws.recv())
    frames.append(first)
    if follower is not None:  # follow the run from the other worker instead
        ws.close()
        follower.send(json.dumps({"type": "resume", "session_id": first["session_id"], "after_seq": 1}))
        ws = follower
    while frames[-1]["type"] not in ("stream_end", "error"):
        raw = ws.recv()
        now = time.monotonic()
        frame = json.loads(raw)
        frames.append(frame)
        if frame["type"] == "text_delta":
            received[frame["text"]] = now
    ws.close()
    results.append((frames, received, time.monotonic()))


def chats(url: str, count: int, deltas: int, cross_pid: int | None = None, spread: float = 0.0,
          on_start=lambda: None) -> dict:
    """Run `count` chats at once; with `spread`, their starts are spaced evenly over that many seconds."""
    results: list = []
    barrier = threading.Barrier(count + 1)
    threads = [threading.Thread(target=run_chat, args=(url, i, results, barrier, cross_pid, spread * i / count),
                                daemon=True)
               for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    on_start()
    for thread in threads:
        thread.join(600)
    finished = max((r[2] for r in results), default=started)
    frames = sum(len(r[0]) for r in results)
    expected = count * (deltas + 2)
    gaps = sum(1 for r in results if [f.get("seq") for f in r[0]] != list(range(1, len(r[0]) + 1)))
    return {"results": results, "frames": frames, "expected": expected, "seconds": finished - started,
            "seq_gaps": gaps}


def latency_ms(results: list, stamps: dict[str, float]) -> tuple[float, float]:
    added = [received - stamps[text] for _, got, _ in results for text, received in got.items() if text in stamps]
    added.sort()
    if not added:
        return float("nan"), float("nan")
    return statistics.median(added) * 1000, added[int(len(added) * 0.95)] * 1000


class CpuMeter:
    """CPU seconds used by the server workers, the provider, this load client and everything else."""

    def __init__(self, server_pid: int, provider_pid: int):
        self.groups = {"server": psutil.Process(server_pid).children(),
                       "provider": [psutil.Process(provider_pid)], "client": [psutil.Process()]}
        self.start: dict[str, float] = {}

    def begin(self) -> None:
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        used = {name: sum(sum(p.cpu_times()[:2]) for p in procs) for name, procs in self.groups.items()}
        machine = psutil.cpu_times()
        used["other"] = machine.user + machine.system + machine.nice + machine.irq + machine.softirq - sum(used.values())
        return used

    def used(self) -> dict[str, float]:
        """CPU seconds each group used since `begin()`."""
        end = self._sample()
        return {name: end[name] - self.start[name] for name in end}


def report(label: str, outcome: dict, stamps: dict, cpu: dict[str, float] | None = None) -> None:
    """One line of counts and latencies; with the CPU used (`CpuMeter.used`), the share of each
    process group and the delivered deltas per server CPU-second, beside their goals."""
    p50, p95 = latency_ms(outcome["results"], stamps)
    lost = outcome["expected"] - outcome["frames"]
    print(f"{label:<34} frames {outcome['frames']:>6}/{outcome['expected']:<6} lost {lost:<4} "
          f"seq-gaps {outcome['seq_gaps']:<3} {outcome['frames'] / outcome['seconds']:>8.0f} frames/s   "
          f"added latency p50 {p50:6.2f} ms  p95 {p95:7.2f} ms (goal <= {P95_GOAL_MS:.0f})")
    if cpu is None:
        return
    print(f"    CPU (% of one core; {psutil.cpu_count()} cores): "
          + "  ".join(f"{name} {max(used, 0) / outcome['seconds'] * 100:.0f}%" for name, used in cpu.items()))
    delivered = sum(1 for frames, _, _ in outcome["results"] for frame in frames if frame["type"] == "text_delta")
    print(f"    delivered text_delta per server CPU-second: {delivered / cpu['server']:,.0f} "
          f"(goal >= {DELTAS_PER_CPU_SECOND_GOAL:,}; {delivered} deltas, server CPU {cpu['server']:.2f} s)")


def compare(trees: dict[str, Path], args, env: dict, provider, commands, home: Path) -> None:
    """(b) in step on one single-worker server per tree, the trees taking turns (the order flips
    every round); each round's line, then the median of each tree."""
    servers = {name: warmed_up(LiveServer(home / name, workers=1, env=env, tree=tree).start(), 1)
               for name, tree in trees.items()}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    p95s: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for round_index in range(args.rounds):
            for name in (list(trees) if round_index % 2 == 0 else list(trees)[::-1]):
                server = servers[name]
                meter = CpuMeter(server.process.pid, provider.pid)
                outcome = chats(f"{server.ws_url}/ws?token={server.generated_admin_key()}", args.chats, args.deltas,
                                on_start=meter.begin)
                cpu = meter.used()
                commands.send("stamps")
                stamps = commands.recv()
                report(f"round {round_index + 1}, {name}", outcome, stamps, cpu)
                delivered = sum(1 for frames, _, _ in outcome["results"] for f in frames if f["type"] == "text_delta")
                rates[name].append(delivered / cpu["server"])
                p95s[name].append(latency_ms(outcome["results"], stamps)[1])
    finally:
        for server in servers.values():
            server.stop()
    for name, tree in trees.items():
        print(f"{name} ({tree}): median {statistics.median(rates[name]):,.0f} delivered text_delta per server "
              f"CPU-second (goal >= {DELTAS_PER_CPU_SECOND_GOAL:,}), median p95 {statistics.median(p95s[name]):.2f} ms "
              f"(goal <= {P95_GOAL_MS:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between provider chunks")
    parser.add_argument("--resumed", type=int, default=20, help="chats followed from the other worker")
    parser.add_argument("--against", type=Path, help="another checkout: compare (b) in step with it, in turns")
    parser.add_argument("--rounds", type=int, default=4, help="turns of each tree with --against")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it too

    ready, ready_child = multiprocessing.Pipe()
    commands, commands_child = multiprocessing.Pipe()
    provider = multiprocessing.Process(target=_provider_main, args=(args.deltas, args.delay, ready_child, commands_child))
    provider.start()
    env = ready.recv()
    print(f"ws_load: {psutil.cpu_count()} CPUs, nofile {hard}, provider chunk every {args.delay * 1000:.0f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        if args.against is not None:
            compare({"this tree": REPO, "other": args.against.resolve()}, args, env, provider, commands, Path(tmp))
            commands.send("stop")
            provider.join(10)
            return
        server = warmed_up(LiveServer(Path(tmp) / "one", workers=1, env=env).start(), 1)
        try:
            url = f"{server.ws_url}/ws?token={server.generated_admin_key()}"
            started = time.monotonic()
            held = hold_idle(url, args.idle)
            print(f"(a) idle connections held: {held}/{args.idle}  (opened and checked in "
                  f"{time.monotonic() - started:.1f} s)")
            for label, spread in (("in step", 0.0), ("staggered", args.delay)):
                meter = CpuMeter(server.process.pid, provider.pid)
                outcome = chats(url, args.chats, args.deltas, spread=spread, on_start=meter.begin)
                cpu = meter.used()
                commands.send("stamps")
                report(f"(b) {args.chats} chats x {args.deltas} deltas, {label}", outcome, commands.recv(), cpu)
        finally:
            server.stop()

        server = warmed_up(LiveServer(Path(tmp) / "two", workers=2, env=env).start(), 2)
        try:
            base = f"{server.ws_url}/ws?token={server.generated_admin_key()}"
            outcome = chats(base, args.resumed, args.deltas, cross_pid=server.process.pid)
            commands.send("stamps")
            report(f"(c) {args.resumed} chats resumed, 2 workers", outcome, commands.recv())
        finally:
            server.stop()
    commands.send("stop")
    provider.join(10)


if __name__ == "__main__":
    main()
