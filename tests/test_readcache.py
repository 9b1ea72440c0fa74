"""The per-process read cache: kept until any commit to the database, never inside a transaction."""
from __future__ import annotations

from starpod.db import database, fetch_all, is_postgresql
from starpod.readcache import ReadCache

from . import appdb


def titles():
    return tuple(row[0] for row in fetch_all("SELECT title FROM session_metadata ORDER BY title"))


def counted(cache: ReadCache, calls: list):
    def compute():
        calls.append(1)
        return titles()
    return cache.get("titles", compute)


def add_session(home, title: str) -> None:
    appdb.query(home, "INSERT INTO session_metadata (id, created_at, last_message_at, is_closed, message_count, "
                "channel, user_id, is_read, title) VALUES (?, 'x', 'x', FALSE, 0, 'main', 'u', TRUE, ?)",
                title, title)


def test_a_value_is_kept_until_another_connection_commits(app, home):
    cache, calls = ReadCache(max_entries=4, max_length=10), []
    add_session(home, "a")
    assert counted(cache, calls) == counted(cache, calls) == ("a",)
    assert len(calls) == (2 if is_postgresql() else 1)  # PostgreSQL: no cache
    add_session(home, "b")  # another worker's commit
    assert counted(cache, calls) == ("a", "b")
    assert counted(cache, calls) == ("a", "b")
    assert len(calls) == (4 if is_postgresql() else 2)


def test_nothing_read_inside_a_transaction_is_cached(app, home):
    cache, calls = ReadCache(max_entries=4, max_length=10), []
    with database.atomic() as transaction:
        database.execute_sql("INSERT INTO session_metadata (id, created_at, last_message_at, is_closed, "
                             "message_count, channel, user_id, is_read, title) "
                             "VALUES ('t', 'x', 'x', FALSE, 0, 'main', 'u', TRUE, 'uncommitted')")
        assert counted(cache, calls) == ("uncommitted",)
        transaction.rollback()
    assert counted(cache, calls) == ()
    assert len(calls) == 2


def test_long_values_are_not_kept(app, home):
    cache, calls = ReadCache(max_entries=4, max_length=1), []
    for title in ("a", "b"):
        add_session(home, title)
    assert counted(cache, calls) == counted(cache, calls) == ("a", "b")
    assert len(calls) == 2
