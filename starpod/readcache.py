"""Per-process caches of read results over the SQLite database, exact across processes.

SQLite's `PRAGMA data_version` changes whenever another connection, of any process, commits to
the database file (it is how SQLite itself tells a connection that its cache went stale).  Each
process keeps one connection that never writes, only to ask it (a few µs); a result is cached
under the version read *before* it was computed, so it is served only while nothing at all was
committed since, whoever committed it.  PostgreSQL has no such cheap and exact signal (several
servers share it), so there every lookup computes afresh.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from typing import Callable, Hashable, Sized, TypeVar

from .authcache import LruMap
from .db import database, is_postgresql
from .lockwait import retry_while_locked

T = TypeVar("T", bound=Sized)


class DataVersion:
    """`PRAGMA data_version` of the shared SQLite database, on a connection of this process's own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: tuple | None = None  # (database object, pid) the connection was opened for
        self._conn: sqlite3.Connection | None = None
        self._epoch = 0  # one per connection: versions of two connections never compare equal

    def current(self) -> tuple | None:
        """An opaque version that differs after any commit to the database; None on PostgreSQL
        and inside a transaction (what it reads may never be committed)."""
        target = database.obj
        if target is None or is_postgresql(target) or target.in_transaction():
            return None
        with self._lock:
            owner = (target, os.getpid())
            if owner != self._owner:
                self._reopen(target.database, owner)
            conn = self._conn
            return self._epoch, retry_while_locked(lambda: conn.execute("PRAGMA data_version").fetchone()[0])

    def _reopen(self, path: str, owner: tuple) -> None:
        if self._conn is not None and self._owner[1] == owner[1]:  # a forked child leaves the parent's alone
            self._conn.close()
        self._conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        self._owner = owner
        self._epoch += 1


class ReadCache:
    """Values computed from the database, each kept until the next commit to it: at most
    `max_entries` (least recently used go first), none longer than `max_length` (`len`)."""

    def __init__(self, max_entries: int, max_length: int):
        self.version = DataVersion()
        self.max_length = max_length
        self._entries = LruMap(max_entries)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value of `compute()` for `key` as of the database's current state; `compute` runs
        only when nothing is cached for `key` since the last commit.  Exceptions are not cached."""
        version = self.version.current()
        if version is None:
            return compute()
        entry_key = (key, version)
        value = self._entries.get(entry_key)
        if value is None:
            value = compute()
            if len(value) <= self.max_length:
                self._entries.put(entry_key, value)
        return value
