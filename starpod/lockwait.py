"""Waiting for a SQLite lock without freezing the gevent worker.

SQLite's own busy handler (`busy_timeout`) sleeps inside C: while one greenlet waits for another
process's write lock, every other greenlet of the worker stands still.  Connections therefore run
with a busy timeout of 0 and callers retry the locked operation here, sleeping with `time.sleep`
(gevent's cooperative sleep once the worker is monkey-patched) under exponential backoff, until a
total deadline.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

LOCK_WAIT_SECS = 30.0
REPORT_AFTER_SECS = 1.0  # a wait this long is worth a warning: something holds the lock too long
FIRST_DELAY_SECS = 0.002
MAX_DELAY_SECS = 0.1
LOCK_MESSAGES = ("database is locked", "database is busy")

T = TypeVar("T")


def is_lock_error(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's SQLITE_BUSY ("database is locked"), raw or wrapped by peewee."""
    message = str(exc).lower()
    return any(text in message for text in LOCK_MESSAGES)


def retry_while_locked(operation: Callable[[], T], deadline_secs: float = LOCK_WAIT_SECS) -> T:
    """Run `operation` until it does not fail with a lock error; re-raise that error at the deadline.

    `operation` must be safe to repeat after SQLITE_BUSY (a connect, a BEGIN, one autocommit
    statement): SQLite has changed nothing when it reports BUSY for those.
    """
    started = time.monotonic()
    deadline = started + deadline_secs
    delay = FIRST_DELAY_SECS
    reported = False
    while True:
        try:
            return operation()
        except Exception as exc:
            if not is_lock_error(exc) or time.monotonic() + delay > deadline:
                raise
        waited = time.monotonic() - started
        if waited >= REPORT_AFTER_SECS and not reported:
            log.warning("still waiting for a database lock after %.1f s", waited)
            reported = True
        time.sleep(delay * random.uniform(0.5, 1.0))  # jitter: waiters of several processes spread out
        delay = min(delay * 2, MAX_DELAY_SECS)
