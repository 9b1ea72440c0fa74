"""/ws against a real gunicorn (gevent, 2 workers) and the fake provider: streaming, tools,
follow-ups, attachments, bad frames, auth, resume on another worker, stopping a reply from either
worker (and over REST), notification fan-out."""
from __future__ import annotations

import base64
import gc
import json
import re
import socket
import time
import weakref
from contextlib import contextmanager
from types import SimpleNamespace
from urllib.parse import urlsplit

import psutil
import pytest
import requests
import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from starpod.agent.stopping import STOPPED, TOOL_STOPPED
from starpod.api.ws.connection import Connection, WholeFrameSocket
from starpod.db import database, open_database
from starpod.config import Config
from starpod.notify import notify

from . import pgtest
from .conftest import make_config
from .fake_provider import Reply, ToolCall
from .support import LiveServer, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("ws") / "home"
    # Pings well apart: simple-websocket closes a socket whose pong it has not read by the next
    # ping, which a worker stalled for seconds on a loaded test machine can miss.
    live = LiveServer(home, workers=2, env=fake.environ(STARPOD_WS_PING_SECS="10")).start()
    live.admin_key = live.generated_admin_key()
    yield live
    live.stop()


@pytest.fixture(autouse=True)
def fresh_script(fake):
    fake.reset()
    yield


@pytest.fixture(scope="module")
def user_key(server):
    return server.create_user(server.admin_key, label="ws")[1]["key"]


# --- helpers -------------------------------------------------------------------------------

def connect(server, key=None):
    ws = websocket.create_connection(f"{server.ws_url}/ws?token={key or server.admin_key}", timeout=15)
    return ws


def send(ws, **frame):
    ws.send(json.dumps(frame))


def recv(ws) -> dict:
    return json.loads(ws.recv())


def until_end(ws, first: list | None = None, timeout: float = 30.0) -> list[dict]:
    """Frames up to and including the next stream_end (or a lone error).

    The socket timeout alone cannot bound this: server pings keep a silent socket alive.
    """
    frames = list(first or [])
    deadline = time.monotonic() + timeout
    while not frames or frames[-1]["type"] not in ("stream_end", "error"):
        assert time.monotonic() < deadline, f"no stream_end within {timeout} s: {frames}"
        frames.append(recv(ws))
    return frames


def deltas(frames) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "text_delta")


def worker_of(server, ws) -> int:
    """pid of the gunicorn worker holding the server side of this client socket."""
    port = ws.sock.getsockname()[1]
    for worker in psutil.Process(server.process.pid).children():
        if any(c.raddr and c.raddr.port == port for c in worker.net_connections(kind="tcp")):
            return worker.pid
    raise AssertionError("no worker holds this connection")


def connections_on_both_workers(server, count=6, limit=60):
    """At least `count` open sockets spread over both workers: {pid: [ws, ...]}."""
    by_worker: dict[int, list] = {}
    opened = 0
    while opened < limit and (len(by_worker) < 2 or sum(map(len, by_worker.values())) < count):
        ws = connect(server)
        by_worker.setdefault(worker_of(server, ws), []).append(ws)
        opened += 1
    assert len(by_worker) == 2, "the kernel gave every connection to one worker"
    return by_worker


def messages(server, session_id):
    return server.get(f"/api/sessions/{session_id}/messages", server.admin_key).json()


@contextmanager
def agent_toml(server, **replacements):
    """agent.toml with `key = old` lines replaced (every worker re-reads it), restored afterwards."""
    path = server.home / "config" / "agent.toml"
    original = path.read_text()
    edited = original
    for key, value in replacements.items():
        edited, count = re.subn(rf"^{key} = .*?(\s+#.*)?$", f"{key} = {value}", edited, flags=re.M)
        assert count == 1, key
    path.write_text(edited)
    try:
        yield
    finally:
        path.write_text(original)


# --- handshake -----------------------------------------------------------------------------

@pytest.mark.parametrize("query, message", [("", "Missing token parameter"), ("?token=sp_live_nope", "Invalid token"),
                                            ("?token=", "Invalid token")])
def test_handshake_without_valid_token_is_401_json(server, query, message):
    with pytest.raises(websocket.WebSocketBadStatusException) as failure:
        websocket.create_connection(f"{server.ws_url}/ws{query}", timeout=10)
    assert failure.value.status_code == 401
    assert json.loads(failure.value.resp_body) == {"error": message}


def test_plain_get_is_rejected_before_auth(server):
    response = requests.get(f"{server.base_url}/ws", timeout=10)
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


# --- streaming -----------------------------------------------------------------------------

def test_stream_events_in_order_with_seq_and_stored_reply(server, fake):
    text = "The quick brown fox jumps over the lazy dog."
    fake.script(Reply(text, chunks=7))
    ws = connect(server)
    send(ws, type="message", text="tell me")
    frames = until_end(ws)
    ws.close()
    assert [f["type"] for f in frames] == ["stream_start"] + ["text_delta"] * 7 + ["stream_end"]
    assert [f["seq"] for f in frames] == list(range(1, 10))
    assert deltas(frames) == text
    end = frames[-1]
    assert end["errors"] == [] and end["is_error"] is False and end["text"] == text
    assert end["session_id"] == frames[0]["session_id"]
    # the assistant row was stored before stream_end went out
    rows = messages(server, end["session_id"])
    assert [(r["role"], r["content"]) for r in rows] == [("user", "tell me"), ("assistant", text)]
    assert fake.requests[0].body["stream"] is True


def test_long_frames_arrive_whole(server, fake):
    # 10,000-byte deltas take a 16-bit frame length, the 70,000-byte stream_end a 64-bit one
    text = "".join(chr(ord("a") + i % 26) for i in range(70_000))
    fake.script(Reply(text, chunks=7))
    ws = connect(server)
    send(ws, type="message", text="a long one")
    frames = until_end(ws)
    ws.close()
    assert deltas(frames) == text and frames[-1]["text"] == text


def test_client_reading_late_gets_every_frame_whole_and_in_order(server, fake):
    # 6 MB of deltas to a client that reads nothing more until the reply is stored: the server's
    # socket fills up, so frames go out partly at once and partly later, and the relay takes over
    text = "".join(chr(ord("a") + i % 26) for i in range(6_000_000))
    fake.script(Reply(text, chunks=60))
    ws = websocket.create_connection(f"{server.ws_url}/ws?token={server.admin_key}", timeout=15,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    send(ws, type="message", text="flood me")
    start = recv(ws)
    wait_until(lambda: [r for r in messages(server, start["session_id"]) if r["role"] == "assistant"],
               "the reply stored")
    frames = until_end(ws, [start])
    ws.close()
    assert [f["seq"] for f in frames] == list(range(1, 63))
    assert deltas(frames) == text and frames[-1]["text"] == text


def deflate_frames(server, text: str) -> tuple[list, list[dict]]:
    """Send `text` from a client that offers permessage-deflate (wsproto over a plain socket);
    the extensions the server accepted and every frame up to the stream_end."""
    address = urlsplit(server.ws_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=15)
    client = WSConnection(ConnectionType.CLIENT)
    sock.sendall(client.send(Request(host=address.netloc, target=f"/ws?token={server.admin_key}",
                                     extensions=[PerMessageDeflate()])))
    accepted, frames, partial = None, [], ""
    deadline = time.monotonic() + 30
    while not frames or frames[-1]["type"] not in ("stream_end", "error"):
        assert time.monotonic() < deadline, frames
        client.receive_data(sock.recv(65536))
        for event in client.events():
            if isinstance(event, AcceptConnection):
                accepted = event.extensions
                sock.sendall(client.send(TextMessage(data=json.dumps({"type": "message", "text": text}))))
            elif isinstance(event, TextMessage):
                partial += event.data
                if event.message_finished:
                    frames.append(json.loads(partial))
                    partial = ""
    sock.close()
    return accepted, frames


def test_permessage_deflate_client_gets_the_stream_compressed(server, fake):
    text = "Compressed, " * 40
    fake.script(Reply(text, chunks=5))
    accepted, frames = deflate_frames(server, "squeeze it")
    assert [type(extension) for extension in accepted] == [PerMessageDeflate]
    assert [f["seq"] for f in frames] == list(range(1, 8))
    assert deltas(frames) == text and frames[-1]["text"] == text


def test_tool_events(server, fake):
    call = ToolCall("FileList", {"path": "."}, id="toolu_ws_1")
    fake.script(Reply(tool_calls=[call]), Reply("listed", chunks=2))
    ws = connect(server)
    send(ws, type="message", text="list files")
    frames = until_end(ws)
    ws.close()
    kinds = [f["type"] for f in frames]
    assert kinds == ["stream_start", "tool_use", "tool_result", "text_delta", "text_delta", "stream_end"]
    assert frames[1]["id"] == "toolu_ws_1" and frames[1]["name"] == "FileList" and frames[1]["input"] == {"path": "."}
    assert frames[2]["tool_use_id"] == "toolu_ws_1" and frames[2]["is_error"] is False
    assert frames[-1]["num_turns"] == 1
    roles = [r["role"] for r in messages(server, frames[0]["session_id"])]
    assert roles == ["user", "tool_use", "tool_result", "assistant"]


def test_provider_failure_ends_stream_with_errors(server, fake):
    from .fake_provider import Failure
    fake.script(Failure(400, "bad request from fake"))
    ws = connect(server)
    send(ws, type="message", text="fail please")
    frames = until_end(ws)
    ws.close()
    end = frames[-1]
    assert end["type"] == "stream_end" and end["is_error"] is True
    assert end["errors"] and end["errors"][0].startswith("API error")


# --- bad frames ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw, detail", [
    ("not json", "Invalid message format: "),
    ("[1, 2]", "expected a JSON object"),
    ('{"text": "hi"}', "missing field 'type'"),
    ('{"type": "shout", "text": "hi"}', "unknown type 'shout'"),
    ('{"type": "message"}', "text"),
    ('{"type": "message", "text": 5}', "text"),
    ('{"type": "message", "text": "x", "attachments": "nope"}', "attachments"),
    ('{"type": "message", "text": "x", "attachments": [{"file_name": "a.txt"}]}', "attachments.0.data"),
    ('{"type": "resume", "session_id": "s", "after_seq": -1}', "after_seq"),
    ('{"type": "resume", "after_seq": 1}', "session_id"),
    ('{"type": "stop", "session_id": 5}', "session_id"),
])
def test_malformed_frames_get_an_error_and_the_socket_stays_open(server, fake, raw, detail):
    ws = connect(server)
    ws.send_binary(b"\x00binary frames are ignored")
    ws.send(raw)
    error = recv(ws)
    assert error["type"] == "error"
    assert error["message"].startswith("Invalid message format: ") and detail in error["message"]
    fake.script(Reply("still here"))
    send(ws, type="message", text="ok?")
    assert deltas(until_end(ws)) == "still here"
    ws.close()


def test_resume_of_unknown_or_foreign_session_is_an_error(server, fake, user_key):
    ws = connect(server)
    send(ws, type="message", text="mine")
    session_id = until_end(ws)[0]["session_id"]
    ws.close()
    other = connect(server, user_key)
    send(other, type="resume", session_id=session_id, after_seq=0)
    assert recv(other) == {"type": "error", "message": f"No run to resume for session '{session_id}'"}
    send(other, type="resume", session_id="no-such-session")
    assert recv(other)["type"] == "error"
    other.close()


# --- attachments ---------------------------------------------------------------------------

def user_id_of(server, key) -> str:
    return server.get("/api/auth/verify", key).json()["user"]["id"]


def test_attachments_saved_noted_and_image_sent_to_the_model(server, fake):
    fake.script(Reply("seen"))
    ws = connect(server)
    send(ws, type="message", text="look", attachments=[
        {"file_name": "notes.txt", "mime_type": "text/plain", "data": base64.b64encode(b"hello file").decode()},
        {"file_name": "../../pic.png", "mime_type": "image/png", "data": PNG},
    ])
    frames = until_end(ws)
    ws.close()
    assert frames[-1]["errors"] == []
    admin_dir = f"users/{user_id_of(server, server.admin_key)}"
    downloads = server.home / "workspace" / admin_dir / "downloads"
    saved = {p.name: p for p in downloads.iterdir()}
    text_file = next(p for name, p in saved.items() if name.endswith("_notes.txt"))
    assert text_file.read_bytes() == b"hello file"
    assert any(name.endswith("_pic.png") and "/" not in name and ".." not in name for name in saved)
    content = fake.requests[0].body["messages"][-1]["content"]
    images = [block for block in content if block["type"] == "image"]
    assert len(images) == 1 and images[0]["source"]["media_type"] == "image/png"
    assert images[0]["source"]["data"] == PNG
    prompt = next(block["text"] for block in content if block["type"] == "text")
    assert prompt.startswith("look")
    assert re.search(rf"\[Uploaded file: notes\.txt \(text/plain\) saved to: {admin_dir}/downloads/\d{{8}}_\d{{6}}_notes\.txt\]",
                     prompt)
    assert "[Uploaded image: ../../pic.png (image/png)" in prompt
    assert "[Files already in downloads/: " in prompt
    # the stored user row is the text without the notes
    assert messages(server, frames[0]["session_id"])[0]["content"] == "look"


def test_uploads_are_private_to_their_sender(server, fake, user_key):
    fake.script(Reply("mine"), Reply("theirs"))
    for key, name in ((user_key, "user-secret.txt"), (server.admin_key, "admin-note.txt")):
        ws = connect(server, key)
        send(ws, type="message", text="keep this", channel_session_key=f"up-{name}",
             attachments=[{"file_name": name, "mime_type": "text/plain", "data": base64.b64encode(b"x").decode()}])
        assert until_end(ws)[-1]["errors"] == []
        ws.close()
    user_prompt, admin_prompt = (next(b["text"] for b in r.body["messages"][-1]["content"] if b["type"] == "text")
                                 for r in fake.requests)
    user_dir = server.home / "workspace" / "users" / user_id_of(server, user_key)
    assert [p.name.endswith("_user-secret.txt") for p in (user_dir / "downloads").iterdir()] == [True]
    assert re.search(r"saved to: downloads/\d{8}_\d{6}_user-secret\.txt\]", user_prompt)
    assert "admin-note" not in user_prompt and "notes.txt" not in user_prompt
    assert "user-secret" not in admin_prompt
    assert str(user_dir / "downloads") in fake.requests[0].body["system"][0]["text"]


@pytest.mark.parametrize("attachment, message", [
    ({"file_name": "run.exe", "mime_type": "application/octet-stream", "data": "AAAA"},
     "File extension 'exe' is not allowed (allowed: txt, png)"),
    ({"file_name": "big.txt", "mime_type": "text/plain", "data": base64.b64encode(b"x" * 2000).decode()},
     "File 'big.txt' exceeds 0.0 MB limit (0.0 MB)"),
    ({"file_name": "bad.txt", "mime_type": "text/plain", "data": "***"}, "File 'bad.txt' is not valid base64"),
])
def test_invalid_attachment_rejects_the_whole_message(server, fake, attachment, message):
    with agent_toml(server, allowed_extensions='["txt", "png"]', max_file_size="1000"):
        ws = connect(server)
        good = {"file_name": "ok.txt", "mime_type": "text/plain", "data": "b2s="}
        send(ws, type="message", text="with file", attachments=[good, attachment])
        assert recv(ws) == {"type": "error", "message": message}
        fake.script(Reply("next"))
        send(ws, type="message", text="no file")
        frames = until_end(ws)
        assert frames[0]["type"] == "stream_start" and deltas(frames) == "next"
        assert len(fake.requests) == 1  # the rejected message never reached the model
        ws.close()


def test_message_larger_than_the_limit_closes_the_socket(server):
    with agent_toml(server, max_file_size="1000"):
        ws = connect(server)
    send(ws, type="message", text="x" * (2 * 1024 * 1024))
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(5):
            ws.recv()


# --- follow-ups ----------------------------------------------------------------------------

def user_texts(request) -> list[str]:
    texts = []
    for message in request.body["messages"]:
        if message["role"] == "user":
            content = message["content"]
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            texts += [b["text"] for b in blocks if b.get("type") == "text"]
    return texts


def test_inject_followup_reaches_the_next_model_call_and_is_stored(server, fake):
    fake.script(Reply(tool_calls=[ToolCall("FileList", {"path": "."})], delay=1.0), Reply("both handled"))
    ws = connect(server)
    send(ws, type="message", text="first task")
    start = recv(ws)
    send(ws, type="message", text="and also this")
    frames = until_end(ws, [start])
    assert [f["type"] for f in frames].count("stream_start") == 1
    assert "and also this" in user_texts(fake.requests[1])
    rows = messages(server, start["session_id"])
    assert [r["content"] for r in rows if r["role"] == "user"] == ["first task", "and also this"]
    ws.close()


def test_late_inject_followup_starts_a_new_stream_of_the_same_run(server, fake):
    fake.script(Reply("first answer", delay=1.0), Reply("late answer"))
    ws = connect(server)
    send(ws, type="message", text="question")
    start = recv(ws)
    send(ws, type="message", text="too late to inject")
    first = until_end(ws, [start])
    second = until_end(ws)
    ws.close()
    assert deltas(first) == "first answer" and deltas(second) == "late answer"
    assert second[0]["type"] == "stream_start" and second[0]["seq"] == first[-1]["seq"] + 1
    assert user_texts(fake.requests[1])[-1] == "too late to inject"


def test_queue_mode_runs_queued_messages_as_one_batch(server, fake):
    with agent_toml(server, followup_mode='"queue"'):
        ws = connect(server)  # the mode is read once, at connect time
    fake.script(Reply(tool_calls=[ToolCall("FileList", {"path": "."})], delay=1.0), Reply("one"),
                Reply("batch"))
    send(ws, type="message", text="start")
    start = recv(ws)
    send(ws, type="message", text="q1")
    send(ws, type="message", text="q2")
    first = until_end(ws, [start])
    second = until_end(ws)
    ws.close()
    assert deltas(first) == "one" and deltas(second) == "batch"
    assert "q1" not in user_texts(fake.requests[1])  # queued, not injected
    assert user_texts(fake.requests[2])[-1] == "q1\n\nq2"
    rows = messages(server, second[0]["session_id"])
    assert [r["content"] for r in rows if r["role"] == "user"][-1] == "q1\n\nq2"


# --- runs outlive sockets ------------------------------------------------------------------

def test_disconnect_mid_run_then_resume_on_the_other_worker(server, fake):
    text = "".join(f"<{i:03d}>" for i in range(60))
    fake.script(Reply(text, chunks=60, chunk_delay=0.03))
    by_worker = connections_on_both_workers(server, count=2)
    (worker_a, sockets_a), (worker_b, sockets_b) = by_worker.items()
    first = sockets_a[0]
    send(first, type="message", text="long story")
    seen = [recv(first) for _ in range(6)]
    first.close()  # drop mid-run
    after_seq = seen[-1]["seq"]
    resumed = sockets_b[0]
    assert worker_of(server, resumed) != worker_a
    send(resumed, type="resume", session_id=seen[0]["session_id"], after_seq=after_seq)
    rest = until_end(resumed)
    assert [f["seq"] for f in rest] == list(range(after_seq + 1, after_seq + 1 + len(rest)))
    assert deltas(seen + rest) == text
    assert rest[-1]["type"] == "stream_end" and rest[-1]["errors"] == []
    # after the run, a full replay from the start is still available (from the database)
    send(resumed, type="resume", session_id=seen[0]["session_id"], after_seq=0)
    replay = until_end(resumed)
    assert [f["seq"] for f in replay] == list(range(1, rest[-1]["seq"] + 1))
    assert deltas(replay) == text
    for sockets in by_worker.values():
        for ws in sockets:
            ws.close()
    assert messages(server, seen[0]["session_id"])[-1]["content"] == text


def test_resume_on_the_other_worker_right_after_stream_start(server, fake):
    """stream_start is stored before it is sent: a client holding it finds the run from any worker."""
    fake.script(Reply("abcdef", chunks=6, chunk_delay=0.05))
    by_worker = connections_on_both_workers(server, count=2)
    (_, sockets_a), (_, sockets_b) = by_worker.items()
    send(sockets_a[0], type="message", text="quick")
    start = recv(sockets_a[0])
    assert start["type"] == "stream_start"
    send(sockets_b[0], type="resume", session_id=start["session_id"], after_seq=1)
    rest = until_end(sockets_b[0])
    assert [f["seq"] for f in rest] == list(range(2, 2 + len(rest)))
    assert deltas(rest) == "abcdef" and rest[-1]["type"] == "stream_end"
    for sockets in by_worker.values():
        for ws in sockets:
            ws.close()


def test_run_continues_and_is_stored_when_nobody_listens(server, fake):
    fake.script(Reply("unattended reply", chunks=5, chunk_delay=0.05))
    ws = connect(server)
    send(ws, type="message", text="fire and forget")
    session_id = recv(ws)["session_id"]
    ws.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = messages(server, session_id)
        if rows[-1]["role"] == "assistant":
            break
        time.sleep(0.1)
    assert rows[-1]["content"] == "unattended reply"


# --- stopping a reply ----------------------------------------------------------------------

SLOW_TEXT = "".join(f"<{i:03d}>" for i in range(200))


def slow_reply() -> Reply:
    """A reply that would stream for 20 s: every test stops it long before."""
    return Reply(SLOW_TEXT, chunks=200, chunk_delay=0.1)


def frames_until(ws, kind: str, count: int = 1) -> list[dict]:
    """Frames up to and including the `count`-th of type `kind`."""
    frames: list[dict] = []
    while sum(f["type"] == kind for f in frames) < count:
        frames.append(recv(ws))
    return frames


def assert_stopped_and_kept(server, session_id: str, streamed: str, end: dict) -> None:
    assert end["type"] == "stream_end" and end["session_id"] == session_id
    assert end["is_error"] is True and end["errors"] == [STOPPED]
    assert streamed and SLOW_TEXT.startswith(streamed) and len(streamed) < len(SLOW_TEXT)
    assert end["text"] == streamed
    rows = messages(server, session_id)
    assert [(r["role"], r["content"]) for r in rows] == [("user", "tell a long story"), ("assistant", streamed)]


@pytest.mark.parametrize("stopper", ["starting socket", "follower on the other worker"])
def test_stop_ends_the_run_on_every_socket_and_keeps_the_partial_reply(server, fake, stopper):
    fake.script(slow_reply(), Reply("the next answer"))
    by_worker = connections_on_both_workers(server, count=2)
    (_, sockets_a), (_, sockets_b) = by_worker.items()
    starter, follower = sockets_a[0], sockets_b[0]
    send(starter, type="message", text="tell a long story")
    seen = frames_until(starter, "text_delta", 3)
    session_id = seen[0]["session_id"]
    send(follower, type="resume", session_id=session_id, after_seq=0)
    followed = frames_until(follower, "text_delta", 3)
    send(starter if stopper == "starting socket" else follower, type="stop")
    seen, followed = until_end(starter, seen), until_end(follower, followed)
    assert seen == followed  # the same frames, the same end, on both workers
    assert [f["seq"] for f in seen] == list(range(1, len(seen) + 1))
    assert_stopped_and_kept(server, session_id, deltas(seen), seen[-1])
    late = connect(server)  # a resume after the end replays the same stopped stream from the database
    send(late, type="resume", session_id=session_id, after_seq=0)
    assert until_end(late) == seen
    late.close()
    # a late stop has nothing left to stop, and the session goes on with the next message
    send(follower, type="stop")
    send(starter, type="message", text="and now?", channel_session_key=server.get(
        f"/api/sessions/{session_id}", server.admin_key).json()["channel_session_key"])
    answer = until_end(starter)
    assert deltas(answer) == "the next answer" and answer[0]["session_id"] == session_id
    # the model saw the cut reply as its own turn
    assert fake.requests[-1].body["messages"][-2]["content"][0]["text"] == deltas(seen)
    for sockets in by_worker.values():
        for ws in sockets:
            ws.close()


def test_stop_before_the_first_delta_cuts_the_provider_call_and_keeps_the_question(server, fake):
    fake.script(Reply("an answer that comes too late", delay=120))
    ws = connect(server)
    send(ws, type="message", text="are you there?")
    start = recv(ws)
    wait_until(lambda: fake.requests, "the provider call to start", timeout=30)
    send(ws, type="stop")
    frames = until_end(ws, [start])
    ws.close()
    assert [f["type"] for f in frames] == ["stream_start", "stream_end"]
    assert frames[-1]["errors"] == [STOPPED] and frames[-1]["text"] == ""
    rows = messages(server, start["session_id"])
    assert [(r["role"], r["content"]) for r in rows] == [("user", "are you there?")]


def test_stop_cuts_a_running_tool_and_kills_its_process(server, fake):
    marker = f"stopme{time.monotonic_ns()}"
    fake.script(Reply(tool_calls=[ToolCall("Bash", {"command": f"sleep 300; echo {marker}"}, id="toolu_stop")]),
                Reply("never asked"))
    ws = connect(server)
    send(ws, type="message", text="run something slow")
    frames = frames_until(ws, "tool_use")

    def sleeper_running():
        return any(marker in " ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"]))

    wait_until(sleeper_running, "the tool's process to start", timeout=30)
    send(ws, type="stop", session_id=frames[0]["session_id"])
    frames = until_end(ws, frames)
    ws.close()
    result = next(f for f in frames if f["type"] == "tool_result")
    assert result["tool_use_id"] == "toolu_stop" and result["is_error"] is True
    assert result["content"] == TOOL_STOPPED
    assert frames[-1]["errors"] == [STOPPED] and frames[-1]["num_turns"] == 1
    wait_until(lambda: not sleeper_running(), "the tool's process to be killed", timeout=30)
    assert fake.pending == 1  # the model was not called again after the stop


def test_stop_over_rest_and_only_by_the_owner_or_an_admin(server, fake, user_key):
    fake.script(slow_reply())
    ws = connect(server)
    send(ws, type="message", text="tell a long story")
    seen = frames_until(ws, "text_delta", 2)
    session_id = seen[0]["session_id"]
    other = connect(server, user_key)
    send(other, type="stop", session_id=session_id)
    assert recv(other) == {"type": "error", "message": f"No reply is streaming in session '{session_id}'"}
    send(other, type="stop")
    assert recv(other) == {"type": "error", "message": "No reply is streaming on this connection"}
    other.close()
    refused = server.request("POST", f"/api/sessions/{session_id}/stop", user_key)
    assert refused.status_code == 404
    seen.append(recv(ws))
    assert seen[-1]["type"] == "text_delta"  # still streaming
    stopped = server.request("POST", f"/api/sessions/{session_id}/stop", server.admin_key)
    assert stopped.status_code == 200 and stopped.json() == {"ok": True}
    seen = until_end(ws, seen)
    ws.close()
    assert_stopped_and_kept(server, session_id, deltas(seen), seen[-1])
    again = server.request("POST", f"/api/sessions/{session_id}/stop", server.admin_key)
    assert again.status_code == 409 and again.json() == {"error": "No reply is streaming in this session"}


# --- notifications & keep-alive ------------------------------------------------------------

def test_notification_reaches_every_client_of_both_workers(server):
    by_worker = connections_on_both_workers(server, count=6)
    open_database(server.home / "db" / "starpod.db", pgtest.database_url_for(server.home))
    try:
        notify("daily-digest", "sess-1", "x" * 600, True, config=Config(home=server.home))
    finally:
        database.close_all()
    for sockets in by_worker.values():
        for ws in sockets:
            frame = recv(ws)
            assert frame["type"] == "notification" and frame["job_name"] == "daily-digest"
            assert frame["session_id"] == "sess-1" and frame["success"] is True
            assert frame["result_preview"] == "x" * 500 + "..."
            ws.close()


def test_a_connection_is_freed_without_the_cycle_collector(tmp_path):
    """A closed socket's objects go at once: in a reference cycle they would wait for a full
    collection, which holds the worker's event loop the longer the more of them there are."""
    config = make_config(tmp_path / "home")
    near, far = socket.socketpair()
    ws = SimpleNamespace(sock=WholeFrameSocket(near), max_message_size=None)
    connection = Connection(ws, None, None, config, config.agent)
    freed = weakref.ref(connection)
    gc.disable()
    try:
        del connection
        assert freed() is None
    finally:
        gc.enable()
        near.close()
        far.close()


def test_server_sends_keepalive_pings(server):
    ws = connect(server)
    opcode, _ = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PING
    ws.close()
