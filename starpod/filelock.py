"""A cross-process exclusive lock on a lock file that keeps gevent workers responsive.

`flock` is polled with LOCK_NB instead of blocking: a blocking call would freeze every greenlet
of a gevent worker, including the one in the same process that holds the lock.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MAX_POLL_SECS = 0.02


class LockTimeout(Exception):
    """The lock was still held by someone else when the timeout ran out."""


@contextmanager
def exclusive(lock_path: Path, timeout: float | None = None, wait: bool = True) -> Iterator[bool]:
    """Hold the lock on `lock_path` (created if missing) for the `with` block.

    Yields True once held; with `wait=False` yields False at once when someone else holds it.
    Raises LockTimeout after `timeout` seconds (None = wait as long as it takes).
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield _acquire(fd, timeout, wait)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, timeout: float | None, wait: bool) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not wait:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout from None
            time.sleep(delay)
            delay = min(delay * 2, MAX_POLL_SECS)
