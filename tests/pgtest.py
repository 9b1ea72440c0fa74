"""PostgreSQL for the test suite: `STARPOD_TEST_DATABASE=postgresql` runs every module on it.

Each test module gets a fresh database `starpod_test_<random>` (dropped afterwards), and inside it
one schema per data directory: a `home` maps to the same schema every time it is used, as it maps
to the same SQLite file, so restarting a server on a home finds its data and two servers on one
home share it.  Connections choose the schema by the URL's `options=-csearch_path=…`.

Without a reachable server the modules skip with the reason, except under `CI`, where it fails.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from urllib.parse import quote

SWITCH_ENV = "STARPOD_TEST_DATABASE"
SERVER_URL_ENV = "STARPOD_TEST_POSTGRES_URL"  # where to create the test databases
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def requested() -> bool:
    return os.environ.get(SWITCH_ENV, "").strip().lower() in ("postgresql", "postgres")


def server_url() -> str:
    return os.environ.get(SERVER_URL_ENV) or DEFAULT_SERVER_URL


def _admin_connect(url: str):
    import psycopg
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _url_with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


class ModuleDatabase:
    """A throwaway database for one test module, with one schema per data directory."""

    def __init__(self):
        self.name = f"starpod_test_{uuid.uuid4().hex[:12]}"
        self.url = _url_with_database(server_url(), self.name)
        self._schemas: set[str] = set()
        self._connection = None

    def create(self) -> "ModuleDatabase":
        with _admin_connect(server_url()) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self._connection = _admin_connect(self.url)
        return self

    def drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        with _admin_connect(server_url()) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def url_for(self, home: str | os.PathLike) -> str:
        """The DATABASE_URL of the schema that belongs to data directory `home`."""
        schema = "home_" + hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:16]
        if schema not in self._schemas:
            self._connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self._schemas.add(schema)
        return f"{self.url}?options={quote(f'-csearch_path={schema}')}"


_current: ModuleDatabase | None = None


def unreachable_reason() -> str | None:
    try:
        with _admin_connect(server_url()):
            return None
    except Exception as exc:  # any failure to connect means: no usable server here
        return f"PostgreSQL at {server_url()} is unreachable ({exc.__class__.__name__}: {exc})".strip()


def start_module() -> ModuleDatabase:
    global _current
    _current = ModuleDatabase().create()
    return _current


def end_module() -> None:
    global _current
    if _current is not None:
        _current.drop()
    _current = None


def absent_database_url() -> str:
    """A URL on the test server naming a database that does not exist."""
    return _url_with_database(server_url(), f"starpod_absent_{uuid.uuid4().hex[:12]}")


def database_url_for(home) -> str | None:
    """DATABASE_URL for `home` in the running module's database; None when tests run on SQLite."""
    return _current.url_for(home) if _current is not None else None
