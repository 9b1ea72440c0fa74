"""Mutual exclusion among every worker of every server: one abstraction, chosen by the engine.

`exclusive(name, lock_path)` holds the lock called `name` for a `with` block:
- SQLite (one machine): an `flock` on the lock file `lock_path` (see filelock).
- PostgreSQL (possibly several servers): a session-level advisory lock on `name`, taken on a
  connection opened for the lock's life and closed to release it.  The pool is never used: a
  pooled connection handed back while still holding the lock would pass it to its next user, and
  a session lock is re-entrant within its connection, so two greenlets sharing one would not
  exclude each other.  A server that dies loses its connections, and PostgreSQL frees its locks.

Both wait cooperatively under gevent and keep one contract: yields True once held; with
`wait=False` yields False at once when someone else holds it; raises `LockTimeout` after
`timeout` seconds (None = as long as it takes).  `name` must be the same on every server (so never
an absolute path: the shared volume may be mounted at different places); `lock_name` builds one
from a path inside the data directory.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator

from .db import dedicated_connection, is_postgresql
from .filelock import LockTimeout
from .filelock import exclusive as file_exclusive

if TYPE_CHECKING:
    import psycopg

KEY_SQL = "hashtextextended(%s, 0)"
NAMESPACE = "exclusive:"  # keeps these names apart from write_transaction's resource names


def lock_name(home: Path, path: Path) -> str:
    """The name of the lock guarding `path` inside data directory `home`: the same on every server."""
    return f"file:{Path(path).resolve().relative_to(Path(home).resolve()).as_posix()}"


def exclusive(name: str, lock_path: Path, timeout: float | None = None,
              wait: bool = True) -> ContextManager[bool]:
    """The lock `name`: an advisory lock on PostgreSQL, else an `flock` on `lock_path`."""
    if is_postgresql():
        return advisory_lock(name, dedicated_connection, timeout, wait)
    return file_exclusive(lock_path, timeout, wait)


@contextmanager
def advisory_lock(name: str, connect: Callable[[], "psycopg.Connection"], timeout: float | None = None,
                  wait: bool = True) -> Iterator[bool]:
    """The session-level advisory lock `name`, on a connection from `connect` closed afterwards."""
    connection = connect()
    try:
        yield _acquire(connection, NAMESPACE + name, timeout, wait)
    finally:
        connection.close()  # ends the session, which releases its advisory locks


def _acquire(connection: "psycopg.Connection", key: str, timeout: float | None, wait: bool) -> bool:
    from psycopg.errors import LockNotAvailable  # late, like every psycopg import: after gevent patched

    if not wait:
        return connection.execute(f"SELECT pg_try_advisory_lock({KEY_SQL})", (key,)).fetchone()[0]
    if timeout is not None:  # 0 would mean "no limit" to PostgreSQL
        connection.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, round(timeout * 1000))}ms",))
    try:
        connection.execute(f"SELECT pg_advisory_lock({KEY_SQL})", (key,))
    except LockNotAvailable:
        raise LockTimeout from None
    return True
