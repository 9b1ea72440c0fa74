"""A scriptable fake LLM provider: a real HTTP server on 127.0.0.1 speaking the Anthropic Messages
API (`POST .../v1/messages`) and OpenAI Chat Completions (`POST .../chat/completions`), as JSON or
SSE streams, with tool calls, errors and delays.  The app reaches it through the normal base-URL
settings and the official SDKs.

Usage (the `fake_provider` fixture in conftest.py gives a started instance):

    fake.script(Reply("Hello!", chunks=3))                       # next answer: 3 text deltas
    fake.script(Reply(tool_calls=[ToolCall("Glob", {"pattern": "*"})]), Reply("done"))
    fake.script(Failure(500, "boom"))                            # one error answer
    fake.script(Reply("slow", delay=2.0))                        # wait before answering
    fake.script(Reply("x" * 200, chunks=200, chunk_delay=0.001)) # 200 deltas, 1 ms apart
    fake.default = Reply("ok")                                   # used when the queue is empty
    config = make_config(home, environ=fake.environ())           # keys + ANTHROPIC/OPENAI_BASE_URL
    fake.requests[-1].body["system"] ...                         # every request is recorded
    fake.requests[-1].provider_seconds                           # time spent answering it

Scripted answers are protocol-neutral: the same `Reply` renders as an Anthropic message or an
OpenAI completion depending on the path that was called.  A script entry may also be a callable
`entry(recorded_request) -> Reply | Failure` for answers that depend on the request.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from .loopback import LoopbackServer

FAKE_KEY = "sk-fake-test-key"


@dataclass
class ToolCall:
    name: str
    input: dict
    id: str | None = None


@dataclass
class Reply:
    """A successful answer: text (split into `chunks` deltas when streamed) and/or tool calls."""
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 10
    output_tokens: int = 5
    cache_read: int = 0
    cache_write: int = 0
    chunks: int = 1
    chunk_delay: float = 0.0
    delay: float = 0.0


@dataclass
class Failure:
    """An error answer with an HTTP status (and optional Retry-After header)."""
    status: int = 500
    message: str = "internal error"
    error_type: str = "api_error"
    retry_after: float | None = None
    delay: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict
    body: Any
    provider_seconds: float = 0.0

    @property
    def api(self) -> str:
        return "anthropic" if self.path.endswith("/messages") else "openai"


def split_chunks(text: str, count: int) -> list[str]:
    if not text:
        return []
    count = max(1, min(count, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


class FakeProvider(LoopbackServer):
    """The server.  `script(...)` queues answers; `requests` records what arrived."""

    def __init__(self):
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self.default: Reply | Failure | Callable = Reply("ok")
        self.requests: list[Recorded] = []
        self._listen(_make_handler(self), poll_interval=0.02)


    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def environ(self, **extra: str) -> dict:
        """Environment for a Config whose anthropic and openai providers point here."""
        env = {"ANTHROPIC_API_KEY": FAKE_KEY, "ANTHROPIC_BASE_URL": self.url,
               "OPENAI_API_KEY": FAKE_KEY, "OPENAI_BASE_URL": self.openai_url,
               "GEMINI_API_KEY": FAKE_KEY, "GROQ_API_KEY": FAKE_KEY, "DEEPSEEK_API_KEY": FAKE_KEY,
               "OPENROUTER_API_KEY": FAKE_KEY}
        env.update(extra)
        return env

    # --- scripting --------------------------------------------------------------------------

    def script(self, *entries: Reply | Failure | Callable) -> None:
        with self._lock:
            self._queue.extend(entries)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.default = Reply("ok")

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _next(self, recorded: Recorded) -> Reply | Failure:
        with self._lock:
            self.requests.append(recorded)
            entry = self._queue.popleft() if self._queue else self.default
        return entry(recorded) if callable(entry) else entry


def _make_handler(fake: FakeProvider):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # small SSE frames must not wait for delayed ACKs

        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            started = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            recorded = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            answer = fake._next(recorded)
            if answer.delay:
                time.sleep(answer.delay)
            anthropic = recorded.api == "anthropic"
            self._started, self._recorded = started, recorded
            try:
                if isinstance(answer, Failure):
                    self._send_failure(answer, anthropic)
                elif isinstance(body, dict) and body.get("stream"):
                    events = _anthropic_events(answer, body) if anthropic else _openai_events(answer, body)
                    self._send_stream(events, answer.chunk_delay)
                else:
                    self._send_json(200, _anthropic_message(answer, body) if anthropic else _openai_completion(answer, body))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _finish_timing(self) -> None:
            """Stamp the provider time before the last bytes go out, so the client never sees the
            response complete while the figure is still missing."""
            self._recorded.provider_seconds = time.perf_counter() - self._started

        def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self._finish_timing()
            self.wfile.write(data)

        def _send_failure(self, failure: Failure, anthropic: bool) -> None:
            if anthropic:
                payload = {"type": "error", "error": {"type": failure.error_type, "message": failure.message}}
            else:
                payload = {"error": {"message": failure.message, "type": failure.error_type, "code": None}}
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            self._send_json(failure.status, payload, headers)

        def _send_stream(self, events: list[tuple[str | None, dict | str]], chunk_delay: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for name, data in events:
                payload = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"
                encoded = frame.encode()
                self.wfile.write(f"{len(encoded):x}\r\n".encode() + encoded + b"\r\n")
                self.wfile.flush()
                if chunk_delay and isinstance(data, dict) and _is_text_delta(data):
                    time.sleep(chunk_delay)
            self._finish_timing()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def _is_text_delta(data: dict) -> bool:
    if data.get("type") == "content_block_delta":
        return data["delta"].get("type") == "text_delta"
    choices = data.get("choices") or []
    return bool(choices and choices[0].get("delta", {}).get("content"))


def _tool_id(call: ToolCall, prefix: str) -> str:
    if call.id is None:
        call.id = f"{prefix}{uuid.uuid4().hex[:20]}"
    return call.id


# --- Anthropic Messages API -----------------------------------------------------------------

def _anthropic_blocks(reply: Reply) -> list[dict]:
    blocks = [{"type": "text", "text": reply.text}] if reply.text else []
    blocks += [{"type": "tool_use", "id": _tool_id(c, "toolu_"), "name": c.name, "input": c.input}
               for c in reply.tool_calls]
    return blocks


def _anthropic_usage(reply: Reply) -> dict:
    return {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
            "cache_read_input_tokens": reply.cache_read, "cache_creation_input_tokens": reply.cache_write}


def _anthropic_message(reply: Reply, body: dict) -> dict:
    return {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
            "model": body.get("model", "fake"), "content": _anthropic_blocks(reply),
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
            "usage": _anthropic_usage(reply)}


def _anthropic_events(reply: Reply, body: dict) -> list[tuple[str, dict]]:
    start = _anthropic_message(reply, body)
    start.update(content=[], stop_reason=None, usage={**_anthropic_usage(reply), "output_tokens": 1})
    events: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": start})]
    index = 0
    if reply.text:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        for piece in split_chunks(reply.text, reply.chunks):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for offset, call in enumerate(reply.tool_calls):
        i = index + offset
        events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
            "type": "tool_use", "id": _tool_id(call, "toolu_"), "name": call.name, "input": {}}}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "input_json_delta", "partial_json": json.dumps(call.input)}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "tool_use" if reply.tool_calls else "end_turn",
                                               "stop_sequence": None},
                                     "usage": {"output_tokens": reply.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# --- OpenAI Chat Completions ----------------------------------------------------------------

def _openai_usage(reply: Reply) -> dict:
    prompt = reply.input_tokens + reply.cache_read
    return {"prompt_tokens": prompt, "completion_tokens": reply.output_tokens,
            "total_tokens": prompt + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cache_read}}


def _openai_calls(reply: Reply) -> list[dict]:
    return [{"id": _tool_id(c, "call_"), "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.input)}} for c in reply.tool_calls]


def _openai_completion(reply: Reply, body: dict) -> dict:
    message: dict = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = _openai_calls(reply)
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:20]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": _openai_usage(reply)}


def _openai_events(reply: Reply, body: dict) -> list[tuple[None, dict | str]]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:20]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model", "fake")}

    def chunk(delta: dict, finish: str | None = None) -> tuple[None, dict]:
        return None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in split_chunks(reply.text, reply.chunks)]
    for index, call in enumerate(_openai_calls(reply)):
        events.append(chunk({"tool_calls": [{"index": index, **call}]}))
    events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**base, "choices": [], "usage": _openai_usage(reply)}))
    events.append((None, "[DONE]"))
    return events
