"""The agent loop: call the model, run the tools it asks for, repeat until it answers.

`AgentLoop.run()` yields wire events (`text_delta`, `tool_use`, `tool_result`) while it works and
leaves the outcome in `AgentLoop.outcome`.  The conversation the model sees is a `Conversation`,
persisted to the session transcript as it grows (so a continued session resumes with every prior
turn) and compacted when a call's context passes the budget (spec §6.6).  A stop (stopping.py)
cuts the model call or the tools in progress; what was streamed so far stays the reply.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .. import sessions
from ..concurrency import gevent_active
from ..config import Config
from ..db import close_connection, database
from ..errors import NotConfigured
from ..sessions import truncate_utf8
from .pricing import cost_usd
from .providers import ModelTurn, Provider, ProviderError, Usage, make_provider
from .stopping import STOPPED, TOOL_STOPPED, RunStopped, StopSignal
from .tools import Tool, ToolContext, ToolResult, run_tool

log = logging.getLogger(__name__)

MAX_PARALLEL_TOOLS = 8
INTERRUPTED = "Tool execution was interrupted before it returned a result."
SUMMARY_OPEN = "[Previous conversation summary]"
SUMMARY_CLOSE = "[End of summary \u2014 conversation continues below]"
SUMMARY_PROMPT = """\
Summarize the conversation below so it can replace it as context for continuing the work.
Write a structured summary with these sections: Decisions, Facts learned, Files and paths, \
Tool outcomes, Open action items. Keep every concrete detail (names, numbers, paths, commands) \
that later turns may need; omit pleasantries.

<conversation>
{transcript}
</conversation>"""


class Conversation:
    """The model-facing message list of one session, mirrored into its transcript."""

    def __init__(self, session_id: str):
        self.session_id = session_id
        summary, entries = sessions.load_transcript(session_id)
        self.messages: list[dict] = []
        self.ids: list[int | None] = []
        if summary is not None:
            self.messages.append(summary_turn(summary))
            self.ids.append(None)
        for entry_id, message in entries:
            self.messages.append(message)
            self.ids.append(entry_id)
        self._pending: list[tuple[int, dict]] = []
        self._answer_dangling_tool_calls()

    def _answer_dangling_tool_calls(self) -> None:
        """A run that died mid tool round left calls without results, which providers reject:
        give each such call an error result (in memory; the transcript itself stays as it was)."""
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if message["role"] != "assistant":
                continue
            calls = [b["id"] for b in message["content"] if b["type"] == "tool_use"]
            if not calls:
                continue
            following = self.messages[index + 1] if index + 1 < len(self.messages) else None
            answered = ({b["tool_use_id"] for b in following["content"] if b["type"] == "tool_result"}
                        if following is not None and following["role"] == "user" else set())
            missing = [{"type": "tool_result", "tool_use_id": call_id, "content": INTERRUPTED, "is_error": True}
                       for call_id in calls if call_id not in answered]
            if missing:
                self.messages.insert(index + 1, {"role": "user", "content": missing})
                self.ids.insert(index + 1, self.ids[index])

    def append(self, message: dict, stored: dict | None = None) -> None:
        """Add a turn; `stored` is what to persist when it differs (images are not kept).
        Turns are written to the transcript by `flush()`, so a run's writes can share a transaction."""
        self._pending.append((len(self.messages), stored or message))
        self.messages.append(message)
        self.ids.append(None)

    def flush(self) -> None:
        for index, data in self._pending:
            self.ids[index] = sessions.add_transcript(self.session_id, "message", data)
        self._pending.clear()

    def compact(self, split: int, summary: str) -> None:
        self.flush()
        keep_from = self.ids[split]
        sessions.add_transcript(self.session_id, "compaction", {"summary": summary, "keep_from": keep_from})
        self.messages = [summary_turn(summary)] + self.messages[split:]
        self.ids = [None] + self.ids[split:]


def summary_turn(summary: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": f"{SUMMARY_OPEN}\n{summary}\n{SUMMARY_CLOSE}"}]}


def user_turn(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


@dataclass
class Outcome:
    text: str = ""
    num_turns: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    is_error: bool = False
    errors: list[str] = field(default_factory=list)
    model_calls: int = 0


def _run_tool_until_stopped(ctx: ToolContext, call: dict, stop: StopSignal) -> ToolResult:
    try:
        with stop.cuttable():
            return run_tool(ctx, call["name"], call["input"])
    except RunStopped:
        return ToolResult(TOOL_STOPPED, True)


def _run_tool_with_db(ctx: ToolContext, call: dict, stop: StopSignal) -> ToolResult:
    """One of several concurrent tools, in a greenlet/thread of its own: it takes a pooled
    connection only if it queries, and gives it back when done."""
    try:
        return _run_tool_until_stopped(ctx, call, stop)
    finally:
        close_connection()


def _release_connection() -> None:
    """Give this greenlet's (thread's) connection back to the pool while it waits on something slow,
    the model or its tools; its next query takes one again.  With a bounded pool (PostgreSQL),
    waiting callers holding every connection would starve the others, or deadlock when their tools
    need one.  Not while its opener (a transaction, a `connection_context`) still counts on it."""
    if database.obj is not None and not database.in_transaction() and not database.obj._state.ctx:
        close_connection()


def execute_tools(ctx: ToolContext, calls: list[dict], stop: StopSignal) -> Iterator[tuple[dict, ToolResult]]:
    """Run one model turn's tool calls concurrently; yield (call, result) as each completes.
    A stop cuts the calls still running: each of them gets an error result saying so."""
    if len(calls) == 1:
        yield calls[0], _run_tool_until_stopped(ctx, calls[0], stop)
        return
    _release_connection()
    if gevent_active():
        from gevent.pool import Pool
        pool = Pool(MAX_PARALLEL_TOOLS)
        yield from pool.imap_unordered(lambda call: (call, _run_tool_with_db(ctx, call, stop)), calls)
        return
    with ThreadPoolExecutor(max_workers=min(len(calls), MAX_PARALLEL_TOOLS)) as executor:
        futures = {executor.submit(_run_tool_with_db, ctx, call, stop): call for call in calls}
        for future in as_completed(futures):
            yield futures[future], future.result()


class AgentLoop:
    """One run of the loop over a conversation."""

    def __init__(self, config: Config, provider: Provider, conversation: Conversation, system: str,
                 tools: list[Tool], ctx: ToolContext,
                 followups: Callable[[], list[str]] | None = None,
                 on_followup: Callable[[str], None] | None = None,
                 on_tool_use: Callable[[dict], None] | None = None,
                 on_tool_result: Callable[[dict, ToolResult], None] | None = None,
                 on_pre_compaction: Callable[[str], None] | None = None,
                 stop: StopSignal | None = None):
        self.config = config
        self.agent = config.agent
        self.provider = provider
        self.conversation = conversation
        self.system = system
        self.tools = tools
        self.ctx = ctx
        self.followups = followups
        self.on_followup = on_followup or (lambda text: None)
        self.on_tool_use = on_tool_use or (lambda call: None)
        self.on_tool_result = on_tool_result or (lambda call, result: None)
        self.on_pre_compaction = on_pre_compaction or (lambda text: None)
        self.stop = stop or StopSignal()  # nobody stops a run started without one
        self.outcome = Outcome()

    def _count(self, provider: Provider, usage: Usage) -> None:
        self.outcome.usage.add(usage)
        self.outcome.cost_usd += cost_usd(provider.name, provider.model, usage.input_tokens, usage.output_tokens)
        self.outcome.model_calls += 1

    def _drain_followups(self) -> None:
        pending = [t for t in (self.followups() if self.followups else []) if t and t.strip()]
        for text in pending:
            self.on_followup(text)
        if pending:
            self.conversation.append(user_turn("\n\n".join(pending)))

    def run(self) -> Iterator[dict]:
        outcome = self.outcome
        texts: list[str] = []
        specs = [t.spec() for t in self.tools]
        while True:
            if self.stop.requested:
                self._stopped()
                break
            if outcome.num_turns >= self.agent.max_turns:
                outcome.is_error = True
                break
            self._drain_followups()
            turn: ModelTurn | None = None
            streamed: list[str] = []
            _release_connection()
            try:
                for item in self.stop.each(self.provider.stream(
                        system=self.system, messages=self.conversation.messages, tools=specs,
                        max_tokens=self.agent.max_tokens, reasoning_effort=self.agent.reasoning_effort)):
                    if isinstance(item, str):
                        streamed.append(item)
                        yield {"type": "text_delta", "text": item}
                    else:
                        turn = item
            except ProviderError as exc:
                outcome.is_error = True
                outcome.errors.append(f"API error: {exc}")
                break
            except RunStopped:
                self._keep_partial("".join(streamed), texts)
                self._stopped()
                break
            self._count(self.provider, turn.usage)
            if turn.content:
                self.conversation.append({"role": "assistant", "content": turn.content})
            if turn.text:
                texts.append(turn.text)
            calls = turn.tool_uses
            if not calls:
                break
            outcome.num_turns += 1
            yield from self._tool_round(calls)
            self._maybe_compact(turn.usage.context_tokens)
        outcome.text = "\n".join(texts)

    def _stopped(self) -> None:
        self.outcome.is_error = True
        self.outcome.errors.append(STOPPED)

    def _keep_partial(self, text: str, texts: list[str]) -> None:
        """The text a cut model call had streamed stays the reply and the model's turn."""
        if text:
            texts.append(text)
            self.conversation.append({"role": "assistant", "content": [{"type": "text", "text": text}]})

    def _tool_round(self, calls: list[dict]) -> Iterator[dict]:
        for call in calls:
            self.on_tool_use(call)
            yield {"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["input"]}
        results: dict[str, ToolResult] = {}
        for call, result in execute_tools(self.ctx, calls, self.stop):
            results[call["id"]] = result
            self.on_tool_result(call, result)
            yield {"type": "tool_result", "tool_use_id": call["id"],
                   "content": truncate_utf8(result.content, sessions.DISPLAY_MAX_BYTES), "is_error": result.is_error}
        self.conversation.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call["id"], "content": results[call["id"]].content,
             "is_error": results[call["id"]].is_error} for call in calls]})

    # --- compaction ------------------------------------------------------------------------

    def _split_point(self) -> int:
        messages = self.conversation.messages
        split = len(messages) - self.agent.compaction.min_keep_messages
        while split > 0 and _has(messages[split], "tool_result") and _has(messages[split - 1], "tool_use"):
            split -= 1
        return split

    def _maybe_compact(self, context_tokens: int) -> None:
        if context_tokens <= self.agent.compaction.context_budget:
            return
        split = self._split_point()
        if split <= 0:
            return
        dropped = self.conversation.messages[:split]
        saved = "\n".join(b["text"] for m in dropped for b in m["content"] if b["type"] == "text")
        if saved:
            self.on_pre_compaction("## Pre-compaction save\n" + truncate_utf8(saved, 2000))
        summary = self._summarize(dropped)
        if summary is None:
            return
        self.conversation.compact(split, summary)
        sessions.record_compaction(self.conversation.session_id, context_tokens, summary, split)

    def _summarizers(self) -> Iterator[Provider]:
        agent = self.agent
        if agent.compaction_model or agent.compaction_provider:
            try:
                yield make_provider(self.config, agent.compaction_provider, agent.compaction_model)
            except NotConfigured as exc:
                log.warning("compaction provider unusable: %s", exc.message)
        yield self.provider

    def _summarize(self, dropped: list[dict]) -> str | None:
        prompt = SUMMARY_PROMPT.format(transcript=render_for_summary(dropped))
        for provider in self._summarizers():
            try:
                turn = next(item for item in provider.stream(
                    system=None, messages=[user_turn(prompt)], tools=[],
                    max_tokens=self.agent.compaction.summary_max_tokens) if isinstance(item, ModelTurn))
            except ProviderError as exc:
                log.warning("compaction summary with %s/%s failed: %s", provider.name, provider.model, exc)
                continue
            self._count(provider, turn.usage)
            if turn.text.strip():
                return turn.text.strip()
        return None


def _has(message: dict, block_type: str) -> bool:
    return any(b["type"] == block_type for b in message["content"])


def render_for_summary(messages: list[dict]) -> str:
    lines = []
    for message in messages:
        for block in message["content"]:
            kind = block["type"]
            if kind == "text":
                lines.append(f"{message['role'].upper()}: {block['text']}")
            elif kind == "tool_use":
                lines.append(f"TOOL CALL {block['name']}: {block['input']}")
            elif kind == "tool_result":
                status = "error" if block["is_error"] else "result"
                lines.append(f"TOOL {status.upper()}: {block['content'][:500]}")
    return "\n".join(lines)
