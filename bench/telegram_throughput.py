"""Benchmark: Telegram channel throughput and the latency it adds over the provider's time.

A real gunicorn server (gevent workers, long polling) talks to the fake Bot API and the fake LLM
provider from tests/, which answers at once.  50 linked users send 500 updates in one burst
(10 each): replies per second over the whole burst.  Then single messages one at a time: added
latency = update queued → reply received, minus the time the provider spent answering.

    python bench/telegram_throughput.py [--updates 500] [--users 50] [--workers 2]
                                                       [--mode polling|webhook]

In webhook mode the updates are posted to `POST /api/telegram/webhook` by 8 client threads, so
every worker handles a share of them.
"""
from __future__ import annotations

import argparse
import re
import statistics
from concurrent.futures import ThreadPoolExecutor
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_provider import FakeProvider, Reply  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402
from tests.support import live_server  # noqa: E402

API_KEY = "sp_live_" + "cd" * 20
FIRST_TELEGRAM_ID = 700_000
SEQUENTIAL_MESSAGES = 100
WEBHOOK_SECRET = "bench-secret"
WEBHOOK_CLIENTS = 8
TIMEOUT_SECS = 600


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


def echo(recorded) -> Reply:
    text = "".join(b.get("text", "") for b in recorded.body["messages"][-1]["content"] if isinstance(b, dict))
    return Reply(f"echo: {text}")


def link_users(server, count: int) -> list[int]:
    http = requests.Session()
    http.headers["X-API-Key"] = API_KEY
    ids = []
    for index in range(count):
        user = http.post(f"{server.base_url}/api/settings/auth/users", json={"display_name": f"u{index}"}).json()
        telegram_id = FIRST_TELEGRAM_ID + index
        http.put(f"{server.base_url}/api/settings/auth/users/{user['id']}/telegram",
                 json={"telegram_id": telegram_id}).raise_for_status()
        ids.append(telegram_id)
    return ids


def wait_for_replies(tg: FakeTelegram, expected: int) -> None:
    deadline = time.monotonic() + TIMEOUT_SECS
    while len(tg.sent) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(tg.sent)} of {expected} replies arrived")
        time.sleep(0.01)


class Delivery:
    """How updates reach the server: queued for getUpdates, or posted to the webhook."""

    def __init__(self, tg: FakeTelegram, server, mode: str):
        self.tg, self.mode = tg, mode
        self.url = f"{server.base_url}/api/telegram/webhook"
        self.http = requests.Session()
        self.http.headers["X-Telegram-Bot-Api-Secret-Token"] = WEBHOOK_SECRET
        self.pool = ThreadPoolExecutor(WEBHOOK_CLIENTS)

    def send(self, sender: int, text: str) -> None:
        update = self.tg.make_update(sender, text)
        if self.mode == "polling":
            self.tg.push(update)
        else:
            self.pool.submit(lambda: self.http.post(self.url, json=update, timeout=30).raise_for_status())


def burst(tg: FakeTelegram, delivery: Delivery, senders: list[int], updates: int) -> tuple[float, list[float]]:
    """(replies per second, per-message latency in ms) for `updates` sent at once."""
    start_count = len(tg.sent)
    queued_at = {}
    started = time.perf_counter()
    for index in range(updates):
        text = f"burst {index}"
        queued_at[f"echo: {text}"] = time.perf_counter()
        delivery.send(senders[index % len(senders)], text)
    wait_for_replies(tg, start_count + updates)
    replies = tg.sent[start_count:]
    elapsed = max(r.sent_at for r in replies) - started
    # Webhook deliveries of one chat may share a model turn ("echo: burst 3burst 53"): such a reply
    # counts from the earliest message it answers.
    latencies = [(r.sent_at - min(queued_at[f"echo: burst {n}"] for n in re.findall(r"burst (\d+)", r.text))) * 1000
                 for r in replies]
    return updates / elapsed, latencies


def added_latency(tg: FakeTelegram, delivery: Delivery, fake: FakeProvider, sender: int, count: int) -> list[float]:
    """Milliseconds each message spent outside the provider, one message in flight at a time."""
    added = []
    for index in range(count):
        text = f"single {index}"
        before = len(tg.sent)
        queued = time.perf_counter()
        delivery.send(sender, text)
        wait_for_replies(tg, before + 1)
        provider = next(r.provider_seconds for r in reversed(fake.requests)
                        if text in str(r.body["messages"][-1]["content"]))
        added.append((tg.sent[before].sent_at - queued - provider) * 1000)
    return added


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=("polling", "webhook"), default="polling")
    args = parser.parse_args()

    fake = FakeProvider().start()
    fake.default = echo
    tg = FakeTelegram().start()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**fake.environ(), **tg.environ(TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET), "STARPOD_API_KEY": API_KEY}
        with live_server(Path(tmp) / ".starpod", workers=args.workers, env=env) as server:
            senders = link_users(server, args.users)
            requests.put(f"{server.base_url}/api/settings/channels", headers={"X-API-Key": API_KEY},
                         json={"telegram": {"enabled": True, "mode": args.mode}}).raise_for_status()
            delivery = Delivery(tg, server, args.mode)
            for sender in senders:  # warm up: poller, SDK clients, memory index, one session per user
                delivery.send(sender, "warm up")
            wait_for_replies(tg, len(senders))
            rate, burst_latencies = burst(tg, delivery, senders, args.updates)
            added = added_latency(tg, delivery, fake, senders[0], SEQUENTIAL_MESSAGES)
    tg.stop()
    fake.stop()

    print(f"{args.updates} updates from {args.users} linked users, {args.workers} workers, {args.mode} mode")
    print(f"{'measure':<52}{'median':>10}{'p90':>10}")
    print(f"{'burst throughput (replies/s)':<52}{rate:>10.1f}{'':>10}")
    print(f"{'burst: update queued -> reply (ms, incl. queueing)':<52}{statistics.median(burst_latencies):>10.1f}"
          f"{percentile(burst_latencies, 0.9):>10.1f}")
    print(f"{'one at a time: added latency over provider (ms)':<52}{statistics.median(added):>10.1f}"
          f"{percentile(added, 0.9):>10.1f}")


if __name__ == "__main__":
    main()
