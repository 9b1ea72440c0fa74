"""Chat sessions: channel-aware resolution, titles, display history, transcripts and usage.

Plain domain logic over the session models (no Flask).  Resolution runs in one write
transaction (the caller's `db.write_transaction` on `resolution_lock`), so two workers receiving
the same channel key at once continue one session instead of opening two.  Sessions are private:
every lookup is scoped to the effective user id, and listing/reading for a non-admin viewer only
ever returns that viewer's sessions.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Callable, Iterable

import orjson
from peewee import fn

from .config import AgentConfig
from .db import database, fetch_all, insert_returning_id, placeholders
from .errors import NotFound
from .models import CompactionLog, Message, Session, TranscriptEntry, UsageStat, new_uuid
from .timeutil import now_iso, parse_rfc3339, to_rfc3339, utcnow

AUTO_CLOSE_SUMMARY = "Auto-closed: inactivity"
TITLE_MAX_BYTES = 100
DISPLAY_MAX_BYTES = 500
SESSION_NOT_FOUND = "Session not found"
SCHEDULER_MAIN_KEY = "main"          # the session main-mode jobs and the heartbeat continue (spec §6.8)
SCHEDULER_KEY_PREFIX = "scheduler:"  # + a fresh UUID: the session of one isolated job run
TRANSCRIPT_CACHE_BYTES = 16 << 20  # of transcript JSON read, per process (objects take a few times more)
_LONG_DIGITS = re.compile(r"\d{19}")  # a number that may not fit orjson's 64-bit integers


# --- statements run on every chat ------------------------------------------------------------
# Written out once instead of built by peewee per call: query building was a large share of a
# chat's server-side time.  Table names and inserted columns are taken from the models.

def _table(model) -> str:
    return f'"{model._meta.table_name}"'


def _insert(model, *fields) -> str:
    columns = ", ".join(f'"{getattr(model, name).column_name}"' for name in fields)
    return f"INSERT INTO {_table(model)} ({columns}) VALUES ({', '.join('?' for _ in fields)})"


@cache
def _statements() -> dict[str, str]:
    return {
        "open_session": f"SELECT {', '.join(SESSION_COLUMNS)} FROM {_table(Session)} WHERE channel = ? "
                        "AND channel_session_key = ? AND user_id = ? AND is_closed = FALSE "
                        "ORDER BY last_message_at DESC LIMIT 1",
        "touch": f"UPDATE {_table(Session)} SET last_message_at = ?, message_count = message_count + 1 "
                 "WHERE id = ?",
        "new_session": _insert(Session, *SESSION_COLUMNS),
        "title": f"UPDATE {_table(Session)} SET title = ? WHERE id = ? AND (title IS NULL OR TRIM(title) = '')",
        "message": _insert(Message, "session", "role", "content", "timestamp"),
        "transcript": _insert(TranscriptEntry, "session", "kind", "data", "timestamp"),
        "usage": _insert(UsageStat, "session", "turn", "input_tokens", "output_tokens", "cache_read",
                         "cache_write", "cost_usd", "model", "timestamp"),
        # One statement, so one snapshot on PostgreSQL too: the rows after an id, and how many
        # rows there are up to it (part 0, first).
        "transcript_since": f"SELECT 1, id, kind, data FROM {_table(TranscriptEntry)} WHERE session_id = ? "
                            f"AND id > ? UNION ALL SELECT 0, COUNT(*), NULL, NULL FROM {_table(TranscriptEntry)} "
                            "WHERE session_id = ? AND id <= ? ORDER BY 1, 2",
        **_listing_statements(),
    }


# --- listings: rows straight from the cursor into JSON-ready dicts (no model instances) -------

SESSION_COLUMNS = ("id", "created_at", "last_message_at", "is_closed", "summary", "title", "message_count",
                   "channel", "channel_session_key", "user_id", "is_read")
MESSAGE_COLUMNS = ("id", "role", "content", "timestamp")  # session_id: the one asked for


def _listing_statements() -> dict[str, str]:
    sessions = f"SELECT {', '.join(SESSION_COLUMNS)} FROM {_table(Session)}"
    newest_first = "ORDER BY last_message_at DESC LIMIT ?"
    messages = (f"SELECT {', '.join(f'm.{column}' for column in MESSAGE_COLUMNS)} FROM {_table(Session)} s "
                f"LEFT JOIN {_table(Message)} m ON m.session_id = s.id")
    return {
        "sessions": f"{sessions} {newest_first}",
        "sessions_of": f"{sessions} WHERE user_id = ? {newest_first}",
        "session": f"{sessions} WHERE id = ?",
        "session_of": f"{sessions} WHERE id = ? AND user_id = ?",
        # The session (one row of NULLs when it has no messages) and its messages in one statement.
        "messages": f"{messages} WHERE s.id = ? ORDER BY m.id",
        "messages_of": f"{messages} WHERE s.id = ? AND s.user_id = ? ORDER BY m.id",
    }


def _execute(name: str, params: tuple):
    return database.execute_sql(placeholders(_statements()[name]), params)


def _fetch(name: str, params: tuple) -> list[tuple]:
    return fetch_all(_statements()[name], params)


def truncate_utf8(text: str, max_bytes: int, suffix: str = "...") -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes on a character boundary, plus `suffix` if cut."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore") + suffix


def make_title(text: str) -> str:
    return truncate_utf8(text, TITLE_MAX_BYTES)


# --- resolution ------------------------------------------------------------------------------

def channel_and_key(channel_id: str | None, channel_session_key: str | None, user_id: str | None) -> tuple[str, str]:
    """Map a request's channel fields to the stored (channel, key) (spec §2.1)."""
    if channel_id == "telegram":
        return "telegram", channel_session_key or user_id or "default"
    return "main", channel_session_key or str(uuid.uuid4())


def scheduler_key(main_session: bool) -> str:
    """The channel key a scheduled job runs under: its owner's main session, or a new session
    whose key says the scheduler opened it (spec §2.1 stores both on channel `main`)."""
    return SCHEDULER_MAIN_KEY if main_session else f"{SCHEDULER_KEY_PREFIX}{uuid.uuid4()}"


def origin(channel: str, key: str | None) -> str:
    """Where a session's conversation comes from: `scheduler` for the keys the scheduler uses
    (`scheduler_key`), else the session's channel."""
    if channel == "main" and key is not None and (key == SCHEDULER_MAIN_KEY or key.startswith(SCHEDULER_KEY_PREFIX)):
        return "scheduler"
    return channel


def gap_minutes(channel: str, agent: AgentConfig) -> int | None:
    """Inactivity gap after which a channel's session auto-closes; None = never (main)."""
    if channel == "telegram":
        return agent.channels.telegram.gap_minutes
    return None


@dataclass
class Resolution:
    session: Session
    is_new: bool
    closed_session_id: str | None = None


def resolution_lock(channel: str, key: str, user_id: str) -> str:
    """The write-transaction resource that serialises resolving one (channel, key, user)."""
    return f"session:{channel}:{key}:{user_id}"


def resolve_session(channel: str, key: str, user_id: str, text: str, gap: int | None,
                    on_auto_close: Callable[[Session], None] | None = None) -> Resolution:
    """Find or create the session for (channel, key, user), touch it and apply the title rule.

    Runs in the caller's `write_transaction(resolution_lock(channel, key, user_id))`, which also
    stores the message that led here (one transaction, not a nested one, per chat).  A continued
    session past its gap is closed as inactive and handed to `on_auto_close`, whose caller exports
    it after the commit.
    """
    now = utcnow()
    stamp = to_rfc3339(now)
    closed: Session | None = None
    rows = _fetch("open_session", (channel, key, user_id))
    current = _session_from_row(rows[0]) if rows else None
    if current is not None and gap is not None:
        last = parse_rfc3339(current.last_message_at) or now
        if now - last >= timedelta(minutes=gap):
            Session.update(is_closed=True, summary=AUTO_CLOSE_SUMMARY).where(Session.id == current.id).execute()
            current.is_closed, current.summary = True, AUTO_CLOSE_SUMMARY
            closed, current = current, None
    is_new = current is None
    if is_new:
        current = _new_session(stamp, channel, key, user_id, text)
    else:
        touch(current, stamp)
        apply_title(current, text)
    if closed is not None and on_auto_close is not None:
        on_auto_close(closed)
    return Resolution(current, is_new, closed.id if closed else None)


def _new_session(stamp: str, channel: str, key: str, user_id: str, text: str) -> Session:
    """Insert a session opened at `stamp` by the message `text`: touched once and titled by it
    (`touch`, `apply_title`) in its one insert, plain SQL as the rest of resolving (peewee's insert
    building cost more than the insert), the model's defaults otherwise."""
    title = make_title(text)
    data = {"id": new_uuid(), "created_at": stamp, "last_message_at": stamp, "is_closed": False, "summary": None,
            "title": title if title.strip() else None, "message_count": 1, "channel": channel,
            "channel_session_key": key, "user_id": user_id, "is_read": True}
    row = tuple(data[column] for column in SESSION_COLUMNS)
    _execute("new_session", row)
    return _session_from_row(row)


def _session_from_row(row: tuple) -> Session:
    """A SESSION_COLUMNS row as the Session peewee's own query would give (booleans from SQLite's
    0/1), without the query's per-statement set-up, a large part of resolving a session."""
    data = dict(zip(SESSION_COLUMNS, row))
    data["is_closed"], data["is_read"] = bool(data["is_closed"]), bool(data["is_read"])
    session = Session(__no_default__=1, **data)
    session._dirty.clear()
    return session


def touch(session: Session, stamp: str | None = None) -> None:
    stamp = stamp or now_iso()
    _execute("touch", (stamp, session.id))
    session.last_message_at = stamp
    session.message_count += 1


def apply_title(session: Session, text: str) -> None:
    """First non-blank title wins; an empty/whitespace title counts as unset."""
    title = make_title(text)
    if not title.strip() or (session.title or "").strip():
        return
    _execute("title", (title, session.id))
    session.title = title


def close_session(session_id: str, summary: str | None) -> None:
    Session.update(is_closed=True, summary=summary).where(Session.id == session_id).execute()


def mark_read(session: Session, is_read: bool) -> None:
    Session.update(is_read=is_read).where(Session.id == session.id).execute()


# --- rows ------------------------------------------------------------------------------------

def add_message(session_id: str, role: str, content: str) -> int:
    """Store a display row; returns its id."""
    return insert_returning_id(_statements()["message"], (session_id, role, content, now_iso()))


def add_user_message(session: Session, text: str) -> int:
    row_id = add_message(session.id, "user", text)
    apply_title(session, text)
    return row_id


def tool_use_row(tool_id: str, name: str, input_: dict) -> str:
    return json.dumps({"type": "tool_use", "id": tool_id, "name": name, "input": input_})


def tool_result_row(tool_use_id: str, content: str, is_error: bool) -> str:
    return json.dumps({"type": "tool_result", "tool_use_id": tool_use_id,
                       "content": truncate_utf8(content, DISPLAY_MAX_BYTES), "is_error": is_error})


def add_transcript(session_id: str, kind: str, data: dict) -> int:
    return insert_returning_id(_statements()["transcript"], (session_id, kind, json.dumps(data), now_iso()))


def _load_entry(data: str):
    """One stored transcript entry: orjson (every chat reads the whole transcript), or the json
    module for what orjson refuses (lone surrogates, NaN) or would read differently (integers past
    64 bits become floats there)."""
    if not _LONG_DIGITS.search(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


@dataclass(frozen=True)
class _Transcript:
    """A session's transcript as read so far: the latest compaction's summary, the messages kept
    after it (with the bytes of JSON each was read from) and how many rows, of any kind, there
    are up to `last_id`."""
    summary: str | None = None
    keep_from: int = 0
    entries: tuple[tuple[int, dict], ...] = ()
    sizes: tuple[int, ...] = ()
    last_id: int = 0
    rows: int = 0


class _TranscriptCache:
    """The transcripts this process read last, least recently used dropped past `max_bytes`.

    Every chat reads its session's transcript (in its write transaction); this reads only the
    rows added since, by any process.  Rows are only ever added, so the rows up to `last_id`
    are the ones cached as long as their count is the same; a count that changed (a row
    committed late with a lower id, or the session deleted) makes it read the whole transcript
    again.  Message dicts are shared between readers and never modified.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.size = 0
        self.known: OrderedDict[str, _Transcript] = OrderedDict()
        self.lock = threading.Lock()

    def load(self, session_id: str) -> _Transcript:
        with self.lock:
            known = self.known.get(session_id) or _Transcript()
        rows = _fetch("transcript_since", (session_id, known.last_id, session_id, known.last_id))
        if rows[0][1] != known.rows:
            known = _Transcript()
            rows = _fetch("transcript_since", (session_id, 0, session_id, 0))
        transcript = _extended(known, rows[1:])
        self._keep(session_id, transcript)
        return transcript

    def _keep(self, session_id: str, transcript: _Transcript) -> None:
        with self.lock:
            old = self.known.pop(session_id, None)
            self.size += sum(transcript.sizes) - (sum(old.sizes) if old else 0)
            self.known[session_id] = transcript
            while self.size > self.max_bytes and self.known:
                self.size -= sum(self.known.popitem(last=False)[1].sizes)


def _extended(known: _Transcript, rows: list[tuple]) -> _Transcript:
    """`known` with the rows read after it (id order); JSON is parsed only for messages kept."""
    summary, keep_from, entries, sizes = known.summary, known.keep_from, known.entries, known.sizes
    added: list[tuple[int, str]] = []
    for _, entry_id, kind, data in rows:
        if kind == "compaction":
            marker = _load_entry(data)
            summary, keep_from = marker["summary"], marker["keep_from"]
            added = [(i, d) for i, d in added if i >= keep_from]
        else:
            added.append((entry_id, data))
    if keep_from != known.keep_from:
        kept = [index for index, (entry_id, _) in enumerate(entries) if entry_id >= keep_from]
        entries, sizes = tuple(entries[i] for i in kept), tuple(sizes[i] for i in kept)
    return _Transcript(summary, keep_from, entries + tuple((i, _load_entry(d)) for i, d in added),
                       sizes + tuple(len(d) for _, d in added), rows[-1][1] if rows else known.last_id,
                       known.rows + len(rows))


_transcripts = _TranscriptCache(TRANSCRIPT_CACHE_BYTES)


def load_transcript(session_id: str) -> tuple[str | None, tuple[tuple[int, dict], ...]]:
    """(summary of the latest compaction or None, ((entry id, message), …) after it), oldest first."""
    transcript = _transcripts.load(session_id)
    return transcript.summary, transcript.entries


def record_usage(session_id: str, turn: int, input_tokens: int, output_tokens: int, cache_read: int,
                 cache_write: int, cost_usd: float, model: str | None) -> None:
    _execute("usage", (session_id, turn, input_tokens, output_tokens, cache_read, cache_write, cost_usd, model,
                       now_iso()))


def usage_summary(session_id: str) -> dict:
    """Sums of one session's usage rows (all zero when there are none)."""
    row = (UsageStat.select(fn.COALESCE(fn.SUM(UsageStat.input_tokens), 0),
                            fn.COALESCE(fn.SUM(UsageStat.output_tokens), 0),
                            fn.COALESCE(fn.SUM(UsageStat.cache_read), 0),
                            fn.COALESCE(fn.SUM(UsageStat.cache_write), 0),
                            fn.COALESCE(fn.SUM(UsageStat.cost_usd), 0.0),
                            fn.COUNT(UsageStat.id))
           .where(UsageStat.session == session_id).tuples().get())
    keys = ("input_tokens", "output_tokens", "cache_read", "cache_write", "cost_usd", "total_turns")
    # Plain int/float: PostgreSQL sums integers as NUMERIC (Decimal in Python).
    return {key: float(value) if key == "cost_usd" else int(value) for key, value in zip(keys, row)}


def record_compaction(session_id: str, pre_tokens: int, summary: str, messages_compacted: int,
                      trigger: str = "auto") -> None:
    CompactionLog.create(session=session_id, trigger=trigger, pre_tokens=pre_tokens, summary=summary,
                         messages_compacted=messages_compacted, timestamp=now_iso())


# --- reading (API) ---------------------------------------------------------------------------

def _session_json(row: tuple) -> dict:
    # Unpacked into a dict display: a third cheaper than dict(zip(...)) on the listing hot path.
    (id_, created_at, last_message_at, is_closed, summary, title, message_count, channel, channel_session_key,
     user_id, is_read) = row
    return {"id": id_, "created_at": created_at, "last_message_at": last_message_at, "is_closed": bool(is_closed),
            "summary": summary, "title": title, "message_count": message_count, "channel": channel,
            "channel_session_key": channel_session_key, "user_id": user_id, "is_read": bool(is_read),
            "origin": origin(channel, channel_session_key)}


def list_sessions(viewer_id: str | None, limit: int) -> list[dict]:
    """JSON-ready sessions, newest activity first; `viewer_id` None means an admin view of every
    user's sessions."""
    rows = _fetch("sessions", (limit,)) if viewer_id is None else _fetch("sessions_of", (viewer_id, limit))
    return [_session_json(row) for row in rows]


def session_json(session_id: str, viewer_id: str | None) -> dict:
    """The JSON-ready session, or NotFound when unknown or (for a non-admin viewer) someone else's."""
    rows = _fetch("session", (session_id,)) if viewer_id is None else _fetch("session_of", (session_id, viewer_id))
    if not rows:
        raise NotFound(SESSION_NOT_FOUND)
    return _session_json(rows[0])


def messages_json(session_id: str, viewer_id: str | None) -> list[dict]:
    """The session's JSON-ready display messages, oldest first (NotFound as for `session_json`)."""
    rows = (_fetch("messages", (session_id,)) if viewer_id is None
            else _fetch("messages_of", (session_id, viewer_id)))
    if not rows:
        raise NotFound(SESSION_NOT_FOUND)
    return [{"id": id_, "session_id": session_id, "role": role, "content": content, "timestamp": timestamp}
            for id_, role, content, timestamp in rows if id_ is not None]


def get_session(session_id: str, viewer_id: str | None) -> Session:
    """The session, or NotFound when unknown or (for a non-admin viewer) someone else's."""
    query = Session.select().where(Session.id == session_id)
    if viewer_id is not None:
        query = query.where(Session.user_id == viewer_id)
    session = query.first()
    if session is None:
        raise NotFound(SESSION_NOT_FOUND)
    return session


def export_messages(session_id: str) -> Iterable[tuple[str, str]]:
    return Message.select(Message.role, Message.content).where(Message.session == session_id).order_by(Message.id).tuples()
