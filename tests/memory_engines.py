"""The engines the memory index tests run on: SQLite always, PostgreSQL when a server is reachable.

`memory_engine` is a module-scoped fixture parametrized over both.  The PostgreSQL variant creates
a fresh database `starpod_fts_<random>` on 127.0.0.1:5432 (trust auth, user `postgres` or `root`)
for the module and drops it afterwards; inside it every data directory gets its own schema (chosen
by the URL's search_path), as it gets its own `memory.db` on SQLite.  Without a reachable server
the PostgreSQL variant skips with the reason, except under `CI`, where it fails.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

SERVER_URLS = ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://root@127.0.0.1:5432/postgres")


class SqliteEngine:
    name = "sqlite"

    def url_for(self, home: Path) -> None:
        return None


class PostgresEngine:
    """A throwaway database; `url_for(home)` is the DATABASE_URL of `home`'s own schema."""

    name = "postgresql"

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.database = f"starpod_fts_{uuid.uuid4().hex[:12]}"
        self.url = f"{server_url.rpartition('/')[0]}/{self.database}"

    def create(self) -> "PostgresEngine":
        with _connect(self.server_url) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        return self

    def drop(self) -> None:
        with _connect(self.server_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def url_for(self, home: Path) -> str:
        schema = "home_" + hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:16]
        with _connect(self.url) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        return f"{self.url}?options={quote(f'-csearch_path={schema}')}"

    def query(self, home: Path, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of `sql` run in `home`'s schema."""
        with _connect(self.url_for(home)) as conn:
            return conn.execute(sql, params).fetchall()


def _connect(url: str):
    import psycopg
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _reachable_server() -> tuple[str | None, str]:
    """(server URL, "") or (None, why none is usable)."""
    errors = []
    for url in SERVER_URLS:
        try:
            with _connect(url):
                return url, ""
        except Exception as exc:  # any failure to connect means: not usable here
            errors.append(f"{url}: {exc.__class__.__name__}: {str(exc).strip()}")
    return None, "; ".join(errors)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def memory_engine(request):
    if request.param == "sqlite":
        yield SqliteEngine()
        return
    server_url, why = _reachable_server()
    if server_url is None:
        reason = f"PostgreSQL is unreachable ({why})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI requires PostgreSQL", pytrace=False)
        pytest.skip(reason)
    engine = PostgresEngine(server_url).create()
    yield engine
    engine.drop()
