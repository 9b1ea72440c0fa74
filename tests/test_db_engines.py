"""Engine choice from DATABASE_URL, PostgreSQL under gevent, and write transactions that serialise
writers of the same resource only."""
from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
import threading
import time

import psycopg
import pytest

from starpod.db import (POOL_WAIT_SECS, is_postgresql, max_pg_connections, open_database, open_postgresql,
                        write_transaction)

from .support import REPO, wait_until

DEADLINE_SECS = 60


def test_postgres_urls_and_pool_bound(tmp_path):
    db = open_postgresql("postgres://someone:p%40ss@db.example:6543/starpod?sslmode=require",
                         max_connections=7)
    assert is_postgresql(db)
    assert db.database == "starpod"
    params = {name: value for name, value in db.connect_params.items() if name != "context"}  # the adapters
    assert params == {"user": "someone", "password": "p@ss", "host": "db.example", "port": 6543, "sslmode": "require"}
    assert db._max_connections == 7 and db._wait_timeout == POOL_WAIT_SECS
    assert max_pg_connections({}) == 20
    assert max_pg_connections({"STARPOD_DB_MAX_CONNECTIONS": "5"}) == 5
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="STARPOD_DB_MAX_CONNECTIONS"):
            max_pg_connections({"STARPOD_DB_MAX_CONNECTIONS": bad})
    with pytest.raises(ValueError, match="names no database"):
        open_postgresql("postgresql://127.0.0.1:5432")
    with pytest.raises(ValueError, match="postgresql://"):
        open_postgresql("mysql://127.0.0.1/x")
    assert not is_postgresql(open_database(tmp_path / "db" / "starpod.db", None))


GREENLETS = textwrap.dedent("""
    import sys
    from starpod.db import open_postgresql  # imports psycopg first, as gunicorn's master does
    from gevent import monkey
    monkey.patch_all()  # then the gevent worker patches, then the app opens its database
    import gevent

    db = open_postgresql(sys.argv[1], max_connections=4)

    def blocked():
        with db.connection_context():
            db.execute_sql("SELECT pg_advisory_lock(4242)")
            db.execute_sql("SELECT pg_advisory_unlock(4242)")
        print("blocked query done", flush=True)

    def quick():
        with db.connection_context():
            assert db.execute_sql("SELECT 40 + 2").fetchone()[0] == 42
        print("quick query done", flush=True)

    slow = gevent.spawn(blocked)
    gevent.sleep(0)
    gevent.spawn(quick).join()
    slow.join()
""")


def _lines(process: subprocess.Popen) -> queue.Queue:
    """The process's output lines, read by a thread so that waiting for one can time out."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in process.stdout], daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue, wanted: str) -> list[str]:
    seen = []
    deadline = time.monotonic() + DEADLINE_SECS
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if seen[-1] == wanted:
            return seen
    raise AssertionError(f"never saw {wanted!r}; output so far: {seen}")


def test_a_query_waiting_on_the_server_does_not_stall_other_greenlets(postgres):
    """One greenlet waits on a lock this test holds; another greenlet's query must still complete.

    If the driver blocked the gevent hub while waiting, the second query could never run and the
    lock would never be released (the test would see no line and fail at its deadline).
    """
    url = postgres.url_for("greenlets")
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        process = subprocess.Popen([sys.executable, "-c", GREENLETS, url], cwd=REPO, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            lines = _lines(process)
            assert "blocked query done" not in _wait_for_line(lines, "quick query done")
            holder.execute("SELECT pg_advisory_unlock(4242)")
            _wait_for_line(lines, "blocked query done")
            assert process.wait(DEADLINE_SECS) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def test_a_pooled_connection_is_checked_out_without_a_round_trip_unless_the_server_closed_it(postgres):
    db = open_postgresql(postgres.url_for("checkout"), max_connections=2)

    def last_statement(pid: int) -> str:
        return observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]
    with psycopg.connect(postgres.url_for("checkout"), autocommit=True) as observer:
        with db.connection_context():
            pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        with db.connection_context():  # the same pooled connection, not asked whether it is alive
            assert last_statement(pid) == "SELECT pg_backend_pid()"
            assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == pid
        observer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: observer.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                            (pid,)).fetchone()[0] == 0, "the backend to end")
        with db.connection_context():  # the closed one is discarded, not handed out
            assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid
    db.close_all()


def test_sqlite_lock_types_are_refused_on_postgresql_with_the_remedy(postgres):
    db = open_postgresql(postgres.url_for("lock-types"), max_connections=2)
    with db.connection_context():
        with pytest.raises(TypeError, match="write_transaction"):
            with db.atomic("IMMEDIATE"):
                pass
        with db.atomic("SERIALIZABLE"):  # PostgreSQL's own levels still work
            assert db.execute_sql("SELECT 1").fetchone() == (1,)
    db.close_all()


def test_a_nul_in_a_text_parameter_is_stored_as_replacement_and_finds_nothing(postgres):
    db = open_postgresql(postgres.url_for("nul"), max_connections=2)
    with db.connection_context():
        db.execute_sql("CREATE TABLE notes (name TEXT)")
        db.execute_sql("INSERT INTO notes VALUES (%s)", ("a\x00b",))
        assert db.execute_sql("SELECT name FROM notes").fetchall() == [("a\ufffdb",)]
        assert db.execute_sql("SELECT count(*) FROM notes WHERE name = %s", ("\x00",)).fetchone() == (0,)
        assert db.execute_sql("SELECT %s::int", ("7",)).fetchone() == (7,)  # strings still adapt to any type
    db.close_all()


def _waiting_advisory_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as observer:
        return observer.execute("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                                "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
                                ).fetchone()[0]


def test_write_transactions_serialise_per_resource(postgres):
    url = postgres.url_for("locks")
    db = open_postgresql(url, max_connections=4)
    holding, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def hold(resource: str) -> None:
        with db.connection_context(), write_transaction(resource, db=db):
            holding.set()
            release.wait(DEADLINE_SECS)
            finished.append(f"held {resource}")  # while still holding: before any waiter can take it

    def take(resource: str) -> None:
        with db.connection_context(), write_transaction(resource, "another", db=db):
            finished.append(f"took {resource}")

    holder = threading.Thread(target=hold, args=("lease:cron",))
    holder.start()
    assert holding.wait(DEADLINE_SECS)
    other = threading.Thread(target=take, args=("lease:telegram",))
    other.start()
    other.join(DEADLINE_SECS)
    assert finished == ["took lease:telegram"]  # a different resource is not held up

    same = threading.Thread(target=take, args=("lease:cron",))
    same.start()
    deadline = time.monotonic() + DEADLINE_SECS
    while _waiting_advisory_locks(url) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _waiting_advisory_locks(url) == 1 and "took lease:cron" not in finished  # it waits
    release.set()
    holder.join(DEADLINE_SECS)
    same.join(DEADLINE_SECS)
    assert finished == ["took lease:telegram", "held lease:cron", "took lease:cron"]
    db.close_all()


LISTENER = textwrap.dedent("""
    import sys
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from starpod import changehints, pgnotify
    from starpod.db import open_database
    from starpod.realtime import pgbell

    db = open_database(None, sys.argv[1])
    pgbell.subscribe("me", lambda: print("rung", flush=True))
    pgnotify.subscribe(changehints.TOPIC, lambda topic: print(f"changed {topic}", flush=True))
    gevent.sleep(3600)
""")


def test_notifies_from_another_server_reach_every_subscriber_on_one_listen_connection(postgres, tmp_path):
    """`announce` on one server reaches the doorbell and the change-hint subscribers of another
    (here: another process), which LISTENs on one connection for both."""
    from starpod import changehints
    from starpod.realtime import pgbell
    url = postgres.url_for("bells")
    open_database(tmp_path / "unused.db", url)
    process = subprocess.Popen([sys.executable, "-c", LISTENER, url], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines, seen = _lines(process), []
        deadline = time.monotonic() + DEADLINE_SECS
        while not {"rung", "changed auth"} <= set(seen) and time.monotonic() < deadline:
            pgbell.announce("me")  # its own rings are ignored
            pgbell.announce("someone-else")  # repeated: the listener may not be listening yet
            changehints.announce(changehints.AUTH)
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                pass
        assert {"rung", "changed auth"} <= set(seen), f"the listener never woke; its output: {seen}"
        with psycopg.connect(url, autocommit=True) as conn:
            listening = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND query LIKE 'LISTEN%%'").fetchone()[0]
        assert listening == 1
    finally:
        process.kill()
        process.wait()
