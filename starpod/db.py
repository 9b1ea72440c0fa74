"""The one Peewee database every part of Starpod shares: SQLite under `<home>/db/`, WAL mode.

`database` is a proxy bound at start-up by `open_database`.  Connections are pooled and local to
the running thread or greenlet; web requests close theirs at teardown, background work wraps
itself in `database.connection_context()`.
"""
from __future__ import annotations

from pathlib import Path

from peewee import DatabaseProxy, _ConnectionState
from playhouse.pool import PooledSqliteDatabase

database = DatabaseProxy()

PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10000,
    "foreign_keys": 1,
    "synchronous": "normal",
    "cache_size": -16000,
}


def open_database(path: Path) -> PooledSqliteDatabase:
    """Bind the shared proxy to the SQLite file at `path` and return the concrete database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    concrete = PooledSqliteDatabase(
        str(path),
        pragmas=PRAGMAS,
        max_connections=256,
        stale_timeout=300,
        timeout=30,
        check_same_thread=False,
    )
    _per_greenlet_state(concrete)
    database.initialize(concrete)
    return concrete


def _per_greenlet_state(db: PooledSqliteDatabase) -> None:
    """Give every greenlet its own connection and transaction stack.

    peewee keeps them in a `threading.local` subclass bound when peewee is imported; the gunicorn
    master imports it before a gevent worker patches threading, so without this all greenlets of
    a worker would share one connection state (one greenlet's close would end another's work).
    """
    from gevent import monkey
    if monkey.is_module_patched("threading"):
        from gevent.local import local

        class GreenletConnectionState(_ConnectionState, local):
            pass

        db._state = GreenletConnectionState()


def close_connection(_exc=None) -> None:
    """Return this thread's/greenlet's connection to the pool, if it has one."""
    if database.obj is not None and not database.is_closed():
        database.close()
