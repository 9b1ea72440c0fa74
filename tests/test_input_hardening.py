"""Hostile and careless input against a real gunicorn server: deeply nested JSON, lone surrogates,
wrong content types, oversize and streamed bodies, `//` paths, chat text over the size cap,
unstarted WebSocket runs, and the data directory's permissions (issues #10 and #14)."""
from __future__ import annotations

import base64
import json
import os
import socket
import stat
from contextlib import contextmanager

import pytest
import requests
import websocket

from . import pgtest
from .fake_provider import Reply
from .support import LiveServer
from .test_ws_live import deltas, recv, send, until_end

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

DEEP = "[" * 100_000 + "]" * 100_000
SURROGATE = '"\\ud800"'  # a JSON string holding a lone surrogate
JSON = {"Content-Type": "application/json"}
NO_KEY_PROVIDER = "deepseek"


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("input") / "home"
    environ = {k: v for k, v in fake.environ().items() if k != "DEEPSEEK_API_KEY"}
    live = LiveServer(home, workers=1, env=environ).start()
    live.admin_key = live.generated_admin_key()
    yield live
    live.stop()


@pytest.fixture(autouse=True)
def fresh_script(fake):
    fake.reset()
    yield


@pytest.fixture(scope="module")
def user(server):
    """(user id, key) of a non-admin."""
    created, issued = server.create_user(server.admin_key, label="input")
    return created["id"], issued["key"]


def raw(server, method: str, path: str, body: str, key: str | None = None, headers: dict | None = None):
    return server.request(method, path, key or server.admin_key, data=body.encode(), headers={**JSON, **(headers or {})})


def connect(server, key=None):
    return websocket.create_connection(f"{server.ws_url}/ws?token={key or server.admin_key}", timeout=15)


def still_chats(ws, fake) -> None:
    fake.script(Reply("still here"))
    send(ws, type="message", text="ok?")
    assert deltas(until_end(ws)) == "still here"


@contextmanager
def agent_toml_edit(server, old: str, new: str):
    """Replace `old` by `new` in agent.toml for the block (the server reads it live), then restore it."""
    path = server.home / "config" / "agent.toml"
    original = path.read_text()
    assert old in original
    path.write_text(original.replace(old, new))
    try:
        yield
    finally:
        path.write_text(original)


# --- #10.8 deeply nested JSON and long attachment names ------------------------------------

@pytest.mark.parametrize("method, path", [
    ("POST", "/api/chat"), ("POST", "/api/settings/auth/users"), ("PUT", "/api/settings/general"),
    ("POST", "/api/instances"), ("POST", "/api/sessions/x/read"),
])
def test_deeply_nested_json_is_400_naming_the_body(server, method, path):
    response = raw(server, method, path, DEEP)
    assert response.status_code == 400, response.text
    assert response.json()["fields"] == {"body": ["nested deeper than 64 levels"]}
    assert "nested deeper" in response.json()["error"]


def test_nan_and_moderate_nesting(server):
    assert raw(server, "POST", "/api/chat", '{"text": NaN}').status_code == 400
    nested = '{"text": "hi", "extra": ' + "[" * 65 + "]" * 65 + "}"
    assert raw(server, "POST", "/api/chat", nested).status_code == 400


def test_deeply_nested_ws_frame_is_an_error_frame_and_the_socket_stays_usable(server, fake):
    ws = connect(server)
    ws.send(DEEP)
    error = recv(ws)
    assert error["type"] == "error" and "nested deeper than 64 levels" in error["message"]
    still_chats(ws, fake)
    ws.close()
    assert "RecursionError:" not in server.log_text()


def test_attachment_file_name_over_255_bytes_is_an_error_frame(server, fake):
    ws = connect(server)
    name = "\u00e9" * 128 + ".txt"  # 260 bytes of UTF-8, 132 characters
    send(ws, type="message", text="file", attachments=[
        {"file_name": name, "mime_type": "text/plain", "data": base64.b64encode(b"x").decode()}])
    error = recv(ws)
    assert error["type"] == "error" and "attachments.0.file_name" in error["message"]
    assert "255 bytes" in error["message"]
    still_chats(ws, fake)
    ws.close()


# --- #10.9 lone surrogates -----------------------------------------------------------------

@pytest.mark.parametrize("path, body, field", [
    ("/api/chat", '{"text": %s}' % SURROGATE, "text"),
    ("/api/chat", '{"text": "hi", "channel_session_key": %s}' % SURROGATE, "channel_session_key"),
    ("/api/settings/auth/users", '{"display_name": %s}' % SURROGATE, "display_name"),
    ("/api/settings/auth/users", '{"email": %s}' % SURROGATE, "email"),
    ("/api/instances", '{"name": %s}' % SURROGATE, "name"),
])
def test_lone_surrogates_are_422_naming_the_field(server, path, body, field):
    response = raw(server, "POST", path, body)
    assert response.status_code == 422, response.text
    assert list(response.json()["fields"]) == [field]


def test_lone_surrogates_in_key_label_telegram_and_user_update_are_422(server, user):
    user_id = user[0]
    for method, path, body, field in (
            ("POST", f"/api/settings/auth/users/{user_id}/api-keys", '{"label": %s}' % SURROGATE, "label"),
            ("PUT", f"/api/settings/auth/users/{user_id}/telegram", '{"telegram_id": 5, "username": %s}' % SURROGATE,
             "username"),
            ("PUT", f"/api/settings/auth/users/{user_id}", '{"display_name": %s}' % SURROGATE, "display_name")):
        response = raw(server, method, path, body)
        assert response.status_code == 422 and list(response.json()["fields"]) == [field], response.text


def test_failed_instance_create_leaves_no_directory(server):
    assert raw(server, "POST", "/api/instances", '{"name": %s}' % SURROGATE).status_code == 422
    instances = server.home / "instances"
    assert not instances.exists() or list(instances.iterdir()) == []


def test_instance_create_failing_before_its_record_removes_its_directory(app, client, home, admin_headers,
                                                                         monkeypatch):
    from starpod.instances import processes

    def no_port():
        raise OSError("no free port")
    monkeypatch.setattr(processes, "pick_free_port", no_port)
    assert client.post("/api/instances", json={"name": "x"}, headers=admin_headers).status_code == 500
    assert list((home / "instances").glob("*")) == []  # on PostgreSQL not even a lock file made the folder


def test_lone_surrogate_over_ws_is_an_error_frame_naming_the_field(server, fake):
    ws = connect(server)
    ws.send('{"type": "message", "text": %s}' % SURROGATE)
    error = recv(ws)
    assert error["type"] == "error" and error["message"].startswith("Invalid message format: text:")
    still_chats(ws, fake)
    ws.close()


# --- #14.6 JSON required, after auth -------------------------------------------------------

def test_non_json_content_type_is_415_after_auth(server):
    body = json.dumps({"text": "hi"})
    plain = {"Content-Type": "text/plain"}
    assert server.request("POST", "/api/chat", None, data=body, headers=plain).status_code == 401
    response = server.request("POST", "/api/chat", server.admin_key, data=body, headers=plain)
    assert response.status_code == 415 and response.json() == {"error": "Content-Type must be application/json"}
    form = server.request("POST", "/api/settings/auth/users", server.admin_key, data={"role": "user"})
    assert form.status_code == 415


def test_bodyless_post_still_takes_defaults(server, user):
    created = server.request("POST", f"/api/settings/auth/users/{user[0]}/api-keys", server.admin_key)
    assert created.status_code == 201 and created.json()["meta"]["label"] is None


# --- #10.15 framework errors are JSON ------------------------------------------------------

@pytest.mark.parametrize("path", ["/api//health", "/api/sessions//messages"])
def test_double_slash_paths_are_json_404(server, path):
    response = requests.get(f"{server.base_url}{path}", allow_redirects=False, timeout=30)
    assert response.status_code == 404 and response.json() == {"error": "Not found"}


def test_oversize_chunked_body_is_413(server):
    def chunks():
        for _ in range(33):
            yield b" " * (1024 * 1024)
    response = requests.post(f"{server.base_url}/api/chat", data=chunks(), timeout=60,
                             headers={"X-API-Key": server.admin_key, **JSON})
    assert response.status_code == 413 and response.json() == {"error": "Request body too large"}


# --- #10.17 chat text size cap -------------------------------------------------------------

def test_chat_text_over_the_cap_is_413_on_rest_and_an_error_frame_on_ws(server, fake):
    with agent_toml_edit(server, "max_message_bytes = 262144", "max_message_bytes = 1000"):
        response = server.request("POST", "/api/chat", server.admin_key, json={"text": "x" * 1001})
        assert response.status_code == 413 and list(response.json()["fields"]) == ["text"]
        fake.script(Reply("fits"))
        fitting = server.request("POST", "/api/chat", server.admin_key, json={"text": "\u00e9" * 500})
        assert fitting.status_code == 200, fitting.text
        ws = connect(server)
        send(ws, type="message", text="y" * 1001)
        error = recv(ws)
        assert error["type"] == "error" and "limit is 1000 bytes" in error["message"]
        ws.close()
    assert fake.requests and all("x" * 1001 not in json.dumps(r.body) for r in fake.requests)


def test_default_cap_is_256_kib(server, fake):
    fake.script(Reply("big"))
    assert server.request("POST", "/api/chat", server.admin_key, json={"text": "z" * 262144}).status_code == 200
    assert server.request("POST", "/api/chat", server.admin_key, json={"text": "z" * 262145}).status_code == 413


# --- #14.7 a WS message whose run cannot start keeps its text ------------------------------

@contextmanager
def provider_without_key(server):
    general = server.get("/api/settings/general", server.admin_key).json()
    changed = {**general, "provider": NO_KEY_PROVIDER, "model": "deepseek-chat"}
    assert server.request("PUT", "/api/settings/general", server.admin_key, json=changed).status_code == 200
    try:
        yield
    finally:
        server.request("PUT", "/api/settings/general", server.admin_key, json=general)


def test_unstarted_ws_run_stores_the_message_and_ends_with_the_reason(server, user):
    key = user[1]
    with provider_without_key(server):
        ws = connect(server, key)
        send(ws, type="message", text="what was asked", channel_session_key="unstarted")
        frames = until_end(ws)
        ws.close()
        assert [f["type"] for f in frames] == ["stream_start", "stream_end"]
        end = frames[-1]
        assert end["is_error"] is True and "DEEPSEEK_API_KEY" in end["errors"][0]
        session_id = frames[0]["session_id"]
        rows = server.get(f"/api/sessions/{session_id}/messages", key).json()
        assert [(r["role"], r["content"]) for r in rows] == [("user", "what was asked")]
        again = connect(server, key)  # a reload: resume replays why it failed
        send(again, type="resume", session_id=session_id)
        replayed = until_end(again)
        again.close()
        assert replayed[-1]["errors"] == end["errors"]


# --- #10.18 server-side errors: request id, no detail for non-admins -----------------------

def test_server_errors_hide_detail_from_non_admins(client, make_user, monkeypatch, caplog):
    from starpod.api.memory import routes as memory_routes
    from starpod.configfile import ConfigFileError

    def broken_store():
        raise ConfigFileError("Failed to read /srv/secret/agent.toml: disk on fire")
    monkeypatch.setattr(memory_routes, "memory_store", broken_store)
    _, admin_key = make_user("admin")
    _, user_key = make_user("user")
    for_user = client.post("/api/memory/reindex", headers={"X-API-Key": user_key})
    assert for_user.status_code == 500
    assert for_user.json["error"] == "Internal server error" and "/srv/secret" not in for_user.text
    assert f"request {for_user.json['request_id']}" in caplog.text and "/srv/secret" in caplog.text
    for_admin = client.post("/api/memory/reindex", headers={"X-API-Key": admin_key})
    assert for_admin.status_code == 500 and "/srv/secret" in for_admin.json["error"]
    assert for_admin.json["request_id"] != for_user.json["request_id"]
    unauthenticated = client.post("/api/memory/reindex")
    assert unauthenticated.status_code == 401 and "request_id" not in unauthenticated.json


# --- #10.11 private data directory ---------------------------------------------------------

def assert_private(home) -> None:
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_data_directory_is_private_at_start_and_after_new_files(server, fake, user):
    assert_private(server.home)
    if not pgtest.requested():  # on PostgreSQL no database file lives in the data directory
        assert stat.S_IMODE(os.stat(server.home / "db" / "starpod.db").st_mode) == 0o600
    assert server.request("PUT", "/api/settings/frontend", server.admin_key,
                          json={"greeting": "hi", "prompts": []}).status_code == 200
    fake.script(Reply("noted"))
    assert server.request("POST", "/api/chat", user[1], json={"text": "remember this"}).status_code == 200
    ws = connect(server)
    send(ws, type="message", text="file", attachments=[
        {"file_name": "n.txt", "mime_type": "text/plain", "data": base64.b64encode(b"secret").decode()}])
    assert until_end(ws)[-1]["errors"] == []
    ws.close()
    uploads = [p for p in server.home.rglob("*_n.txt")]
    assert uploads and stat.S_IMODE(os.stat(uploads[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.home / "config" / "frontend.toml").st_mode) == 0o600
    assert list((server.home / "users" / user[0]).rglob("*.md"))
    assert_private(server.home)


def test_max_message_bytes_must_be_positive_in_agent_toml():
    from starpod.config import ConfigError, parse_agent_config

    assert parse_agent_config("[limits]\nmax_message_bytes = 10\n").limits.max_message_bytes == 10
    with pytest.raises(ConfigError, match="limits.max_message_bytes: must be >= 1"):
        parse_agent_config("[limits]\nmax_message_bytes = 0\n")


def test_errors_the_http_server_answers_itself_are_json(server):
    """gunicorn refuses an overlong request line (414) and oversized headers (431) before the app."""
    for request, status in ((f"GET /api/health?{'q' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n", 414),
                            (f"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {'h' * 9000}\r\n\r\n", 431)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(request.encode("ascii"))
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:  # the server closed with part of the request unread
                pass
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()) and b"Content-Type: application/json" in head
        assert "error" in json.loads(body)
