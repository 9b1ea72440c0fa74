"""WebSocket fuzzing proof: random and malformed client frames over real sockets to a live gunicorn.

Every text frame gets an answer on an open socket: an `error` frame, or for a valid message its
stream up to `stream_end`.  Binary frames are ignored (the socket stays usable).  Frames that break
the protocol itself (invalid UTF-8 in a text frame, a message over the size limit) end the socket
with the matching WebSocket close code (1007, 1009), never a silent drop or a raw HTTP line.  The
server stays healthy throughout.  Randomness is seeded: every run sends the same frames.
"""
from __future__ import annotations

import json
import random
import string
import struct
import time

import pytest
import websocket

from starpod.config import AttachmentsConfig
from starpod.realtime.attachments import message_size_limit

from .fake_provider import Reply
from .proof_support import start_proof_server

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SEED = 15
RANDOM_FRAMES = 120
ANSWER_DEADLINE = 30.0
ATTACHMENT = {"file_name": "a.png", "mime_type": "image/png"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    fake.default = Reply("fuzz reply", chunks=2)
    live = start_proof_server(tmp_path_factory, "ws-fuzz", env=fake.environ(STARPOD_WS_PING_SECS="5"))
    yield live
    live.stop()


@pytest.fixture(scope="module", params=["admin", "user"])
def key(request, server):
    if request.param == "admin":
        return server.admin_key
    return server.create_user(server.admin_key, label="ws fuzz")[1]["key"]


def connect(server, key):
    return websocket.create_connection(f"{server.ws_url}/ws?token={key}", timeout=ANSWER_DEADLINE)


# --- the frames -------------------------------------------------------------------------------

def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def malformed_frames() -> list[str]:
    """Hand-picked hostile text frames (each must get an `error` frame or a stream)."""
    return [
        "", " ", "null", "true", "1e999", "NaN", "[]", "\"message\"", "{", "}{", "{\"type\":}",
        nested(100_000), '{"type":"message","text":"x","attachments":' + nested(50_000) + "}",
        '{"a":' * 20_000 + "1" + "}" * 20_000,
        json.dumps({"type": "nope", "padding": "x" * (900 * 1024)}),
        json.dumps({"type": 5}), json.dumps({"type": None}), json.dumps({"type": ["message"]}),
        json.dumps({"type": "message"}), json.dumps({"type": "message", "text": 123}),
        json.dumps({"type": "message", "text": None}), json.dumps({"type": "message", "text": {"a": 1}}),
        json.dumps({"type": "message", "text": "x", "attachments": "abc"}),
        json.dumps({"type": "message", "text": "x", "attachments": [1, None, "a"]}),
        json.dumps({"type": "message", "text": "x", "channel_id": 7}),
        json.dumps({"type": "message", "text": "x", "attachments": [{**ATTACHMENT, "data": "!!!not base64!!!"}]}),
        json.dumps({"type": "message", "text": "x", "attachments": [{**ATTACHMENT, "data": "QUJD="}]}),
        json.dumps({"type": "message", "text": "x", "attachments": [{**ATTACHMENT, "data": None}]}),
        json.dumps({"type": "message", "text": "x", "attachments": [{"file_name": "a", "data": "QUJD"}]}),
        '{"type":"message","text":"\\ud800 lone surrogate"}',
        '{"type":"message","text":"ok","user_id":"\\udfff"}',
        json.dumps({"type": "resume"}), json.dumps({"type": "resume", "session_id": []}),
        json.dumps({"type": "resume", "session_id": "x", "after_seq": "1"}),
        json.dumps({"type": "resume", "session_id": "x", "after_seq": -1}),
        json.dumps({"type": "resume", "session_id": "x", "after_seq": 2 ** 80}),
        json.dumps({"type": "resume", "session_id": "x" * 100_000}),
    ]


def random_value(rng: random.Random, depth: int = 0):
    choice = rng.randrange(8 if depth < 4 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 2 ** 63, rng.randint(-10 ** 6, 10 ** 6), rng.random() * 1e300])
    if choice in (3, 4):
        return random_text(rng)
    if choice == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_text(rng: random.Random) -> str:
    alphabet = string.printable + "\u00e9\u4e2d\U0001f600\u0000\u202e"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))


def random_frame(rng: random.Random) -> str:
    """A JSON object that looks more or less like a client frame, or any JSON value."""
    if rng.random() < 0.15:
        return json.dumps(random_value(rng))
    frame = {key: random_value(rng) for key in rng.sample(["text", "session_id", "after_seq", "attachments",
                                                           "user_id", "channel_id", random_text(rng)],
                                                          rng.randrange(4))}
    frame["type"] = rng.choice(["message", "resume", random_text(rng), 1])
    if frame["type"] == "message" and rng.random() < 0.5:
        frame["text"] = random_text(rng)
    return json.dumps(frame, ensure_ascii=rng.random() < 0.5)


# --- answers ----------------------------------------------------------------------------------

def answer_to(ws) -> list[dict]:
    """Frames up to the `error` or `stream_end` answering one client frame."""
    frames: list[dict] = []
    deadline = time.monotonic() + ANSWER_DEADLINE
    while not frames or frames[-1].get("type") not in ("error", "stream_end"):
        assert time.monotonic() < deadline, f"no answer within {ANSWER_DEADLINE} s: {frames[-3:]}"
        raw = ws.recv()
        assert isinstance(raw, str), f"unexpected binary answer {raw[:80]!r}"
        frame = json.loads(raw)  # a raw HTTP line or garbage fails here
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), raw[:200]
        if frame["type"] != "notification":
            frames.append(frame)
    return frames


def assert_answered(ws, sent: str) -> None:
    try:
        frames = answer_to(ws)
    except websocket.WebSocketException as exc:
        pytest.fail(f"socket dropped without an error frame after {sent[:120]!r}: {exc!r}")
    if frames[-1]["type"] == "error":
        assert isinstance(frames[-1].get("message"), str) and frames[-1]["message"], frames[-1]
    else:
        assert frames[0]["type"] == "stream_start", frames[:2]


def assert_healthy(server) -> None:
    assert server.get("/api/health").status_code == 200


def close_code(ws) -> int | None:
    """The status code of the close frame the server sends next (None if the socket just died)."""
    deadline = time.monotonic() + ANSWER_DEADLINE
    while time.monotonic() < deadline:
        try:
            opcode, frame = ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketConnectionClosedException:
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None
    pytest.fail("the server neither answered nor closed")


# --- the proofs -------------------------------------------------------------------------------

def test_malformed_frames_each_get_an_error_frame_on_an_open_socket(server, key):
    ws = connect(server, key)
    for frame in malformed_frames():
        ws.send(frame)
        assert_answered(ws, frame)
    ws.close()
    assert_healthy(server)


def test_random_frames_each_get_an_answer_and_binary_frames_are_ignored(server, key):
    rng = random.Random(SEED)
    ws = connect(server, key)
    for index in range(RANDOM_FRAMES):
        if index % 10 == 0:
            ws.send_binary(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048))))
        frame = random_frame(rng)
        ws.send(frame)
        assert_answered(ws, frame)
    ws.close()
    assert_healthy(server)


def test_invalid_utf8_in_a_text_frame_closes_with_1007(server, key):
    ws = connect(server, key)
    ws.send(b'{"type":"message","text":"\xff\xfe\xc3\x28"}', opcode=websocket.ABNF.OPCODE_TEXT)
    assert close_code(ws) == 1007
    assert_healthy(server)


def test_a_frame_over_the_size_limit_closes_with_1009(server, key):
    limit = message_size_limit(AttachmentsConfig())  # the server runs with the default settings
    ws = connect(server, key)
    ws.send(json.dumps({"type": "message", "text": "x" * limit}))
    assert close_code(ws) == 1009
    assert_healthy(server)
