"""The one Peewee database every part of Starpod shares.

`DATABASE_URL` chooses the engine: unset means SQLite under `<home>/db/` (WAL mode, the embedded
default); `postgresql://…` (or the `postgres://` alias) means PostgreSQL through psycopg 3, which
yields to other greenlets while it waits on the server when gevent has patched the process.

`database` is a proxy bound at start-up by `open_database`.  Connections are pooled and local to
the running thread or greenlet; web requests close theirs at teardown, background work wraps
itself in `database.connection_context()`.

Waiting for another process's SQLite lock never blocks a gevent worker: SQLite's busy timeout is
0 and connects, BEGINs and autocommit statements are retried cooperatively (see lockwait).
Explicit SQLite transactions are BEGIN IMMEDIATE, so a transaction takes the write lock (waiting
cooperatively) up front instead of failing half-way when it first writes.  Under gevent, WAL
checkpoints run in a native thread, not in the committing call (see walcheckpoint).

Statements are written with `?` placeholders and passed through `placeholders()`; transactions
that read and then write take `write_transaction(<resource>…)`, which serialises writers of the
same resources on either engine.
"""
from __future__ import annotations

import functools
import os
import selectors
import sys
import threading
from pathlib import Path

import peewee
from peewee import DatabaseProxy
from playhouse.db_url import parse as parse_url
from playhouse.pool import PooledSqliteDatabase
from playhouse.postgres_ext import PooledPsycopg3Database

from .concurrency import readable_now
from .lockwait import retry_while_locked
from .walcheckpoint import Checkpointer, disable_automatic

database = DatabaseProxy()

PRAGMAS = {
    "busy_timeout": 0,  # first: no pragma after it may sleep in C
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",
    "cache_size": -16000,
}

POSTGRES_SCHEMES = ("postgresql", "postgres")
SQLITE_LOCK_TYPES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")
MAX_CONNECTIONS_ENV = "STARPOD_DB_MAX_CONNECTIONS"
DEFAULT_PG_MAX_CONNECTIONS = 20  # per process; PostgreSQL's own default limit is 100 in all
POOL_WAIT_SECS = 30  # how long a greenlet waits for a free pooled connection before failing
STALE_SECS = 300


def open_database(path: Path, url: str | None = None):
    """Bind the shared proxy to PostgreSQL at `url` when given, else to the SQLite file at `path`."""
    concrete = open_postgresql(url) if url else open_sqlite(path)
    database.initialize(concrete)
    return concrete


class CooperativeSqliteDatabase(PooledSqliteDatabase):
    """Pooled SQLite whose lock waits yield to other greenlets instead of sleeping in C, and whose
    WAL checkpoints run in a native thread under gevent (walcheckpoint)."""

    def init(self, database, **kwargs):
        super().init(database, **kwargs)
        self._timeout = 0  # sqlite3.connect's own busy handler, in force until the pragmas run
        self.checkpoints = Checkpointer(database)

    def _add_conn_hooks(self, conn):
        super()._add_conn_hooks(conn)
        disable_automatic(conn)

    def connect(self, reuse_if_open=False):
        connect = super().connect
        return retry_while_locked(lambda: connect(reuse_if_open))

    def begin(self, lock_type=None):
        begin = super().begin
        retry_while_locked(lambda: begin(lock_type))

    def commit(self):
        super().commit()
        self.checkpoints.wrote()

    def execute_sql(self, sql, params=None):
        execute = super().execute_sql
        if self.in_transaction():  # the transaction already holds the write lock
            return execute(sql, params)
        cursor = retry_while_locked(lambda: execute(sql, params))
        self.checkpoints.wrote()  # an autocommit statement
        return cursor


def open_sqlite(path: Path) -> CooperativeSqliteDatabase:
    """A pooled SQLite database over the file at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return CooperativeSqliteDatabase(
        str(path),
        pragmas=PRAGMAS,
        lock_type="IMMEDIATE",
        max_connections=256,
        stale_timeout=STALE_SECS,
        timeout=POOL_WAIT_SECS,
        check_same_thread=False,
    )


def max_pg_connections(environ=os.environ) -> int:
    """The pool bound per process: `STARPOD_DB_MAX_CONNECTIONS`, default 20."""
    raw = environ.get(MAX_CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_PG_MAX_CONNECTIONS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_CONNECTIONS_ENV} must be a positive integer, not {raw!r}")
    return int(raw)


def is_postgresql_url(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0].lower() in POSTGRES_SCHEMES


class StarpodPostgresqlDatabase(PooledPsycopg3Database):
    """Pooled psycopg 3 PostgreSQL whose column types hold what SQLite's do: 64-bit integers and
    double-precision floats (PostgreSQL's defaults for them, INTEGER and REAL, are narrower and
    would round epoch seconds), so the same models mean the same data on both engines."""
    field_types = {**PooledPsycopg3Database.field_types,
                   "AUTO": "BIGSERIAL", "INT": "BIGINT", "FLOAT": "DOUBLE PRECISION"}

    def _is_closed(self, conn) -> bool:
        """Whether a pooled connection is unusable, told without the `SELECT 1` round trip peewee
        sends on every checkout (a tenth of a chat's statements): an idle connection has nothing
        to read, so a readable one is being closed by the server (its FATAL error, end of stream)
        and is discarded; one not idle is left to peewee."""
        from psycopg.pq import TransactionStatus

        if conn.closed or conn.broken:
            return True
        if conn.info.transaction_status != TransactionStatus.IDLE:
            return super()._is_closed(conn)  # rolls an unfinished transaction back, or finds it dead
        return readable_now(conn.fileno())

    def begin(self, isolation_level=None):
        if isinstance(isolation_level, str) and isolation_level.upper() in SQLITE_LOCK_TYPES:
            raise TypeError(f'atomic("{isolation_level}") is SQLite only: use '
                            'starpod.db.write_transaction(<resource>) for a read-then-write transaction')
        return super().begin(isolation_level)


def open_postgresql(url: str, max_connections: int | None = None) -> StarpodPostgresqlDatabase:
    """A bounded pool of psycopg 3 connections to the PostgreSQL database named by `url`."""
    if not is_postgresql_url(url):
        raise ValueError("DATABASE_URL must start with postgresql:// or postgres:// (unset it for SQLite)")
    _cooperate_with_gevent()
    params = parse_url(url, unquote_password=True, unquote_user=True)
    name = params.pop("database", None)
    if not name:
        raise ValueError("DATABASE_URL names no database (postgresql://user@host:port/NAME)")
    concrete = StarpodPostgresqlDatabase(
        name,
        max_connections=max_connections or max_pg_connections(),
        stale_timeout=STALE_SECS,
        timeout=POOL_WAIT_SECS,
        context=_nul_free_text(),
        **params,
    )
    concrete._state = _connection_state()
    return concrete


def _nul_free_text():
    """psycopg's adapters, except that a NUL in a string parameter is sent as U+FFFD (as the memory
    index stores it): PostgreSQL text cannot hold NUL, so a lookup by a string holding one finds
    nothing, and a text holding one is stored, as on SQLite, instead of failing the query."""
    from psycopg import adapters
    from psycopg.adapt import AdaptersMap
    from psycopg.types.string import StrDumperUnknown

    class NulFreeStrDumper(StrDumperUnknown):
        def dump(self, obj: str):
            return super().dump(obj.replace("\x00", "\ufffd"))

    nul_free = AdaptersMap(adapters)
    nul_free.register_dumper(str, NulFreeStrDumper)
    return nul_free


def _connection_state():
    """Peewee's per-thread connection state, built on `threading.local` as it is *now*.

    Peewee's own class subclasses the `threading.local` of import time; imported in gunicorn's
    master, that is a real thread-local even in a gevent worker, and every greenlet of the worker
    would share one connection (interleaving their transactions).  Once gevent has patched
    threading, this class is greenlet-local.
    """
    local_class = type("_ConnectionLocal", (peewee._ConnectionState, threading.local), {})
    return local_class()


def _cooperate_with_gevent() -> None:
    """Make psycopg wait for the server through gevent when gevent has patched this process.

    psycopg picks its wait functions when first imported.  gunicorn's master imports it (via
    peewee) before a gevent worker patches `select`, so the worker would keep the C wait, which
    blocks every greenlet of the worker for as long as a query runs.  Pick again once patched.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("select"):
        return
    from psycopg import waiting
    waiting.wait = waiting.wait_poll  # looks up select.poll at call time: gevent's
    waiting.DefaultSelector = selectors.DefaultSelector  # used by connect; bound at import


def is_postgresql(db=None) -> bool:
    """Whether `db` (default: the shared database) is PostgreSQL."""
    target = database.obj if db is None else db
    if isinstance(target, DatabaseProxy):
        target = target.obj
    return isinstance(target, PooledPsycopg3Database)


@functools.lru_cache(maxsize=256)
def _with_param(sql: str, param: str) -> str:
    return sql.replace("?", param)


def placeholders(sql: str, db=None) -> str:
    """`sql` written with `?` placeholders, in the placeholder style of `db` (default: the shared one).

    Only for statements whose text holds no literal `?`.
    """
    target = database if db is None else db
    return sql if target.param == "?" else _with_param(sql, target.param)


def fetch_all(sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of the `?`-placeholder query `sql`, run on this thread's/greenlet's connection
    (opened on first use, returned at teardown like any other) straight through the driver: the
    hot read routes skip peewee's per-statement layers, which cost as much as a small query."""
    conn = database.connection()
    sql = placeholders(sql)
    if is_postgresql():
        return conn.execute(sql, params).fetchall()
    return retry_while_locked(lambda: conn.execute(sql, params).fetchall())  # a read is safe to repeat


def insert_returning_id(sql: str, params: tuple) -> int:
    """Run the `?`-placeholder INSERT `sql` on the shared database; the new row's `id`."""
    if is_postgresql():
        return database.execute_sql(placeholders(sql + ' RETURNING "id"'), params).fetchone()[0]
    return database.execute_sql(sql, params).lastrowid


class _PostgresWriteTransaction:
    """A transaction holding a transaction-scoped advisory lock per resource named."""

    def __init__(self, db, resources: tuple[str, ...]):
        self.db = db
        self.resources = sorted(set(resources))  # one order everywhere: no lock-order deadlocks
        self.atomic = db.atomic()

    def __enter__(self):
        self.atomic.__enter__()
        try:
            for resource in self.resources:
                self.db.execute_sql("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (resource,))
        except BaseException as exc:
            self.atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self.atomic

    def __exit__(self, exc_type, exc, tb):
        return self.atomic.__exit__(exc_type, exc, tb)


def write_transaction(*resources: str, db=None):
    """A transaction in which a read-then-write on `resources` cannot interleave with another's.

    SQLite: BEGIN IMMEDIATE (the one database-wide write lock).  PostgreSQL: a plain transaction
    plus an advisory lock per resource name held until it ends, so writers of different resources
    proceed in parallel.  Every writer of a resource must name it the same way.
    """
    target = database if db is None else db
    if is_postgresql(target):
        return _PostgresWriteTransaction(target, resources)
    return target.atomic("IMMEDIATE")


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


def dedicated_connection(db=None):
    """A new autocommit psycopg connection to the PostgreSQL database `db` (default: the shared
    one), outside the pool: for what lives as long as the connection's session (a LISTEN, a
    session-level advisory lock).  Closing it ends the session."""
    import psycopg

    target = database.obj if db is None else db
    return psycopg.connect(dbname=target.database, autocommit=True, **target.connect_params)
