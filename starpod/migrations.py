"""Versioned, idempotent schema migrations, applied at start-up under an exclusive lock,
on SQLite and PostgreSQL alike.

Each migration has a unique name and runs once per database; the names applied are recorded in
`schema_migrations`.  Append new migrations at the end of MIGRATIONS; never edit an applied one.
"""
from __future__ import annotations

import logging

from peewee import Database

from . import models
from .db import is_postgresql, placeholders, write_transaction
from .memory import pgindex
from .timeutil import now_iso

log = logging.getLogger(__name__)


def _create(*tables):
    def apply(db: Database) -> None:
        db.create_tables(tables, safe=True)
    return apply


def _cron(db: Database) -> None:
    """Scheduler tables, and the owner of each notification (older databases lack the column)."""
    db.create_tables((models.CronJob, models.CronRun, models.CronState), safe=True)
    if "user_id" not in {column.name for column in db.get_columns("ws_notifications")}:
        db.execute_sql("ALTER TABLE ws_notifications ADD COLUMN user_id TEXT")


def _rate_limit_leases(db: Database) -> None:
    """A rate-limit log row may stand for several requests (older databases lack the column)."""
    if "hits" not in {column.name for column in db.get_columns("rate_limit_hits")}:
        db.execute_sql("ALTER TABLE rate_limit_hits ADD COLUMN hits INTEGER NOT NULL DEFAULT 1")


def _run_stops(db: Database) -> None:
    """A stop request for the reply a run is streaming (older databases lack the column), and a
    partial index that lets each worker look for the requests to it in an (almost always) empty index."""
    if "stop_requested" not in {column.name for column in db.get_columns("chat_runs")}:
        db.execute_sql("ALTER TABLE chat_runs ADD COLUMN stop_requested BOOLEAN NOT NULL DEFAULT FALSE")
    db.execute_sql("CREATE INDEX IF NOT EXISTS chat_runs_stop_requested ON chat_runs (worker_id) WHERE stop_requested")


def _memory_fts_layout(db: Database) -> None:
    """PostgreSQL: the memory index's chunk rows in the layout broad searches read fastest
    (`pgindex.STORAGE`), emptied so that the start-up reindex writes every chunk anew in it (a
    layout applies to rows as they are written).  On SQLite the index is a file of its own."""
    if not is_postgresql(db) or not db.table_exists("memory_fts"):
        return
    for statement in pgindex.STORAGE:
        db.execute_sql(statement)
    db.execute_sql("TRUNCATE memory_fts")
    db.execute_sql("DELETE FROM memory_files")


MIGRATIONS = [
    ("0001_auth", _create(models.User, models.ApiKey, models.TelegramLink, models.AuthAuditLog,
                          models.RateLimitHit)),
    ("0002_sessions", _create(models.Session, models.Message, models.TranscriptEntry, models.UsageStat,
                              models.CompactionLog)),
    ("0007_instances", _create(models.Instance)),
    ("0005_realtime", _create(models.ChatRun, models.RunEvent, models.RunFollowup, models.Notification)),
    ("0008_leases", _create(models.Lease)),
    ("0009_auth_generation", _create(models.AuthGeneration)),
    ("0010_cron", _cron),
    ("0011_telegram", _create(models.TelegramState, models.TelegramUpdate)),
    ("0012_rate_limit_leases", _rate_limit_leases),
    ("0013_run_stops", _run_stops),
    ("0014_memory_fts_layout", _memory_fts_layout),
]


def migrate(db: Database) -> list[str]:
    """Apply every migration not yet recorded; safe to call from several processes (or servers) at once.

    The same migrations run on SQLite and PostgreSQL.  The write transaction makes concurrent
    callers migrate one after another; on PostgreSQL the DDL is part of it and commits with it.
    """
    applied_now = []
    with db.connection_context():
        with write_transaction("schema_migrations", db=db):
            db.execute_sql("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {row[0] for row in db.execute_sql("SELECT name FROM schema_migrations")}
            for name, apply in MIGRATIONS:
                if name in done:
                    continue
                apply(db)
                db.execute_sql(placeholders("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", db),
                               (name, now_iso()))
                applied_now.append(name)
    if applied_now:
        log.info("applied migrations: %s", ", ".join(applied_now))
    return applied_now
