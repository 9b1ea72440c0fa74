"""A data directory's database as tests reach it from outside the server, on the run's engine:
the SQLite files under `<home>/db/`, or the home's PostgreSQL schema when the run uses PostgreSQL
(tests/pgtest.py), where the memory index's tables live beside the others.

SQL is written with `?` placeholders and must hold no literal `?` or `%`.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from starpod.db import open_database

from . import pgtest

APP_DB = "starpod.db"
MEMORY_DB = "memory.db"


def _connect(home: Path, file: str, autocommit: bool = True):
    url = pgtest.database_url_for(home)
    if url is None:
        return sqlite3.connect(Path(home) / "db" / file, timeout=30, isolation_level=None)
    import psycopg
    return psycopg.connect(url, autocommit=autocommit, connect_timeout=30)


def _placeholders(home: Path, sql: str) -> str:
    return sql if pgtest.database_url_for(home) is None else sql.replace("?", "%s")


def query(home: Path, sql: str, *params, file: str = APP_DB) -> list[tuple]:
    """Rows of one statement (committed at once) on a database the server may be using."""
    conn = _connect(home, file)
    try:
        cursor = conn.execute(_placeholders(home, sql), params)
        return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


def has_table(home: Path, table: str, file: str = APP_DB) -> bool:
    """Whether the server has created `table` (False before its first start)."""
    if pgtest.database_url_for(home) is None:
        return (Path(home) / "db" / file).exists() and bool(
            query(home, "SELECT 1 FROM sqlite_master WHERE name = ?", table, file=file))
    return query(home, "SELECT to_regclass(?) IS NOT NULL", table)[0][0]


def write_lock(home: Path, pg_statement: str, file: str = APP_DB):
    """A connection holding a lock the server's writers wait for, until its rollback(): SQLite's
    database-wide write lock on `file`, or on PostgreSQL the lock `pg_statement` takes."""
    conn = _connect(home, file, autocommit=False)
    try:
        if pgtest.database_url_for(home) is None:
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute(pg_statement)
    except BaseException:
        conn.close()
        raise
    return conn


def lock_waits(home: Path) -> int:
    """PostgreSQL: how many lock requests in the home's database wait for a lock held elsewhere."""
    return query(home, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                       "WHERE NOT l.granted AND d.datname = current_database()")[0][0]


def open_app_database(home: Path):
    """Bind starpod's shared database proxy to the home's database, as its server does."""
    return open_database(Path(home) / "db" / APP_DB, pgtest.database_url_for(home))
