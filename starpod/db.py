"""The one Peewee database every part of Starpod shares: SQLite under `<home>/db/`, WAL mode.

`database` is a proxy bound at start-up by `open_database`.  Connections are pooled and local to
the running thread or greenlet; web requests close theirs at teardown, background work wraps
itself in `database.connection_context()`.

Waiting for another process's lock never blocks a gevent worker: SQLite's busy timeout is 0 and
connects, BEGINs and autocommit statements are retried cooperatively (see lockwait).  Explicit
transactions are BEGIN IMMEDIATE, so a transaction takes the write lock (waiting cooperatively)
up front instead of failing half-way when it first writes.
"""
from __future__ import annotations

from pathlib import Path

from peewee import DatabaseProxy
from playhouse.pool import PooledSqliteDatabase

from .lockwait import retry_while_locked

database = DatabaseProxy()

PRAGMAS = {
    "busy_timeout": 0,  # first: no pragma after it may sleep in C
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",
    "cache_size": -16000,
}


class CooperativeSqliteDatabase(PooledSqliteDatabase):
    """Pooled SQLite whose lock waits yield to other greenlets instead of sleeping in C."""

    def init(self, database, **kwargs):
        super().init(database, **kwargs)
        self._timeout = 0  # sqlite3.connect's own busy handler, in force until the pragmas run

    def connect(self, reuse_if_open=False):
        connect = super().connect
        return retry_while_locked(lambda: connect(reuse_if_open))

    def begin(self, lock_type=None):
        begin = super().begin
        retry_while_locked(lambda: begin(lock_type))

    def execute_sql(self, sql, params=None):
        execute = super().execute_sql
        if self.in_transaction():  # the transaction already holds the write lock
            return execute(sql, params)
        return retry_while_locked(lambda: execute(sql, params))


def open_database(path: Path) -> CooperativeSqliteDatabase:
    """Bind the shared proxy to the SQLite file at `path` and return the concrete database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    concrete = CooperativeSqliteDatabase(
        str(path),
        pragmas=PRAGMAS,
        lock_type="IMMEDIATE",
        max_connections=256,
        stale_timeout=300,
        timeout=30,  # waiting for a free pooled connection
        check_same_thread=False,
    )
    database.initialize(concrete)
    return concrete


def close_connection(_exc=None) -> None:
    """Return this thread's/greenlet's connection to the pool, if it has one."""
    if database.obj is not None and not database.is_closed():
        database.close()


def require_greenlet_local_state() -> None:
    """Refuse to run a gevent worker whose connection state is a real thread-local.

    That happens when peewee was imported before gevent patched `threading`: every greenlet of
    the worker would then share one connection and transaction stack.
    """
    from gevent import monkey

    if isinstance(database.obj._state, monkey.get_original("_thread", "_local")):
        raise RuntimeError("peewee's connection state is shared by every greenlet of this worker: "
                           "gevent must monkey-patch before starpod or peewee is imported "
                           "(see gunicorn.conf.py)")
