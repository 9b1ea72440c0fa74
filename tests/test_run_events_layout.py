"""Migration 0015: run events keyed by (run_id, seq) alone (SQLite: a table WITHOUT ROWID) and
indexed by session only where a frame carries one; an older database keeps every event and its
runs stay resumable."""
from __future__ import annotations

import gevent
from gevent.event import Event

from starpod.db import database, is_postgresql
from starpod.migrations import migrate
from starpod.models import ChatRun
from starpod.realtime.doorbell import Doorbell
from starpod.realtime.runs import RunManager

EVENTS = "chat_run_events"
# The table and its indexes as migration 0005 created them before 0015.
OLDER_LAYOUT = [
    "CREATE TABLE chat_run_events ({id}, run_id TEXT NOT NULL REFERENCES chat_runs (id) ON DELETE CASCADE, "
    "seq INTEGER NOT NULL, session_id TEXT, frame TEXT NOT NULL)",
    "CREATE UNIQUE INDEX chat_run_events_run_id_seq ON chat_run_events (run_id, seq)",
    "CREATE INDEX chat_run_events_session_id ON chat_run_events (session_id)",
]


def layout() -> tuple[list[str], list[str], bool]:
    """The table's columns, its index definitions, and whether its key is (run_id, seq) alone."""
    db = database.obj
    columns = [column.name for column in db.get_columns(EVENTS)]
    if is_postgresql(db):
        indexes = [row[0] for row in db.execute_sql(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
            "ORDER BY indexname", (EVENTS,))]
        keyed = db.get_primary_keys(EVENTS) == ["run_id", "seq"]
    else:
        indexes = [row[0] for row in db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
            (EVENTS,))]
        table = db.execute_sql("SELECT sql FROM sqlite_master WHERE name = ?", (EVENTS,)).fetchone()[0]
        keyed = table.endswith("PRIMARY KEY (run_id, seq)) WITHOUT ROWID")
    return columns, indexes, keyed


def make_older(db) -> None:
    db.execute_sql(f"DROP TABLE {EVENTS}")
    key = "id SERIAL PRIMARY KEY" if is_postgresql(db) else "id INTEGER NOT NULL PRIMARY KEY"
    for statement in OLDER_LAYOUT:
        db.execute_sql(statement.format(id=key))
    db.execute_sql("DELETE FROM schema_migrations WHERE name = '0015_run_events_by_run'")


def test_a_new_database_has_the_layout(app):
    with database.connection_context():
        columns, indexes, keyed = layout()
    assert columns == ["run_id", "seq", "session_id", "frame"] and keyed
    assert len(indexes) <= 2 and "WHERE" in indexes[-1] and "session_id IS NOT NULL" in indexes[-1]


def test_an_older_database_is_migrated_keeping_its_events_and_resumes(app, config, tmp_path):
    db = database.obj
    with database.connection_context():
        make_older(db)
        ChatRun.create(id="older", user_id="admin", worker_id="gone", status="finished", created_at="2026-01-01T00:00:00.000000Z")
        ChatRun.create(id="newer", user_id="admin", worker_id="gone", status="finished", created_at="2026-01-02T00:00:00.000000Z")
        for run_id in ("newer", "older"):  # the newer run's events stored first
            for seq, session_id in ((1, "s1"), (2, None), (3, None)):
                db.execute_sql(f"INSERT INTO {EVENTS} (run_id, seq, session_id, frame) VALUES ("
                               + ", ".join(["%s" if is_postgresql(db) else "?"] * 4) + ")",
                               (run_id, seq, session_id, f'{{"type":"x","seq":{seq},"run":"{run_id}"}}'))
        assert layout()[0][0] == "id" and not layout()[2]
    assert migrate(db) == ["0015_run_events_by_run"]
    with database.connection_context():
        columns, indexes, keyed = layout()
    assert columns == ["run_id", "seq", "session_id", "frame"] and keyed
    assert "WHERE" in indexes[-1] and "session_id IS NOT NULL" in indexes[-1] and len(indexes) <= 2
    manager = RunManager(config, Doorbell(tmp_path / "bells"), Event)
    try:
        with gevent.Timeout(30):
            assert manager.find_run("s1", None) == "newer"
            assert list(manager.follow("older", 1)) == [['{"type":"x","seq":2,"run":"older"}',
                                                          '{"type":"x","seq":3,"run":"older"}']]
    finally:
        manager._writer.kill()
    assert migrate(db) == []
