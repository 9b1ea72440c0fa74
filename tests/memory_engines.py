"""The engine the memory index tests run on: the test run's own, SQLite, or PostgreSQL under
`STARPOD_TEST_DATABASE=postgresql` (tests/pgtest.py), so each of CI's two passes tests the index
on its engine.

On PostgreSQL every data directory gets its own schema in the module's fresh database (chosen by
the URL's search_path), as it gets its own `memory.db` on SQLite.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .pgtest import ModuleDatabase


class SqliteEngine:
    name = "sqlite"

    def url_for(self, home: Path) -> None:
        return None


class PostgresEngine:
    """The module's database; `url_for(home)` is the DATABASE_URL of `home`'s own schema."""

    name = "postgresql"

    def __init__(self, database: ModuleDatabase):
        self.database = database

    def url_for(self, home: Path) -> str:
        return self.database.url_for(home)

    def query(self, home: Path, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of `sql` run in `home`'s schema (none for a statement that returns none)."""
        import psycopg
        with psycopg.connect(self.url_for(home), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def memory_engine(module_database):
    return SqliteEngine() if module_database is None else PostgresEngine(module_database)
