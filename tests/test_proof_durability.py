"""Whole-system proof: durability.  The gunicorn master and both workers are killed together with
SIGKILL (the whole process group) while a chat streams over /ws, a settings loop rewrites
agent.toml, a memory reindex of thousands of files is half done and a local instance is being
paused; the server is then restarted on the same data directory.  After the restart both SQLite
databases pass `PRAGMA integrity_check`, agent.toml parses and holds a value that was written, the
user's message is stored, the interrupted run is closed and replays to a `stream_end` saying so,
the instance is running as recorded, and no lock is left behind.

The kill lands mid-operation by events, not by timing: the chat's provider streams far slower than
the test proceeds, the settings loop has answered PUTs, the pause is held after its SIGSTOP by this
test taking starpod.db's write lock (on PostgreSQL the instance row's; the server waits for it)
until the kill, and the kill follows the reindex's first committed batch (of many).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import tomllib
from pathlib import Path

import psutil
import pytest
import requests
import websocket

from starpod.realtime.runs import INTERRUPTED

from . import appdb, pgtest
from .fake_provider import Reply
from .support import LiveServer, wait_until

DEADLINE_SECS = 60.0
CLOSE_SECS = 30.0  # a run whose worker was killed is closed well within this (not a minute later)
STREAM_TEXT = "".join(f"<{i:03d}>" for i in range(600))  # 600 deltas, 50 ms apart: 30 s of streaming
USER_TEXT = "Tell me a very long story, please"
BULK_FILES = 6000
DATABASES = ("starpod.db", "memory.db")


class SettingsWriter(threading.Thread):
    """PUTs /api/settings/general with a growing max_turns until the server dies."""

    def __init__(self, server: LiveServer, key: str, general: dict):
        super().__init__(daemon=True)
        self.server, self.key, self.general = server, key, general
        self.acknowledged: list[int] = []
        self.attempted: list[int] = []

    def run(self) -> None:
        for max_turns in range(100, 100_000):
            self.attempted.append(max_turns)
            try:
                response = self.server.request("PUT", "/api/settings/general", self.key,
                                               json={**self.general, "max_turns": max_turns})
            except requests.RequestException:
                return
            if response.status_code != 200:
                return
            self.acknowledged.append(max_turns)


def post_in_background(server: LiveServer, path: str, key: str, **kwargs) -> threading.Thread:
    """A request whose outcome the test does not need (the kill may cut it off)."""
    def call():
        try:
            server.request("POST", path, key, **kwargs)
        except requests.RequestException:
            pass
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def write_bulk_memory(home: Path) -> None:
    directory = home / "knowledge" / "bulk"
    directory.mkdir(parents=True, exist_ok=True)
    body = "A line about write-ahead logs, atomic renames and crash safety.\n" * 12
    for i in range(BULK_FILES):
        (directory / f"note-{i:04d}.md").write_text(f"# Note {i}\ncrashproof{i}\n{body}")


def indexed_bulk_files(home: Path) -> int:
    return appdb.query(home, "SELECT COUNT(*) FROM memory_files WHERE source LIKE ?", "%bulk/note-%",
                       file=appdb.MEMORY_DB)[0][0]


def stored_run_frames(home: Path, session_id: str) -> int:
    """Frames stored for the run that streams `session_id` (0 before its stream_start is stored)."""
    return appdb.query(home, "SELECT COUNT(*) FROM chat_run_events WHERE run_id IN "
                             "(SELECT run_id FROM chat_run_events WHERE session_id = ?)", session_id)[0][0]


def hold_pause_after_its_sigstop(server: LiveServer, key: str, home: Path):
    """Pause the instance while this test holds the lock its record's write waits for (SQLite:
    starpod.db's write lock; PostgreSQL: the row's): the pause stops the instance's server, then
    waits to record it.  Returns the connection holding the lock."""
    instance_id, _, pid, _ = instance_row(home)
    conn = appdb.write_lock(home, "SELECT 1 FROM instances FOR UPDATE")
    try:
        post_in_background(server, f"/api/instances/{instance_id}/pause", key)
        wait_until(lambda: frozen(pid), "the pause to stop the instance's server")
    except BaseException:
        conn.close()
        raise
    return conn


def frozen(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def instance_row(home: Path) -> tuple[str, str, int | None, int]:
    """(id, status, pid, port) of the one instance."""
    return appdb.query(home, "SELECT id, status, pid, port FROM instances")[0]


def wait_for_running_instance(server: LiveServer, key: str, home: Path) -> None:
    """The instance being created answers (its first start may outlast the create request)."""
    wait_until(lambda: appdb.query(home, "SELECT id FROM instances"), "the instance record")
    instance_id = instance_row(home)[0]
    wait_until(lambda: server.get(f"/api/instances/{instance_id}", key).json()["status"] == "running",
               "the instance to run")


def running_runs(home: Path) -> list[tuple]:
    return appdb.query(home, "SELECT id FROM chat_runs WHERE status = 'running'")


def kill_instance(home: Path) -> None:
    """Cleanup: the instance's server runs in its own session, so the server's kill spares it."""
    rows = appdb.query(home, "SELECT pid FROM instances WHERE pid IS NOT NULL") \
        if appdb.has_table(home, "instances") else []
    for (pid,) in rows:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start_streaming_chat(server: LiveServer, key: str) -> tuple[websocket.WebSocket, str]:
    """A /ws chat that has started streaming: (socket, session id)."""
    ws = websocket.create_connection(f"{server.ws_url}/ws?token={key}", timeout=DEADLINE_SECS)
    ws.send(json.dumps({"type": "message", "text": USER_TEXT}))
    frames = [json.loads(ws.recv())]
    while frames[-1]["type"] != "text_delta":
        assert frames[-1]["type"] in ("stream_start", "notification"), frames
        frames.append(json.loads(ws.recv()))
    return ws, next(f["session_id"] for f in frames if f["type"] == "stream_start")


@pytest.fixture(scope="module")
def crash(tmp_path_factory, fake):
    """Kill the server mid-everything, restart it, and hand the tests what happened."""
    home = tmp_path_factory.mktemp("durability") / "home"
    fake.script(Reply(STREAM_TEXT, chunks=600, chunk_delay=0.05))
    server = LiveServer(home, workers=2, env=fake.environ()).start()
    restarted = None
    try:
        key = server.generated_admin_key()
        assert key, "the server did not log a bootstrap admin key"
        creating = post_in_background(server, "/api/instances", key, json={"name": "durable"})
        ws, session_id = start_streaming_chat(server, key)
        wait_until(lambda: stored_run_frames(home, session_id) >= 2, "the run's first frames to be stored")

        general = server.get("/api/settings/general", key).json()
        writer = SettingsWriter(server, key, general)
        writer.start()
        wait_until(lambda: len(writer.acknowledged) >= 2, "settings writes to be acknowledged")

        write_bulk_memory(home)
        creating.join(DEADLINE_SECS)
        wait_for_running_instance(server, key, home)
        pause_lock = hold_pause_after_its_sigstop(server, key, home)
        try:
            reindex = post_in_background(server, "/api/memory/reindex", key)
            wait_until(lambda: indexed_bulk_files(home) > 0, "the reindex's first batch", interval=0.005)
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(DEADLINE_SECS)
        finally:
            pause_lock.rollback()
            pause_lock.close()
        indexed_at_kill = indexed_bulk_files(home)
        ws.close()
        writer.join(DEADLINE_SECS)
        reindex.join(DEADLINE_SECS)

        restarted = LiveServer(home, workers=2, env=fake.environ()).start()
        yield {"home": home, "server": restarted, "key": key, "session_id": session_id, "writer": writer,
               "general": general, "indexed_at_kill": indexed_at_kill,
               "agent_toml": (home / "config" / "agent.toml").read_text(),
               "general_after": restarted.get("/api/settings/general", key),
               "running_after": running_runs(home)}
    finally:
        server.stop()
        if restarted:
            restarted.stop()
        kill_instance(home)


@pytest.mark.parametrize("name", DATABASES)
def test_databases_pass_integrity_check(crash, name):
    if pgtest.requested():
        pytest.skip("SQLite files only: PostgreSQL recovers its own database after a client dies")
    assert appdb.query(crash["home"], "PRAGMA integrity_check", file=name) == [("ok",)]


def test_the_kill_landed_mid_reindex(crash):
    assert 0 < crash["indexed_at_kill"] < BULK_FILES


def test_agent_toml_is_valid_and_holds_a_written_value(crash):
    toml = tomllib.loads(crash["agent_toml"])
    response = crash["general_after"]
    assert response.status_code == 200, response.text
    writer = crash["writer"]
    in_flight = writer.attempted[len(writer.acknowledged):]  # sent, unanswered when the server died
    assert toml["max_turns"] == response.json()["max_turns"]
    assert response.json()["max_turns"] in [writer.acknowledged[-1], *in_flight]


def test_user_message_is_stored(crash):
    response = crash["server"].get(f"/api/sessions/{crash['session_id']}/messages", crash["key"])
    assert response.status_code == 200, response.text
    assert [(m["role"], m["content"]) for m in response.json()][0] == ("user", USER_TEXT)


def test_interrupted_run_is_closed_once_realtime_starts(crash):
    assert crash["running_after"], "the killed run should still be recorded as running"
    ws = websocket.create_connection(f"{crash['server'].ws_url}/ws?token={crash['key']}", timeout=DEADLINE_SECS)
    try:
        wait_until(lambda: not running_runs(crash["home"]), "the interrupted run to be closed", CLOSE_SECS)
    finally:
        ws.close()


def test_interrupted_run_replays_to_an_interrupted_end(crash):
    server, session_id = crash["server"], crash["session_id"]
    ws = websocket.create_connection(f"{server.ws_url}/ws?token={crash['key']}", timeout=CLOSE_SECS)
    try:
        ws.send(json.dumps({"type": "resume", "session_id": session_id, "after_seq": 0}))
        frames = [json.loads(ws.recv())]
        while frames[-1]["type"] != "stream_end":
            frames.append(json.loads(ws.recv()))
    finally:
        ws.close()
    run_frames = [f for f in frames if f["type"] != "notification"]
    assert [f["seq"] for f in run_frames] == list(range(1, len(run_frames) + 1))
    assert run_frames[0] == {"type": "stream_start", "seq": 1, "session_id": session_id}
    streamed = "".join(f["text"] for f in run_frames[1:-1] if f["type"] == "text_delta")
    assert streamed and STREAM_TEXT.startswith(streamed) and streamed != STREAM_TEXT
    end = run_frames[-1]
    assert (end["session_id"], end["is_error"], end["errors"]) == (session_id, True, [INTERRUPTED])
    assert not running_runs(crash["home"])


def test_a_client_ahead_of_the_store_still_gets_the_interrupted_end(crash):
    """Frames reach a run's clients before the batch writer stores them: a client that saw frames
    the kill lost resumes after a seq beyond the stored end and still gets that end, after its seq."""
    server, session_id = crash["server"], crash["session_id"]
    seen = stored_run_frames(crash["home"], session_id) + 100
    ws = websocket.create_connection(f"{server.ws_url}/ws?token={crash['key']}", timeout=CLOSE_SECS)
    try:
        ws.send(json.dumps({"type": "resume", "session_id": session_id, "after_seq": seen}))
        frame = json.loads(ws.recv())
        while frame["type"] == "notification":
            frame = json.loads(ws.recv())
    finally:
        ws.close()
    assert (frame["type"], frame["seq"], frame["is_error"], frame["errors"]) == ("stream_end", seen + 1, True, [INTERRUPTED])


def test_instance_paused_mid_crash_runs_as_recorded(crash):
    server, key = crash["server"], crash["key"]
    instance_id, status, pid, port = instance_row(crash["home"])
    assert status == "running"  # the pause never recorded: so its server must run, not stay frozen
    assert crash["server"].get(f"/api/instances/{instance_id}", key).json()["status"] == "running"
    wait_until(lambda: not frozen(pid), "the instance's server to be resumed")
    assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=DEADLINE_SECS).status_code == 200
    for action, expected in (("pause", "paused"), ("restart", "running")):  # its lock is free again
        response = server.request("POST", f"/api/instances/{instance_id}/{action}", key)
        assert response.status_code == 200, response.text
        assert server.get(f"/api/instances/{instance_id}", key).json()["status"] == expected
    assert server.request("DELETE", f"/api/instances/{instance_id}", key).status_code == 204


def test_no_lock_is_left_blocking(crash):
    server, key = crash["server"], crash["key"]
    response = server.request("PUT", "/api/settings/general", key, json={**crash["general"], "max_turns": 7})
    assert response.status_code == 200, response.text
    assert server.get("/api/settings/general", key).json()["max_turns"] == 7
    reindexed = server.request("POST", "/api/memory/reindex", key)
    assert reindexed.status_code == 200, reindexed.text
    assert reindexed.json()["files"] >= BULK_FILES
    hits = server.get("/api/memory/search", key, params={"q": f"crashproof{BULK_FILES - 1}"}).json()
    assert any(hit["source"].endswith(f"note-{BULK_FILES - 1}.md") for hit in hits), hits
