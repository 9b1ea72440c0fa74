"""Database access under gevent on a real gunicorn worker: every greenlet has its own connection
state (many concurrent chats with concurrent tools next to list requests), and a write lock held by
another process never stalls the worker's other greenlets."""
from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from starpod.memory.pgindex import WRITE_LOCK_KEY as MEMORY_WRITE_LOCK_KEY

from . import appdb, pgtest
from .fake_provider import Reply, ToolCall
from .support import REPO, LiveServer, live_server, wait_until

API_KEY = "sp_live_" + "ef" * 20
CHATS = 50
LOCK_WAIT_LOGGED = "still waiting for a database lock"


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("dbconc") / ".starpod"
    with live_server(home, workers=1, env={**fake.environ(), "STARPOD_API_KEY": API_KEY}) as running:
        yield running


def two_tools_then_done(recorded) -> Reply:
    """First model call of a chat: two concurrent tool calls; after their results: the answer."""
    last = recorded.body["messages"][-1]
    content = last["content"] if isinstance(last["content"], list) else []
    if any(block.get("type") == "tool_result" for block in content):
        return Reply("both tools ran")
    # Tools that wait (a subprocess) let other requests of the worker run in the meantime.
    return Reply(tool_calls=[ToolCall("Bash", {"command": "sleep 0.2; echo one"}),
                             ToolCall("Bash", {"command": "sleep 0.1; echo two"})])


def chat(server, index: int) -> requests.Response:
    return requests.post(f"{server.base_url}/api/chat", headers={"X-API-Key": API_KEY}, timeout=180,
                         json={"text": f"chat {index}", "channel_session_key": f"conc-{index}"})


def list_sessions_until(server, stop: threading.Event) -> list[int]:
    statuses = []
    while not stop.is_set():
        statuses.append(requests.get(f"{server.base_url}/api/sessions", headers={"X-API-Key": API_KEY},
                                     timeout=180).status_code)
    return statuses


def test_concurrent_chats_with_concurrent_tools_and_list_requests(server, fake):
    fake.reset()
    fake.default = two_tools_then_done
    stop = threading.Event()
    with ThreadPoolExecutor(CHATS + 4) as pool:
        listers = [pool.submit(list_sessions_until, server, stop) for _ in range(4)]
        chats = [pool.submit(chat, server, i) for i in range(CHATS)]
        responses = [c.result() for c in chats]
        stop.set()
        list_statuses = [s for lister in listers for s in lister.result()]

    failures = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert failures == []
    assert set(list_statuses) == {200}
    assert {r.json()["text"] for r in responses} == {"both tools ran"}
    for response in responses:
        rows = server.get(f"/api/sessions/{response.json()['session_id']}/messages", API_KEY).json()
        assert sorted(r["role"] for r in rows) == sorted(
            ["user", "tool_use", "tool_use", "tool_result", "tool_result", "assistant"])
        results = [json.loads(r["content"]) for r in rows if r["role"] == "tool_result"]
        assert not any(r.get("is_error") for r in results), results
    log = server.log_text()
    assert "Traceback" not in log and "MonkeyPatchWarning" not in log


# database file → a request that must write to it, its status and part of its answer, and on
# PostgreSQL the lock its write waits for (SQLite: the file's write lock)
LOCKED_WRITES = {
    "starpod.db": ("/api/settings/auth/users", {"display_name": "Waited for the lock"}, 201,
                   {"display_name": "Waited for the lock"},
                   "LOCK TABLE users IN EXCLUSIVE MODE"),  # reads go on, writes wait
    "memory.db": ("/api/memory/reindex", None, 200, {"status": "ok"},
                  f"SELECT pg_advisory_xact_lock({MEMORY_WRITE_LOCK_KEY})"),
}


def write_waits(server, waits_logged: int) -> bool:
    """Whether a write of the server waits for the test's lock: on SQLite it logs its retries."""
    if pgtest.requested():
        return appdb.lock_waits(server.home) > 0
    return server.log_text().count(LOCK_WAIT_LOGGED) > waits_logged


@pytest.mark.parametrize("db_file", sorted(LOCKED_WRITES))
def test_a_write_waiting_for_another_process_lock_does_not_stall_the_worker(server, db_file):
    path, body, status, expected, pg_lock = LOCKED_WRITES[db_file]
    (server.home / f"lock-wait-{db_file}.md").write_text("# A new note\n\nso a reindex has work to do\n")
    assert server.get("/api/sessions", API_KEY).status_code == 200  # last_used_at written: no write on auth
    waits_logged = server.log_text().count(LOCK_WAIT_LOGGED)
    holder = appdb.write_lock(server.home, pg_lock, db_file)  # another process holds the write lock
    locked_at = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        try:
            write = pool.submit(server.request, "POST", path, API_KEY, json=body)
            wait_until(lambda: write_waits(server, waits_logged), "the write to wait for the lock")
            answers_while_locked = 0
            while answers_while_locked < 5 or time.monotonic() - locked_at < 4.0:
                assert server.get("/api/health").status_code == 200
                answers_while_locked += 1
            assert not write.done()
        finally:
            holder.rollback()
            holder.close()
        answer = write.result()
    assert answer.status_code == status, answer.text
    assert expected.items() <= answer.json().items()


def test_worker_refuses_to_start_when_peewee_was_imported_before_gevent_patched(tmp_path):
    if pgtest.requested():
        pytest.skip("SQLite only: the PostgreSQL pool builds its connection state when the worker opens it, "
                    "after gevent patched threading (starpod.db._connection_state)")
    config = tmp_path / "late_patch.conf.py"
    config.write_text("import peewee  # before gevent patches threading\n" + (REPO / "gunicorn.conf.py").read_text())
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = LiveServer(tmp_path / "home", command=[str(gunicorn), "-c", str(config), "wsgi:app"])
    with pytest.raises(RuntimeError):
        server.start()
    assert "connection state is shared by every greenlet" in server.log_text()
