"""Shared fixtures: a fresh app per test (real storage in a temp STARPOD_HOME), users and keys.

`STARPOD_TEST_DATABASE=postgresql` runs the whole suite on PostgreSQL instead of SQLite: each
module on a fresh database of its own, dropped afterwards (tests/pgtest.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from starpod import accounts, create_app
from starpod.config import Config
from starpod.db import database

from .secrets_scan import pytest_sessionfinish, secrets_ledger  # noqa: F401  (the run-wide secrets proof)
from . import pgtest


def _require_postgresql() -> None:
    """Skip with the reason when PostgreSQL is unreachable; fail instead under CI."""
    reason = pgtest.unreachable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI requires PostgreSQL", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def module_database():
    """Under the PostgreSQL switch: this module's fresh database, dropped afterwards."""
    if not pgtest.requested():
        yield None
        return
    _require_postgresql()
    yield pgtest.start_module()
    pgtest.end_module()


@pytest.fixture(scope="module")
def postgres():
    """A fresh PostgreSQL database of its own (whatever engine the run uses otherwise), for tests
    that need PostgreSQL itself."""
    _require_postgresql()
    db = pgtest.ModuleDatabase().create()
    yield db
    db.drop()


def make_config(home, bootstrap_admin: bool = False, environ: dict | None = None, **overrides) -> Config:
    """A Config for `home` that ignores the developer's real environment (no provider keys leak in).

    Its database is the test run's engine: SQLite in `home`, or `home`'s PostgreSQL schema.
    """
    overrides.setdefault("database_url", pgtest.database_url_for(home))
    return Config(home=home, environ=environ or {}, bootstrap_admin=bootstrap_admin, **overrides)


@pytest.fixture
def home(tmp_path):
    return tmp_path / ".starpod"


@pytest.fixture
def config(home):
    return make_config(home)


@pytest.fixture
def app(config):
    """An app whose store has no users yet (auth disabled until a user is created)."""
    app = create_app(config)
    with app.app_context():
        yield app
    database.close_all()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_user(app):
    """Create a user with a fresh API key: make_user(role="user", **fields) -> (user, key)."""
    def _make(role: str = "user", **fields):
        user = accounts.create_user(role=role, **fields)
        _, key = accounts.create_api_key(user.id, "test")
        return user, key
    return _make


@pytest.fixture
def admin(make_user):
    """(user, key) of an admin; creating it turns auth on."""
    return make_user("admin", display_name="Alice")


@pytest.fixture
def admin_headers(admin):
    return {"X-API-Key": admin[1]}


def _started_fake_provider():
    from .fake_provider import FakeProvider
    fake = FakeProvider().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_provider():
    """A started fake LLM server (tests/fake_provider.py); `make_config(home, environ=fake.environ())`
    points the app at it."""
    yield from _started_fake_provider()


@pytest.fixture(scope="module")
def fake():
    """One fake LLM server shared by a module's tests (for modules that run a live server)."""
    yield from _started_fake_provider()


@pytest.fixture
def count_verifications(monkeypatch):
    """The keys argon2 verified during the test (a list that grows as `accounts.verify_key` runs)."""
    calls = []
    real = accounts.verify_key

    def counting(key, key_hash):
        calls.append(key)
        return real(key, key_hash)

    monkeypatch.setattr(accounts, "verify_key", counting)
    return calls
