"""LLM providers behind one streaming interface.

anthropic goes through the official `anthropic` SDK (Messages API, prompt caching, thinking);
openai, groq, deepseek, openrouter, ollama and gemini (its OpenAI-compatible endpoint) go through
the official `openai` SDK (Chat Completions).  The agent loop speaks one provider-neutral message
format (Anthropic-like content blocks) and each provider translates it.

`Provider.stream(...)` yields text chunks (str) as they arrive and finally one `ModelTurn`.
The SDK sends the request (auth, headers, endpoint, status errors) with a body serialized here
once, and the event stream of the answer is read as the transport received it (`body_chunks`),
split with `sse.events` and parsed as plain JSON: the SDKs' own stream helpers re-copy the
request and build a pydantic object per event, which cost more CPU than everything else a
streamed delta goes through.
The SDKs are imported on first use (`sdk(kind)`): importing both costs seconds, and a server only
needs the one its configured provider speaks (`warm_up` loads it in the background after start).
Retries on 429/5xx/overloaded/connection errors happen here with exponential backoff, but only
before the first chunk was yielded; failures become `ProviderError`.  A whole call, retries
included, has one deadline (`[providers] request_timeout_secs`): no single read may wait past it,
and a stream still open at the deadline is closed, so a stalled or trickling provider ends as
"request timed out".  SDK clients are cached per
process (building one loads TLS roots, which is too slow for every request), and all of them send
through one pooled `http.client` transport (transport.py): httpx2's own cost more CPU per call than
the rest of a chat around it.
"""
from __future__ import annotations

import functools
import importlib
import json
import logging
from abc import ABC, abstractmethod
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import orjson
from jiter import from_json

from ..concurrency import gevent_active
from ..config import PROVIDER_KEY_ENV, PROVIDERS, Config
from ..errors import NotConfigured
from .sse import events

log = logging.getLogger(__name__)
# The SDKs' HTTP client logs every request at INFO; one line per model call is noise in server logs.
logging.getLogger("httpx2").setLevel(logging.WARNING)

CONNECT_TIMEOUT = 10.0


@dataclass
class RetryPolicy:
    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        wanted = retry_after if retry_after is not None else self.base_delay * (2 ** attempt)
        return min(max(wanted, 0.0), self.max_delay)


RETRY_POLICY = RetryPolicy()

DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "groq": "https://api.groq.com/openai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "ollama": "http://localhost:11434/v1",
}
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
REASONING_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5")
THINKING_BUDGETS = {"low": 4096, "medium": 10240, "high": 32768}


class ProviderError(Exception):
    """A provider call failed for good (after retries); the message is safe to show."""


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def add(self, other: "Usage") -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write

    @property
    def context_tokens(self) -> int:
        """Everything the call read as input, cached or not."""
        return self.input_tokens + self.cache_read + self.cache_write


@dataclass
class ModelTurn:
    """One complete assistant message: neutral content blocks, usage and stop reason."""
    content: list[dict]
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(b["text"] for b in self.content if b["type"] == "text")

    @property
    def tool_uses(self) -> list[dict]:
        return [b for b in self.content if b["type"] == "tool_use"]


@dataclass
class ToolSpec:
    name: str
    description: str
    input_schema: dict


def thinking_budget(effort: str | None) -> int | None:
    return THINKING_BUDGETS.get(effort) if effort else None


def _normalize_base_url(provider: str, url: str) -> str:
    """Accept both SDK base URLs and the full endpoint URLs the spec lists."""
    url = url.rstrip("/")
    suffixes = ("/v1/messages", "/messages") if provider == "anthropic" else ("/chat/completions",)
    for suffix in suffixes:
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


MAX_CACHED_CLIENTS = 16
_clients: OrderedDict[tuple, Any] = OrderedDict()
_clients_lock = threading.Lock()


class Deadline:
    """The end of one provider call, shared by its attempts."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds
        self.closed = False  # `closing_at_end` closed the stream (its timer's clock may run a little ahead)

    def remaining(self) -> float:
        return max(self.ends_at - time.monotonic(), 0.0)

    @property
    def passed(self) -> bool:
        return self.closed or time.monotonic() >= self.ends_at  # checked per streamed chunk: no remaining()

    def timeout(self, module):
        """Per-request timeout for SDK `module`: no connect or read may wait past the deadline."""
        left = max(self.remaining(), 0.001)
        return module.Timeout(left, connect=min(CONNECT_TIMEOUT, left))

    @contextmanager
    def closing_at_end(self, close: Callable[[], None]) -> Iterator[None]:
        """Call `close` (ending a response stream) if the block is still running at the deadline.

        Under gevent a timer of the event loop starts a greenlet for it when the deadline comes
        (a `threading.Timer` there would start, switch to and kill one on every provider call);
        elsewhere a timer thread calls it."""
        def close_at_deadline() -> None:
            self.closed = True
            close()

        if gevent_active():
            import gevent

            timer = gevent.get_hub().loop.timer(self.remaining())
            timer.start(gevent.spawn, close_at_deadline)
            cancel = timer.close
        else:
            timer = threading.Timer(self.remaining(), close_at_deadline)
            timer.daemon = True
            timer.start()
            cancel = timer.cancel
        try:
            yield
        finally:
            cancel()


SDK_CLIENT_CLASSES = {"anthropic": "Anthropic", "openai": "OpenAI"}
SDK_BASE_ERRORS = {"anthropic": "AnthropicError", "openai": "OpenAIError"}


def sdk_kind(provider: str) -> str:
    """Which SDK speaks to `provider`: "anthropic", or "openai" for the OpenAI-compatible ones."""
    return "anthropic" if provider == "anthropic" else "openai"


def sdk(kind: str):
    """The SDK module for `kind` (its package name), imported on first use; Python caches it."""
    return importlib.import_module(kind)


def sdk_errors(module) -> tuple[type[Exception], ...]:
    """What a call through `module` fails with: its own errors, and for a stream closed at the
    deadline (or cut by the network) the HTTP library's, or the socket's own OSError when the close
    lands while a greenlet waits in a read (gevent: "File descriptor was closed in another greenlet")."""
    kind = module.__name__
    return getattr(module, SDK_BASE_ERRORS[kind]), importlib.import_module("httpx2").HTTPError, OSError


def warm_up(config: Config) -> None:
    """Import the configured provider's SDK and build its client, so the first chat pays for neither."""
    name, _ = config.agent.model_ref()
    if name not in PROVIDERS:
        return
    kind = sdk_kind(name)
    api_key = "ollama" if name == "ollama" else config.provider_api_key(name)
    if not api_key:
        sdk(kind)
        return
    _client(kind, _endpoint(config, name), api_key)


@functools.cache
def _shared_transport():
    """The connection pool of every SDK client of this process (imported with the first SDK
    client: it needs httpx2, which the app does not load at start)."""
    from .transport import PooledTransport

    return PooledTransport()


def _http_client(module):
    """The SDK's default HTTP client over the shared transport.  A client given a transport no
    longer mounts the environment's proxies itself, so they are mounted here as the SDK would
    (with httpx2's own transport); hosts they exclude (NO_PROXY) keep the shared one."""
    from httpx2 import HTTPTransport
    from httpx2._utils import get_environment_proxies  # what httpx2 and the SDKs read the proxies with

    mounts = {pattern: None if url is None else HTTPTransport(proxy=url)
              for pattern, url in get_environment_proxies().items()}
    return module.DefaultHttpxClient(transport=_shared_transport(), mounts=mounts)


def _client(kind: str, base_url: str, api_key: str):
    """A cached SDK client for (kind, endpoint, key); the least recently used are dropped."""
    cache_key = (kind, base_url, api_key)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is not None:
            _clients.move_to_end(cache_key)
            return client
        module = sdk(kind)
        client = getattr(module, SDK_CLIENT_CLASSES[kind])(api_key=api_key, base_url=base_url, max_retries=0,
                                                            http_client=_http_client(module))
        _clients[cache_key] = client
        while len(_clients) > MAX_CACHED_CLIENTS:
            _clients.popitem(last=False)
    return client


def _status_and_retry_after(exc: Exception) -> tuple[int | None, float | None]:
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None)
    retry_after = None
    if response is not None:
        try:
            retry_after = float(response.headers.get("retry-after"))
        except (TypeError, ValueError):
            retry_after = None
    return status, retry_after


def _describe(exc: Exception, module) -> str:
    status, _ = _status_and_retry_after(exc)
    message = getattr(exc, "api_message", None) or getattr(exc, "message", None) or str(exc)
    if isinstance(exc, module.APITimeoutError):
        return "request timed out"
    return f"{status} {message}" if status else str(message)


def _is_retryable(exc: Exception, module) -> bool:
    if isinstance(exc, module.APITimeoutError):
        return False
    if isinstance(exc, module.APIConnectionError):
        return True
    status, _ = _status_and_retry_after(exc)
    if status in RETRYABLE_STATUS:
        return True
    # Anthropic reports overload mid-stream as an SSE error event.
    return getattr(exc, "type", None) == "overloaded_error"


TIMED_OUT = "request timed out"


def request_body(request: dict) -> bytes:
    """The JSON body of a provider call; text with lone surrogates (which orjson refuses) goes
    out escaped, as the SDKs would send it."""
    try:
        return orjson.dumps(request)
    except orjson.JSONEncodeError:
        return json.dumps(request).encode("ascii")


_post_templates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # SDK client → {path: options}


def _post_options(kind: str, client, path: str):
    """The request options the SDK `client`'s own `post(path, ...)` builds, without a body or a
    timeout: built once per client and path, as a template that each call copies with its own.
    Building them afresh (the SDK's pydantic model with every default) cost more than the copy.
    The URL is absolute, as the client itself merges `path` with its base URL: given an absolute
    one, the SDK parses it through the HTTP library's cache of parsed URLs; a relative path it
    merges through an uncached parse on every call."""
    templates = _post_templates.setdefault(client, {})
    template = templates.get(path)
    if template is None:
        options_class = importlib.import_module(f"{kind}._models").FinalRequestOptions
        template = templates[path] = options_class.construct(
            method="post", url=str(client._prepare_url(path)), json_data=None, content=None, files=None)
    return template


@contextmanager
def streamed_post(kind: str, client, path: str, request: dict, deadline: Deadline) -> Iterator[Any]:
    """POST `request` through the `kind` SDK's `client` and give the open HTTP response of its
    event stream; an error status raises the SDK's error, and the response is closed at the deadline."""
    options = _post_options(kind, client, path).model_copy(
        update={"content": request_body(request), "timeout": deadline.timeout(sdk(kind))})
    response = client.request(importlib.import_module("httpx2").Response, options, stream=True)
    with deadline.closing_at_end(response.close):
        try:
            yield response
        finally:
            response.close()


def body_chunks(response) -> Iterator[bytes]:
    """The streamed body of `response` in the pieces the transport read: httpx's decoding and
    re-chunking layers cost more per small event than the event itself, so they are skipped
    unless the body is content-encoded."""
    if response.headers.get("content-encoding", "identity") == "identity":
        return response.iter_raw()
    return response.iter_bytes()


class Provider(ABC):
    """One configured provider + model; `request_timeout` is the deadline of one whole call."""

    def __init__(self, name: str, model: str, base_url: str, api_key: str, request_timeout: float = 120.0):
        self.name = name
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.request_timeout = request_timeout

    def stream(self, *, system: str | None, messages: list[dict], tools: list[ToolSpec],
               max_tokens: int, reasoning_effort: str | None = None) -> Iterator[str | ModelTurn]:
        """Text chunks as they arrive, then the complete ModelTurn; ProviderError on failure."""
        module = sdk(sdk_kind(self.name))  # a first import may take seconds: not the provider's time
        errors = sdk_errors(module)
        deadline = Deadline(self.request_timeout)
        attempt = 0
        while True:
            started = False
            try:
                for item in self._stream_once(system, messages, tools, max_tokens, reasoning_effort, deadline):
                    if deadline.passed:
                        raise ProviderError(TIMED_OUT)
                    started = started or isinstance(item, str)
                    yield item
                return
            except errors as exc:
                if deadline.passed:
                    raise ProviderError(TIMED_OUT) from exc
                if started or attempt >= RETRY_POLICY.max_retries or not _is_retryable(exc, module):
                    raise ProviderError(_describe(exc, module)) from exc
                _, retry_after = _status_and_retry_after(exc)
                delay = RETRY_POLICY.delay(attempt, retry_after)
                if delay >= deadline.remaining():
                    raise ProviderError(f"{_describe(exc, module)} (no time left to retry)") from exc
                log.warning("%s call failed (%s); retry %d in %.1fs", self.name, _describe(exc, module),
                            attempt + 1, delay)
                time.sleep(delay)
                attempt += 1

    @abstractmethod
    def _stream_once(self, system, messages, tools, max_tokens, reasoning_effort,
                     deadline: Deadline) -> Iterator[str | ModelTurn]:
        """One attempt within `deadline`: text chunks, then the ModelTurn; SDK errors propagate."""


class AnthropicProvider(Provider):
    def _stream_once(self, system, messages, tools, max_tokens, reasoning_effort, deadline):
        request: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens,
                                   "messages": to_anthropic_messages(messages)}
        if system:
            request["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        if tools:
            request["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                                for t in tools]
            request["tools"][-1]["cache_control"] = {"type": "ephemeral"}
        budget = thinking_budget(reasoning_effort)
        if budget:
            request["thinking"] = {"type": "enabled", "budget_tokens": budget}
            request["max_tokens"] = max(max_tokens, budget + 8192)
        request["stream"] = True
        client = _client("anthropic", self.base_url, self.api_key)
        turn = _AnthropicTurn()
        with streamed_post("anthropic", client, "/v1/messages", request, deadline) as response:
            for name, data in events(body_chunks(response)):
                if name == "error":
                    raise _anthropic_stream_error(client, response, data)
                if name is not None and name != "ping" and data:
                    text = turn.feed(orjson.loads(data))
                    if text:
                        yield text
        yield turn.result()


def _anthropic_stream_error(client, response, data: bytes) -> Exception:
    """The SDK's error for an `error` event in the stream (e.g. overloaded_error), as its own
    stream reader raises it."""
    try:
        body = orjson.loads(data)
        message = f"{body}"
    except orjson.JSONDecodeError:
        body = data.decode("utf-8", "replace")
        message = body or f"Error code: {response.status_code}"
    return client._make_status_error(message, body=body, response=response)


class _AnthropicTurn:
    """Accumulates one streamed Messages API answer into a ModelTurn, as the SDK's helper would."""

    def __init__(self):
        self.blocks: list[dict | None] = []
        self.fragments: dict[int, list[str]] = {}  # streamed text, thinking or tool JSON by block
        self.usage = Usage()
        self.stop_reason: str | None = None

    def feed(self, event: dict) -> str | None:
        """Take one event (its parsed JSON); returns the text it adds to the answer, if any."""
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event["index"], event["delta"])
        if kind == "content_block_start":
            self.blocks.append(_from_anthropic_block(event["content_block"]))
        elif kind == "message_start":
            message = event["message"]
            self.blocks = [_from_anthropic_block(block) for block in message.get("content") or ()]
            self._usage(message.get("usage"))
            self.stop_reason = message.get("stop_reason")
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason")
            self._usage(event.get("usage"))
        return None

    def _delta(self, index: int, delta: dict) -> str | None:
        block_type = (self.blocks[index] or {}).get("type")
        kind = delta.get("type")
        if kind == "text_delta" and block_type == "text":
            self.fragments.setdefault(index, []).append(delta["text"])
            return delta["text"]
        if kind == "input_json_delta" and block_type == "tool_use":
            self.fragments.setdefault(index, []).append(delta["partial_json"])
        elif kind == "thinking_delta" and block_type == "thinking":
            self.fragments.setdefault(index, []).append(delta["thinking"])
        elif kind == "signature_delta" and block_type == "thinking":
            self.blocks[index]["signature"] = delta["signature"]
        return None

    def _usage(self, usage: dict | None) -> None:
        """Counts on message_delta are cumulative totals; an omitted one keeps the earlier value."""
        for target, source in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                               ("cache_read", "cache_read_input_tokens"),
                               ("cache_write", "cache_creation_input_tokens")):
            value = (usage or {}).get(source)
            if value is not None:
                setattr(self.usage, target, value)

    def result(self) -> ModelTurn:
        for index, fragments in self.fragments.items():
            block, streamed = self.blocks[index], "".join(fragments)
            if block["type"] != "tool_use":
                block[block["type"]] += streamed  # a text block's "text", a thinking block's "thinking"
            elif streamed:
                # Partial mode, as the SDK's accumulator: input cut off by max_tokens still parses.
                block["input"] = from_json(streamed.encode("utf-8"), partial_mode=True) or {}
        return ModelTurn(content=[block for block in self.blocks if block], usage=self.usage,
                         stop_reason=self.stop_reason)


def _from_anthropic_block(block: dict) -> dict | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text") or ""}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": block.get("input") or {}}
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.get("thinking") or "", "signature": block.get("signature") or ""}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block["data"]}
    return None


def _merge_roles(messages: list[dict]) -> list[dict]:
    """Consecutive turns of one role folded into one (an interrupted run can leave two user turns).
    The turns are the caller's own, to be read only."""
    merged: list[dict] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {"role": message["role"], "content": merged[-1]["content"] + message["content"]}
        else:
            merged.append(message)
    return merged


def to_anthropic_messages(messages: list[dict]) -> list[dict]:
    converted = []
    for message in _merge_roles(messages):
        blocks = []
        for block in message["content"]:
            kind = block["type"]
            if kind == "image":
                blocks.append({"type": "image", "source": {"type": "base64", "media_type": block["media_type"],
                                                           "data": block["data"]}})
            elif kind == "tool_result":
                blocks.append({"type": "tool_result", "tool_use_id": block["tool_use_id"],
                               "content": block["content"], "is_error": block["is_error"]})
            else:  # the transcript's own block, only serialized: not copied
                blocks.append(block)
        converted.append({"role": message["role"], "content": blocks})
    # Cache everything up to the newest user turn (on a copy of its block: the transcript keeps its own).
    if converted and converted[-1]["role"] == "user" and converted[-1]["content"]:
        last = converted[-1]["content"]
        last[-1] = {**last[-1], "cache_control": {"type": "ephemeral"}}
    return converted


class OpenAICompatibleProvider(Provider):
    def _stream_once(self, system, messages, tools, max_tokens, reasoning_effort, deadline):
        request: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(system, messages),
                                   "stream": True, "stream_options": {"include_usage": True}}
        if tools:
            request["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                                  "parameters": t.input_schema}} for t in tools]
        if self.name == "openai":
            request["max_completion_tokens"] = max_tokens
            if reasoning_effort and self.model.startswith(REASONING_MODEL_PREFIXES):
                request["reasoning_effort"] = reasoning_effort
        else:
            request["max_tokens"] = max_tokens
        client = _client("openai", self.base_url, self.api_key)
        text: list[str] = []
        calls: dict[int, dict] = {}
        usage = Usage()
        stop_reason = None
        with streamed_post("openai", client, "/chat/completions", request, deadline) as response:
            done = False
            for _, data in events(body_chunks(response)):
                # After [DONE] the body is still read to its end (as the SDK does): the connection is reused.
                if done or not data:
                    continue
                if data.startswith(b"[DONE]"):
                    done = True
                    continue
                chunk = orjson.loads(data)
                if chunk.get("error"):
                    raise _openai_stream_error(response, chunk["error"])
                if chunk.get("usage") is not None:
                    usage = _openai_usage(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        yield delta["content"]
                    for call in delta.get("tool_calls") or ():
                        _add_call_fragment(calls, call)
                    if choice.get("finish_reason"):
                        stop_reason = choice["finish_reason"]
        content: list[dict] = [{"type": "text", "text": "".join(text)}] if text else []
        for _, call in sorted(calls.items()):
            content.append({"type": "tool_use", "id": call["id"] or f"call_{uuid.uuid4().hex[:24]}",
                            "name": call["name"], "input": _parse_arguments(call["arguments"])})
        yield ModelTurn(content=content, usage=usage, stop_reason=stop_reason)


def _add_call_fragment(calls: dict[int, dict], call: dict) -> None:
    """Merge one streamed piece of a tool call into `calls` (by its index)."""
    index = call.get("index")
    slot = calls.setdefault(index if index is not None else len(calls), {"id": None, "name": "", "arguments": ""})
    if call.get("id"):
        slot["id"] = call["id"]
    function = call.get("function")
    if function is not None:
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""


def _openai_stream_error(response, error) -> Exception:
    """The SDK's error for an error object in the stream, as its own stream reader raises it."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return sdk("openai").APIError(message=message, request=response.request, body=error)


def _parse_arguments(raw: str) -> dict:
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _openai_usage(usage: dict) -> Usage:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    prompt = usage.get("prompt_tokens") or 0
    return Usage(max(prompt - cached, 0), usage.get("completion_tokens") or 0, cached, 0)


def to_openai_messages(system: str | None, messages: list[dict]) -> list[dict]:
    converted: list[dict] = [{"role": "system", "content": system}] if system else []
    for message in _merge_roles(messages):
        blocks = message["content"]
        if message["role"] == "assistant":
            text = "".join(b["text"] for b in blocks if b["type"] == "text")
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"], "arguments": json.dumps(b["input"])}}
                     for b in blocks if b["type"] == "tool_use"]
            if calls:
                entry["tool_calls"] = calls
            converted.append(entry)
            continue
        for block in blocks:
            if block["type"] == "tool_result":
                content = block["content"]
                converted.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                                  "content": f"Error: {content}" if block["is_error"] else content})
        parts = []
        for block in blocks:
            if block["type"] == "text":
                parts.append({"type": "text", "text": block["text"]})
            elif block["type"] == "image":
                parts.append({"type": "image_url",
                              "image_url": {"url": f"data:{block['media_type']};base64,{block['data']}"}})
        if parts:
            only_text = all(p["type"] == "text" for p in parts)
            converted.append({"role": "user",
                              "content": "\n\n".join(p["text"] for p in parts) if only_text else parts})
    return converted


def make_provider(config: Config, provider: str | None = None, model: str | None = None) -> Provider:
    """The provider for (provider, model), defaulting to agent.toml's; NotConfigured without a key."""
    agent = config.agent
    default_provider, default_model = agent.model_ref()
    name = provider or default_provider
    model = model or default_model
    if name not in PROVIDERS:
        raise NotConfigured(f"No API key found for provider '{name}': unknown provider "
                            f"(use one of {', '.join(PROVIDERS)})")
    if name == "ollama":
        api_key = "ollama"
    else:
        api_key = config.provider_api_key(name)
        if not api_key:
            raise NotConfigured(f"No API key found for provider '{name}'. "
                                f"Set the {PROVIDER_KEY_ENV[name]} environment variable.")
    cls = AnthropicProvider if name == "anthropic" else OpenAICompatibleProvider
    return cls(name, model, _endpoint(config, name), api_key, agent.request_timeout_secs)


def _endpoint(config: Config, name: str) -> str:
    return _normalize_base_url(name, config.provider_base_url(name) or DEFAULT_BASE_URLS[name])
