"""Per-user sliding-window rate limiting that holds across every worker process.

The window log lives in the shared database (`rate_limit_hits`), so all gunicorn workers count
against one budget; a row stands for `hits` admitted requests at time `at` (µs).  Rejected
requests are not recorded (exactly `max_requests` per window pass).

Near the limit every request is one write transaction: drop the user's expired rows, sum the
window, record the hit.  Far from it (the remaining budget holds at least 2 × LEASE_SHARE
requests) that same transaction instead reserves a *lease* of up to LEASE_MAX requests for this
worker, recorded as one row at the lease's end time, and the worker admits from it in memory until
it is used up or LEASE_SECS passed.  The worker's next trip to the database settles the lease:
the row keeps only the requests it admitted, at the time of the last one.  Every admitted request
is thus covered by a row whose `at` is no earlier than the request, so no request leaves the
window early and no window ever admits more than `max_requests`, whichever workers admitted them.
A lease only ever errs towards refusing, and only by its unused part while it is unsettled: each
lease takes at most 1/LEASE_SHARE of what remained, and none is taken close to the limit.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from functools import cache

from .db import database, insert_returning_id, placeholders, write_transaction
from .models import RateLimitHit

LEASE_SECS = 1.0
LEASE_MAX = 100
LEASE_SHARE = 16


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # whole seconds until the oldest hit leaves the window


ALLOWED = Verdict(True)


@dataclass
class _Lease:
    """Requests this worker reserved for one user, admitted in memory."""
    database_name: str
    row_id: int
    size: int
    ends_us: int
    terms: tuple[int, int]  # (max_requests, window_us) it was reserved under
    used: int
    last_us: int

    def take(self, now_us: int, terms: tuple[int, int]) -> bool:
        if not self.usable(now_us) or terms != self.terms or now_us < self.last_us:
            return False
        self.used += 1
        self.last_us = now_us
        return True

    def usable(self, now_us: int) -> bool:
        return self.used < self.size and now_us < self.ends_us


_leases: dict[tuple[str, str], _Lease] = {}  # (database, user id) → the lease admitting now
_retired: list[_Lease] = []  # leases that no longer admit, still to settle
_lock = threading.Lock()


def _forget_leases() -> None:
    """A forked child admits nothing from its parent's leases (the parent still holds them)."""
    _leases.clear()
    _retired.clear()


os.register_at_fork(after_in_child=_forget_leases)


@cache
def _statements() -> dict[str, str]:
    table = f'"{RateLimitHit._meta.table_name}"'
    return {
        "expire": f"DELETE FROM {table} WHERE user_id = ? AND at <= ?",
        "window": f"SELECT COALESCE(SUM(hits), 0), MIN(at) FROM {table} WHERE user_id = ?",
        "record": f"INSERT INTO {table} (user_id, at, hits) VALUES (?, ?, ?)",
        "settle": f"UPDATE {table} SET hits = ?, at = ? WHERE id = ?",
    }


def _execute(name: str, params: tuple):
    return database.execute_sql(placeholders(_statements()[name]), params)


def _now_us() -> int:
    return time.time_ns() // 1000


def check(user_id: str, max_requests: int, window_secs: float, now_us: int | None = None) -> Verdict:
    """Record and allow a request, or reject it when the user's window is full."""
    if max_requests <= 0:
        return ALLOWED
    now_us = _now_us() if now_us is None else now_us
    terms = (max_requests, int(window_secs * 1_000_000))
    key = (database.database, user_id)
    with _lock:
        lease = _leases.get(key)
        if lease is not None and lease.take(now_us, terms):
            return ALLOWED
        unsettled = _retire(key, now_us)
    with write_transaction(f"rate_limit:{user_id}"):
        for lease in unsettled:
            _execute("settle", (lease.used, lease.last_us, lease.row_id))
        verdict, lease = _admit(user_id, terms, now_us)
    if lease is not None:
        with _lock:
            replaced = _leases.get(key)
            if replaced is not None:  # another greenlet of this worker reserved meanwhile
                _retired.append(replaced)
            _leases[key] = lease
    return verdict


def _retire(key: tuple[str, str], now_us: int) -> list[_Lease]:
    """Under the lock: take out `key`'s lease and every spent one; returns those of this database."""
    for lease_key, lease in list(_leases.items()):
        if lease_key == key or not lease.usable(now_us):
            _retired.append(_leases.pop(lease_key))
    ours = [lease for lease in _retired if lease.database_name == key[0]]
    _retired[:] = [lease for lease in _retired if lease.database_name != key[0]]
    return ours


def _admit(user_id: str, terms: tuple[int, int], now_us: int) -> tuple[Verdict, _Lease | None]:
    """Inside the transaction: refuse, record one hit, or reserve a lease that admits this request."""
    max_requests, window_us = terms
    _execute("expire", (user_id, now_us - window_us))
    taken, oldest = _execute("window", (user_id,)).fetchone()
    taken = int(taken)  # PostgreSQL sums are NUMERIC
    if taken >= max_requests:
        wait_us = oldest + window_us - now_us
        return Verdict(False, max(1, math.ceil(wait_us / 1_000_000))), None
    size = min(LEASE_MAX, (max_requests - taken) // LEASE_SHARE)
    if size < 2:
        _execute("record", (user_id, now_us, 1))
        return Verdict(True), None
    ends_us = now_us + int(LEASE_SECS * 1_000_000)
    row_id = insert_returning_id(_statements()["record"], (user_id, ends_us, size))
    return Verdict(True), _Lease(database.database, row_id, size, ends_us, terms, used=1, last_us=now_us)
