"""`starpod db migrate` / `db copy` functions: a populated SQLite deployment moves to PostgreSQL
without losing a row (counts and checksums), the copy serves on the new engine, and a non-empty
target is refused unless forced."""
from __future__ import annotations

import json

import pytest

from starpod import accounts, create_app, leases, ratelimit, sessions
from starpod.db import database
from starpod.dbcopy import CopyError, all_models, copy_database, migrate_url, open_url, table_summary
from starpod.migrations import MIGRATIONS
from starpod.models import Message, Session, User

from .conftest import make_config


def _populate(home) -> dict:
    """A SQLite deployment with a row in every kind of table: users, keys, links, audit, sessions..."""
    config = make_config(home, database_url=None)
    create_app(config)
    with database.connection_context():
        admin = accounts.create_user(role="admin", display_name="Ada")
        _, admin_key = accounts.create_api_key(admin.id, "laptop")
        idle = accounts.create_user(display_name="Idle")
        accounts.set_user_active(idle.id, False, actor_id=admin.id)
        accounts.link_telegram(idle.id, 987654321012, "idle_tg")
        session = sessions.resolve_session("main", "k1", admin.id, "hello there", None).session
        for n in range(3):
            sessions.add_message(session.id, "user", f"message {n} \u2014 \u00e9\u00e8")
        sessions.record_usage(session.id, 1, 10, 20, 0, 0, 0.000123456789, "fake-model")
        assert leases.acquire("cron", "holder-a", ttl=3600.25)
        assert ratelimit.check(admin.id, 5, 60).allowed
    database.close_all()
    return {"url": f"sqlite:///{config.db_path}", "admin_key": admin_key, "session_id": session.id, "home": home}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _populate(tmp_path_factory.mktemp("source") / ".starpod")


def test_migrate_applies_every_migration_once(postgres):
    url = postgres.url_for("migrate-only")
    assert migrate_url(url) == [name for name, _ in MIGRATIONS]
    assert migrate_url(url) == []


def test_copy_to_postgresql_keeps_every_row_and_serves(source, postgres, tmp_path):
    target = postgres.url_for("copy-target")
    copied = copy_database(source["url"], target)
    by_table = {entry.table: entry for entry in copied}
    assert {m._meta.table_name for m in all_models()} == set(by_table)
    assert by_table["users"].rows == 2  # Ada and Idle
    assert by_table["session_messages"].rows == 3
    assert by_table["telegram_links"].rows == 1

    # An independent recount on both sides, not just the copy's own report.
    source_db, target_db = open_url(source["url"]), open_url(target)
    with source_db.connection_context(), target_db.connection_context():
        for model in all_models():
            assert table_summary(source_db, model) == table_summary(target_db, model)
    source_db.close_all()
    target_db.close_all()

    app = create_app(make_config(tmp_path / ".starpod", database_url=target))
    client = app.test_client()
    response = client.get("/api/auth/verify", headers={"X-API-Key": source["admin_key"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    with database.connection_context():
        assert User.get(User.display_name == "Idle").is_active is False
        assert Session.get_by_id(source["session_id"]).message_count == 1
        before = Message.select().count()
        new_id = sessions.add_message(source["session_id"], "assistant", "after the move")
        assert new_id > max(m.id for m in Message.select().where(Message.id != new_id))  # sequence moved on
        assert Message.select().count() == before + 1
        assert leases.current_holder("cron") == "holder-a"
    database.close_all()


def test_non_empty_target_is_refused_unless_forced(source, postgres):
    target = postgres.url_for("occupied-target")
    copy_database(source["url"], target)
    with pytest.raises(CopyError, match="not empty"):
        copy_database(source["url"], target)
    again = copy_database(source["url"], target, force=True)
    assert sum(entry.rows for entry in again) > 0


def test_copy_between_sqlite_files(source, tmp_path):
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    copied = copy_database(source["url"], target)
    assert {entry.table: entry.rows for entry in copied}["users"] == 2


def test_bad_urls_are_refused():
    with pytest.raises(CopyError, match="unsupported database URL"):
        copy_database("mysql://x/y", "sqlite:///tmp/never.db")
    with pytest.raises(CopyError, match="same database"):
        copy_database("sqlite:///a.db", "sqlite:///a.db")


def test_cli_copies_verifies_and_refuses_a_non_empty_target(source, tmp_path, capsys):
    from starpod.cli import main

    target = f"sqlite:///{tmp_path / 'cli-copy.db'}"
    assert main(["db", "copy", "--from", source["url"], "--to", target, "--json"]) == 0
    tables = {row["table"]: row["rows"] for row in json.loads(capsys.readouterr().out)}
    assert tables["users"] == 2
    assert main(["db", "copy", "--from", source["url"], "--to", target]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["db", "copy", "--from", source["url"], "--to", target, "--force"]) == 0


def test_cli_migrate_reports_an_up_to_date_schema(source, capsys, monkeypatch):
    from starpod.cli import main

    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["--home", str(source["home"]), "db", "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
