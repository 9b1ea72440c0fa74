"""Revocation on a real 2-worker gunicorn server: open WebSockets lose their rights with their key
or user (real sockets), and a revoke reaches every worker even when the generation hint file
cannot be written."""
from __future__ import annotations

import shutil
import struct
import time

import pytest
import requests
import websocket

from .support import LiveServer
from .test_auth_live import ACCESS_LOG, served
from .test_ws_live import send, until_end, worker_of

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ADMIN_KEY = "sp_live_" + "9a" * 20
UNAUTHORIZED = 4401


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("revocation") / "home"
    live = LiveServer(home, workers=2, env={**fake.environ(), "STARPOD_API_KEY": ADMIN_KEY, **ACCESS_LOG}).start()
    yield live
    live.stop()


@pytest.fixture(autouse=True)
def fresh_script(fake):
    fake.reset()
    yield


def new_user(server, role: str) -> tuple[str, str, str]:
    """(user id, key, key id) of a new user with one key."""
    user, issued = server.create_user(ADMIN_KEY, role=role)
    return user["id"], issued["key"], issued["meta"]["id"]


def sockets_on_both_workers(server, key: str, limit: int = 60) -> list:
    """One open socket authenticated with `key` on each worker."""
    by_worker: dict[int, websocket.WebSocket] = {}
    for _ in range(limit):
        ws = websocket.create_connection(f"{server.ws_url}/ws?token={key}", timeout=30)
        pid = worker_of(server, ws)
        if pid in by_worker:
            ws.close()
        else:
            by_worker[pid] = ws
        if len(by_worker) == 2:
            return list(by_worker.values())
    raise AssertionError("the kernel gave every connection to one worker")


def close_code(ws, timeout: float = 30.0) -> int:
    """The status code of the close frame the server sends next (pings and data are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", frame.data[:2])[0]
    raise AssertionError(f"no close frame within {timeout} s")


def offered_tools(recorded) -> set[str]:
    return {t.get("name") or t["function"]["name"] for t in recorded.body.get("tools", [])}


def chat_works(ws) -> None:
    send(ws, type="message", text="hello")
    assert until_end(ws)[-1]["type"] == "stream_end"


@pytest.mark.parametrize("take_away", ["revoke", "deactivate"])
def test_open_sockets_are_closed_once_their_key_or_user_loses_access(server, take_away):
    user_id, key, key_id = new_user(server, "admin")
    sockets = sockets_on_both_workers(server, key)
    for ws in sockets:
        chat_works(ws)
    path = (f"/api/settings/auth/api-keys/{key_id}/revoke" if take_away == "revoke"
            else f"/api/settings/auth/users/{user_id}/deactivate")
    assert server.request("POST", path, ADMIN_KEY).status_code == 200
    for ws in sockets:
        send(ws, type="message", text="run Bash as admin")
        assert close_code(ws) == UNAUTHORIZED
        ws.close()


def test_a_demoted_users_next_message_runs_with_user_rights(server, fake):
    user_id, key, _ = new_user(server, "admin")
    ws = websocket.create_connection(f"{server.ws_url}/ws?token={key}", timeout=30)
    chat_works(ws)
    assert "Bash" in offered_tools(fake.requests[-1])
    demoted = server.request("PUT", f"/api/settings/auth/users/{user_id}", ADMIN_KEY, json={"role": "user"})
    assert demoted.status_code == 200
    chat_works(ws)
    assert "Bash" not in offered_tools(fake.requests[-1])
    ws.close()


def test_revoke_reaches_every_worker_when_the_hint_file_cannot_be_written(server):
    _, key, key_id = new_user(server, "user")
    path = "/api/sessions"
    for _ in range(200):  # fresh connections until both workers have cached the key
        assert requests.get(server.base_url + path, headers={"X-API-Key": key}, timeout=30).status_code == 200
        if len(served(server, path, 200)) == 2:
            break
    assert len(served(server, path, 200)) == 2

    hint = server.home / "db" / "auth.generation"
    hint.unlink(missing_ok=True)
    hint.mkdir()  # no process can replace it now
    (hint / "keep").write_text("")
    try:
        revoked = server.request("POST", f"/api/settings/auth/api-keys/{key_id}/revoke", ADMIN_KEY)
        assert (revoked.status_code, revoked.json()) == (200, {"status": "ok"})
        deadline = time.monotonic() + 30
        while len(served(server, path, 401)) < 2:
            assert time.monotonic() < deadline, "a worker still accepts the revoked key"
            requests.get(server.base_url + path, headers={"X-API-Key": key}, timeout=30)
        for _ in range(20):
            assert requests.get(server.base_url + path, headers={"X-API-Key": key}, timeout=30).status_code == 401
    finally:
        shutil.rmtree(hint)
