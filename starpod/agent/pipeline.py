"""The one chat pipeline: `run_chat(request, config)` → iterator of wire events.

Used by `POST /api/chat`, the WebSocket, the scheduler and the Telegram channel.  Order of work:
validate and pick the provider (errors raise on the first `next()`, before anything is stored),
resolve the session, store the `user` row, yield `stream_start`, run the agent loop (tool rows
stored as they happen), then store the `assistant` row and the usage row and yield `stream_end`.
The daily-log entry is appended after `stream_end`, as the spec has it: under gevent in a greenlet
of its own, so neither the reply nor the next request waits for it, and the memory index takes
in a second's entries at once (`MemoryStore.index_soon`).
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .. import sessions
from ..concurrency import in_background
from ..config import Config
from ..db import database, write_transaction
from ..errors import BadRequest, PayloadTooLarge, new_request_id
from ..memory import get_store
from ..memory.paths import validate_user_id
from ..sessions import truncate_utf8
from .loop import AgentLoop, Conversation, Outcome
from .prompt import build_system_prompt
from .providers import make_provider
from .stopping import StopSignal
from .tools import ToolContext, ToolResult, available_tools

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DAILY_EXCERPT_BYTES = 200


@dataclass
class Attachment:
    """An upload already validated and saved by the caller; `data` is kept for images."""
    file_name: str
    mime_type: str
    saved_path: str | None
    data: bytes | None


@dataclass
class ChatRequest:
    text: str
    user_id: str                       # effective user id
    is_admin: bool                     # may use dangerous tools (Bash, FileWrite/Delete)
    channel_id: str = "main"
    channel_session_key: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    followups: Callable[[], list[str]] | None = None   # inject mode: drained before each model call
    prompt_notes: str = ""             # appended to the model prompt only (not stored, not a title)
    mark_unread: bool = False          # leave the session unread for its owner (background runs)
    stop: StopSignal | None = None     # lets the caller stop the reply midway (the WebSocket's runs)


def check_text_size(text: str, config: Config) -> None:
    """PayloadTooLarge when `text` is over `[limits] max_message_bytes` (read live)."""
    limit = config.agent.limits.max_message_bytes
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLarge(f"text is {size} bytes; the limit is {limit} bytes",
                              fields={"text": [f"Longer than {limit} bytes."]})


def _validate(request: ChatRequest, config: Config) -> None:
    if not isinstance(request.text, str):
        raise BadRequest("text is required and must be a string")
    if not request.text.strip() and not request.attachments:
        raise BadRequest("text must not be empty")
    check_text_size(request.text, config)
    validate_user_id(request.user_id or "")


def _first_turn(request: ChatRequest) -> tuple[dict, dict]:
    """(turn sent to the model, turn kept in the transcript): images are sent once, not kept."""
    text = request.text + request.prompt_notes
    images = [{"type": "image", "media_type": a.mime_type, "data": base64.b64encode(a.data).decode("ascii")}
              for a in request.attachments if a.mime_type in IMAGE_TYPES and a.data]
    text_block = {"type": "text", "text": text}
    return {"role": "user", "content": images + [text_block]}, {"role": "user", "content": [text_block]}


def _export_closed(config: Config, session) -> None:
    """Write an auto-closed session's transcript to memory; failures only get logged."""
    rows = list(sessions.export_messages(session.id))
    if not rows:
        return
    try:
        get_store(config).export_session(session.title, session.created_at, session.channel,
                                         session.message_count, session.summary, rows, session.id,
                                         config.agent.agent_name, user_id=session.user_id)
    except Exception:
        log.exception("exporting closed session %s failed", session.id)


def _export_all_closed(config: Config, auto_closed: list) -> None:
    for closed in auto_closed:
        _export_closed(config, closed)


def _daily_log(config: Config, user_id: str, text: str) -> None:
    try:
        get_store(config).append_daily(text, user_id, index_soon=True)
    except Exception:
        log.exception("daily log append failed")


def _stream_end(session_id: str, outcome: Outcome) -> dict:
    usage = outcome.usage
    return {"type": "stream_end", "session_id": session_id, "num_turns": outcome.num_turns,
            "cost_usd": outcome.cost_usd, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write,
            "is_error": outcome.is_error, "errors": list(outcome.errors), "text": outcome.text}


def _user_message_transaction(request: ChatRequest):
    """The write transaction that resolves the request's session and stores its message."""
    channel, key = sessions.channel_and_key(request.channel_id, request.channel_session_key, request.user_id)
    return write_transaction(sessions.resolution_lock(channel, key, request.user_id))


def _store_user_message(request: ChatRequest, config: Config, auto_closed: list):
    """Resolve (or open) the request's session and store its `user` row; returns the session.

    Sessions auto-closed on the way are appended to `auto_closed`: their export writes files and
    the memory index, so it runs after the commit (`_export_all_closed`), not under the write lock.
    """
    channel, key = sessions.channel_and_key(request.channel_id, request.channel_session_key, request.user_id)
    resolution = sessions.resolve_session(channel, key, request.user_id, request.text,
                                          sessions.gap_minutes(channel, config.agent),
                                          on_auto_close=auto_closed.append)
    sessions.add_user_message(resolution.session, request.text)
    return resolution.session


def record_unstarted(request: ChatRequest, config: Config) -> str:
    """Store the user's message of a valid request whose run could not start (e.g. no provider
    key), so the session shows what was asked; returns the session id."""
    auto_closed: list = []
    with _user_message_transaction(request):
        session_id = _store_user_message(request, config, auto_closed).id
    _export_all_closed(config, auto_closed)
    return session_id


def run_chat(request: ChatRequest, config: Config) -> Iterator[dict]:
    """Run one chat turn; see the module docstring for the order of events and writes."""
    _validate(request, config)
    provider = make_provider(config)
    auto_closed: list = []
    with _user_message_transaction(request):
        session = _store_user_message(request, config, auto_closed)
        conversation = Conversation(session.id)
        sent, kept = _first_turn(request)
        conversation.append(sent, stored=kept)
        conversation.flush()
    _export_all_closed(config, auto_closed)
    yield {"type": "stream_start", "session_id": session.id}

    ctx = ToolContext(config, request.user_id, request.is_admin, session.id)
    tools = available_tools(ctx)
    bootstrap = get_store(config).bootstrap_context(request.user_id)
    system = build_system_prompt(config, bootstrap, session.id, request.user_id, request.channel_id,
                                 {t.name for t in tools}, request.is_admin)

    def store_tool_use(call: dict) -> None:
        sessions.add_message(session.id, "tool_use", sessions.tool_use_row(call["id"], call["name"], call["input"]))

    def store_tool_result(call: dict, result: ToolResult) -> None:
        sessions.add_message(session.id, "tool_result",
                             sessions.tool_result_row(call["id"], result.content, result.is_error))

    loop = AgentLoop(config, provider, conversation, system, tools, ctx, followups=request.followups,
                     on_followup=lambda text: sessions.add_user_message(session, text),
                     on_tool_use=store_tool_use, on_tool_result=store_tool_result,
                     on_pre_compaction=lambda text: _daily_log(config, request.user_id, text),
                     stop=request.stop)
    try:
        yield from loop.run()
    except Exception:  # a bug in the loop still ends the stream properly; its detail stays in the log
        request_id = new_request_id()
        log.exception("agent run failed in session %s (request id %s)", session.id, request_id)
        loop.outcome.is_error = True
        loop.outcome.errors.append(f"Stream error: internal error (request id {request_id})")
    outcome = loop.outcome
    _finish(request, session, conversation, provider.model, outcome)
    yield _stream_end(session.id, outcome)
    if not outcome.errors:
        in_background(0, _daily_log, config, request.user_id,
                     f"**User**: {truncate_utf8(request.text, DAILY_EXCERPT_BYTES)}\n"
                     f"**{config.agent.agent_name}**: {truncate_utf8(outcome.text, DAILY_EXCERPT_BYTES)}")


def _finish(request: ChatRequest, session, conversation: Conversation, model: str, outcome: Outcome) -> None:
    with database.atomic():
        conversation.flush()
        if outcome.text:
            sessions.add_message(session.id, "assistant", outcome.text)
        if outcome.model_calls:
            usage = outcome.usage
            sessions.record_usage(session.id, outcome.num_turns, usage.input_tokens, usage.output_tokens,
                                  usage.cache_read, usage.cache_write, outcome.cost_usd, model)
        if request.mark_unread:
            sessions.mark_read(session, False)


def collect(events: Iterator[dict]) -> dict:
    """Drain a run and return its `stream_end` event (used by REST and internal callers)."""
    end: dict = {}
    for event in events:
        if event["type"] == "stream_end":
            end = event
    return end


__all__ = ["Attachment", "ChatRequest", "run_chat", "collect", "check_text_size", "record_unstarted"]
