"""Chat runs that outlive the socket that started them.

A run executes in its own greenlet of the worker that received the message and numbers every
frame it produces with a per-run `seq`.  Frames go to two places: an in-memory list that followers
in the same worker read at once, and the `chat_run_events` table (written in batches by one writer
greenlet per worker, at most one batch per `STORE_INTERVAL` while frames stream), from which
followers in any worker replay and continue after a doorbell ring.

One run may hold several streams: follow-ups that arrive too late to be injected and queue-mode
messages are stored in `chat_run_followups` and run, joined, as the next stream of the same run,
so the `seq` of a run keeps counting and a resuming client sees one ordered sequence.
A run whose worker vanished (its heartbeat went stale) is closed by whoever notices, with a
`stream_end` saying it was interrupted.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from json.encoder import encode_basestring as encode_string
from typing import Callable, Iterator

import gevent
from gevent.event import AsyncResult, Event
from peewee import PeeweeException

from ..agent.pipeline import Attachment, ChatRequest, record_unstarted, run_chat
from ..agent.stopping import StopSignal
from ..config import Config
from ..db import database, fetch_all, placeholders, write_transaction
from ..errors import StarpodError, client_message, new_request_id
from ..models import ChatRun, RunEvent, RunFollowup, new_uuid
from ..timeutil import now_iso, parse_rfc3339, to_rfc3339, utcnow
from .doorbell import Doorbell

log = logging.getLogger(__name__)

RUNNING, FINISHED = "running", "finished"
POLL_SECS = 1.0                       # followers of runs in other workers re-read at least this often
ORPHAN_AFTER = timedelta(seconds=60)  # a running run whose heartbeat is older belongs to a dead worker
RETENTION = timedelta(hours=24)       # finished runs are kept this long (the last one per session too)
MAX_BATCH = 2000
# While frames stream, the writer stores at most one batch per interval instead of one per frame
# (each store is a transaction and a doorbell ring); an operation someone waits for cuts it short.
STORE_INTERVAL = 0.002
STORE_ATTEMPTS = 5
INTERRUPTED = "Run interrupted: the server stopped before it finished"
# The statements every run executes, written once: building them with Peewee costs 0.1-0.2 ms each.
RUNS, EVENTS, FOLLOWUPS = ChatRun._meta.table_name, RunEvent._meta.table_name, RunFollowup._meta.table_name
INSERT_RUN = f"INSERT INTO {RUNS} (id, user_id, status, worker_id, created_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)"
INSERT_EVENTS = f"INSERT INTO {EVENTS} (run_id, seq, session_id, frame) VALUES (?, ?, ?, ?)"
HAS_PENDING = f"SELECT 1 FROM {FOLLOWUPS} WHERE run_id = ? AND status = 'pending' LIMIT 1"
HAS_PENDING_INJECT = f"SELECT 1 FROM {FOLLOWUPS} WHERE run_id = ? AND status = 'pending' AND mode = 'inject' LIMIT 1"
FINISH_RUN = f"UPDATE {RUNS} SET status = '{FINISHED}', finished_at = ? WHERE id = ?"
# Found from the session's stream_start events: a `status` test beside `id IN` would let the
# planner walk every finished run instead (SQLite does), a scan per new stream that grows with them.
FORGET_OLDER_RUNS = (f"DELETE FROM {RUNS} WHERE id IN (SELECT e.run_id FROM {EVENTS} e JOIN {RUNS} r "
                     f"ON r.id = e.run_id WHERE e.session_id = ? AND e.run_id <> ? AND r.status = '{FINISHED}')")
# What a follower of another worker's run reads on every wake-up: the run's state and its new
# events in one statement, so one snapshot (a finished run's events are all there).
FOLLOW_STORED = (f"SELECT r.status, r.worker_id, r.heartbeat_at, e.seq, e.frame FROM {RUNS} r "
                 f"LEFT JOIN {EVENTS} e ON e.run_id = r.id AND e.seq > ? WHERE r.id = ? ORDER BY e.seq")


def _exists(statement: str, *params) -> bool:
    return database.execute_sql(placeholders(statement), params).fetchone() is not None


def run_lock(run_id: str) -> str:
    """The write-transaction resource of one run's status and follow-ups."""
    return f"run:{run_id}"


@dataclass
class RunSpec:
    """What one stream of a run answers."""
    text: str
    user_id: str
    is_admin: bool
    channel_id: str = "main"
    channel_session_key: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    prompt_notes: str = ""


def encode(frame: dict, seq: int) -> str:
    """The wire text of `frame` with its `seq` right after `type`."""
    if frame["type"] == "text_delta" and len(frame) == 2:  # the bulk of all frames: skip the dict copy
        # (json.dumps with ensure_ascii=False builds an encoder per call: 20 times the string's encoding)
        return f'{{"type":"text_delta","seq":{seq},"text":{encode_string(frame["text"])}}}'
    numbered = {"type": frame["type"], "seq": seq}
    numbered.update((k, v) for k, v in frame.items() if k != "type")
    return json.dumps(numbered, ensure_ascii=False, separators=(",", ":"))


def failed_stream_end(session_id: str, message: str) -> dict:
    return {"type": "stream_end", "session_id": session_id, "num_turns": 0, "cost_usd": 0.0,
            "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
            "is_error": True, "errors": [message], "text": ""}


# What a direct follower (`LocalRun.follow` with `deliver`) did with the frames handed to it.
SENT = "sent"          # written whole: it stays direct
QUEUED = "queued"      # taken, but the socket was full: it goes back to its own greenlet
REFUSED = "refused"    # not taken (its socket is busy): its own greenlet sends them


class _DirectFollower:
    def __init__(self, deliver: Callable[[list[str]], str], position: int):
        self.deliver = deliver
        self.position = position
        self.detached = Event()


class LocalRun:
    """A run executing in this worker; its frames stay in memory while it runs.

    A follower that has caught up may take new frames directly: once the run's greenlet pauses
    (waits for the provider), the event loop hands every frame added since to it at once (its
    `deliver` writes them if that needs no waiting), instead of waking the follower's greenlet per
    frame; whenever it cannot, the follower's greenlet takes over."""

    def __init__(self, run_id: str, user_id: str):
        self.id = run_id
        self.user_id = user_id
        self.frames: list[str] = []
        self.session_ids: set[str] = set()
        self.stop = StopSignal()  # of the stream running now (stops.py)
        self.finished = False
        self.greenlet: gevent.Greenlet | None = None
        self._changed = Event()
        self._direct: list[_DirectFollower] = []
        self._handing_over = False
        self._loop = gevent.get_hub().loop

    def add(self, text: str) -> None:
        self.frames.append(text)
        if self._direct and not self._handing_over:
            self._handing_over = True
            self._loop.run_callback(self._hand_over)
        self._wake()

    def close(self) -> None:
        self.finished = True
        for follower in list(self._direct):  # their greenlets send what is left
            self._detach(follower)
        self._wake()

    def _wake(self) -> None:
        if self._changed.linkcount():  # nobody waits while every follower is direct
            changed, self._changed = self._changed, Event()
            changed.set()

    def _hand_over(self) -> None:
        self._handing_over = False
        for follower in list(self._direct):
            batch = self.frames[follower.position:]
            try:
                outcome = follower.deliver(batch)
            except Exception:  # one client's failure must not touch the run
                log.exception("direct delivery of run %s failed", self.id)
                outcome = REFUSED
            if outcome != REFUSED:
                follower.position += len(batch)
            if outcome != SENT:
                self._detach(follower)

    def _detach(self, follower: _DirectFollower) -> None:
        self._direct.remove(follower)
        follower.detached.set()

    def follow(self, after_seq: int, deliver: Callable[[list[str]], str] | None = None) -> Iterator[list[str]]:
        """The frames after `after_seq` in batches: every frame there is each time the follower
        asks, so one that fell behind catches up in one go.  With `deliver`, a follower that has
        caught up takes the next frames directly (see the class) until that fails."""
        position = max(after_seq, 0)
        while True:
            changed = self._changed
            if position < len(self.frames):
                batch = self.frames[position:]
                position += len(batch)
                yield batch
            elif self.finished:
                return
            elif deliver is None:
                changed.wait()
            else:
                position = self._follow_directly(deliver, position)

    def _follow_directly(self, deliver: Callable[[list[str]], str], position: int) -> int:
        """Take frames through `deliver` until detached; the position reached."""
        follower = _DirectFollower(deliver, position)
        self._direct.append(follower)
        try:
            follower.detached.wait()
        finally:
            if follower in self._direct:  # its greenlet was killed: the client went away
                self._direct.remove(follower)
        return follower.position


class RunManager:
    """Every run of this worker, the batch writer of their events, and following any run."""

    def __init__(self, config: Config, doorbell: Doorbell, changed_elsewhere: Callable[[], Event]):
        self.config = config
        self.doorbell = doorbell
        self.changed_elsewhere = changed_elsewhere
        self.local: dict[str, LocalRun] = {}
        # Operations for the writer, in order: a plain list it takes whole (a queue would cost a
        # call per operation on either side), and an event set when the list is no longer empty.
        self._queued: list = []
        self._arrived = Event()
        self._urgent = Event()  # set when an operation that someone waits for is queued
        self._batch_started = 0.0
        self._writer = gevent.spawn(self._write_loop)

    # --- starting and executing ----------------------------------------------------------

    def start(self, spec: RunSpec) -> str:
        run_id, now = new_uuid(), now_iso()
        with database.connection_context():
            database.execute_sql(placeholders(INSERT_RUN), (run_id, spec.user_id, RUNNING, self.doorbell.worker_id,
                                                            now, now))
        run = LocalRun(run_id, spec.user_id)
        self.local[run.id] = run
        run.greenlet = gevent.spawn(self._execute, run, spec)
        return run.id

    def _execute(self, run: LocalRun, spec: RunSpec | None) -> None:
        try:
            with database.connection_context():
                while spec is not None:
                    self._stream(run, spec)
                    run.stop = StopSignal()  # a stop ends one stream: follow-ups get a stream of their own
                    spec = self._next_spec(run)
        except Exception:
            log.exception("run %s failed outside its stream", run.id)
        finally:
            run.close()
            self.local.pop(run.id, None)

    def _stream(self, run: LocalRun, spec: RunSpec) -> None:
        request = ChatRequest(text=spec.text, user_id=spec.user_id, is_admin=spec.is_admin,
                              channel_id=spec.channel_id, channel_session_key=spec.channel_session_key,
                              attachments=spec.attachments, prompt_notes=spec.prompt_notes,
                              followups=partial(self.claim_injected, run.id), stop=run.stop)
        session_id = None
        try:
            for frame in run_chat(request, self.config):
                if frame["type"] == "stream_start":
                    session_id = self._opened(run, frame["session_id"])
                self._publish(run, frame)
        except Exception as exc:
            reason = self._reason(run, spec, exc)
            if session_id is None and self._unstarted(exc):
                session_id = self._record_unstarted(run, request)
            if session_id is None:
                self._publish(run, {"type": "error", "message": f"Chat error: {reason}"})
            else:
                self._publish(run, failed_stream_end(session_id, f"Stream error: {reason}"))

    @staticmethod
    def _opened(run: LocalRun, session_id: str) -> str:
        run.session_ids.add(session_id)
        return session_id

    @staticmethod
    def _reason(run: LocalRun, spec: RunSpec, exc: Exception) -> str:
        """The error text the run's followers see; server detail only for admins, always logged."""
        if isinstance(exc, StarpodError) and exc.status < 500:
            return exc.message
        request_id = new_request_id()
        log.error("run %s failed (request id %s): %s", run.id, request_id, exc,
                  exc_info=not isinstance(exc, StarpodError))
        return f"{client_message(exc, spec.is_admin)} (request id {request_id})"

    @staticmethod
    def _unstarted(exc: Exception) -> bool:
        """A valid message whose run could not start (no provider key, ...), as opposed to a
        message refused for what it is (4xx) or a crash."""
        return isinstance(exc, StarpodError) and exc.status >= 500

    def _record_unstarted(self, run: LocalRun, request: ChatRequest) -> str | None:
        """Keep the user's text of a run that could not start and open its stream; None if even
        that fails (the client then gets a lone error frame)."""
        try:
            session_id = record_unstarted(request, self.config)
        except Exception:
            log.exception("run %s: storing the unanswered message failed", run.id)
            return None
        self._publish(run, {"type": "stream_start", "session_id": self._opened(run, session_id)})
        return session_id

    def _publish(self, run: LocalRun, frame: dict) -> None:
        seq = len(run.frames) + 1
        text = encode(frame, seq)
        if frame["type"] == "stream_start":
            # Stored before anyone sees it: a client holding a stream_start can resume its run from
            # any worker, which finds the run by this row.
            self._submit("event", (run.id, seq, frame["session_id"], text))
            run.add(text)
        else:
            run.add(text)
            self._queue(("event", (run.id, seq, None, text), None))

    def _next_spec(self, run: LocalRun) -> RunSpec | None:
        """The next stream from follow-ups that came too late or were queued; None finishes the run."""
        pending = self._submit("finish", run.id) or []
        if not pending:
            return None
        first = pending[0]
        return RunSpec(text="\n\n".join(row.text for row in pending), user_id=first.user_id,
                       is_admin=first.is_admin, channel_id=first.channel_id,
                       channel_session_key=first.channel_session_key)

    def _submit(self, kind: str, payload=None):
        """Queue an operation behind every event queued so far and wait for its result."""
        result = AsyncResult()
        self._queue((kind, payload, result))
        self._urgent.set()
        return result.get()

    def sync(self) -> None:
        """Wait until everything queued so far is stored."""
        self._submit("sync")

    # --- follow-ups ----------------------------------------------------------------------

    def add_followup(self, run_id: str, mode: str, spec: RunSpec) -> bool:
        """Store a follow-up for a running run; False when the run has finished meanwhile."""
        with database.connection_context(), write_transaction(run_lock(run_id)):
            running = ChatRun.select().where((ChatRun.id == run_id) & (ChatRun.status == RUNNING)).exists()
            if running:
                RunFollowup.create(run=run_id, mode=mode, text=spec.text, user_id=spec.user_id,
                                   is_admin=spec.is_admin, channel_id=spec.channel_id,
                                   channel_session_key=spec.channel_session_key)
        return running

    def claim_injected(self, run_id: str) -> list[str]:
        """Inject-mode follow-ups not yet given to the model (called by the pipeline's loop)."""
        if not _exists(HAS_PENDING_INJECT, run_id):
            return []
        pending = ((RunFollowup.run == run_id) & (RunFollowup.status == "pending")
                   & (RunFollowup.mode == "inject"))
        with write_transaction(run_lock(run_id)):
            rows = list(RunFollowup.select().where(pending).order_by(RunFollowup.id))
            RunFollowup.update(status="claimed").where(RunFollowup.id.in_([r.id for r in rows])).execute()
        return [row.text for row in rows]

    # --- the batch writer ----------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            ops = self._next_batch(wait=True)
            # One pooled connection while batches follow each other: taking it from the pool for
            # each batch cost more than the batch's insert.  A failed batch gives it back, so
            # that its retries take fresh ones (the failure may have been the connection's).
            try:
                with database.connection_context():
                    while ops and self._stored_at_once(ops):
                        ops = self._next_batch(wait=False)
            except PeeweeException:  # no connection to be had
                log.warning("storing %d run events failed (attempt 1)", len(ops), exc_info=True)
            if ops:
                self._done(ops, self._store_retrying(ops))

    def _next_batch(self, wait: bool) -> list:
        """What is queued (up to MAX_BATCH operations), at most one batch per STORE_INTERVAL unless
        an operation someone waits for is queued; with `wait`, waits for the first one, else []
        when nothing came within the interval."""
        if wait:
            self._arrived.wait()
        else:
            rest = STORE_INTERVAL - (time.monotonic() - self._batch_started)
            if rest > 0:
                self._urgent.wait(rest)
            if not self._queued:
                return []
        self._arrived.clear()
        self._urgent.clear()
        self._batch_started = time.monotonic()
        ops, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
        if self._queued:
            self._arrived.set()
        return ops

    def _queue(self, op: tuple) -> None:
        self._queued.append(op)
        if not self._arrived.is_set():
            self._arrived.set()

    def _stored_at_once(self, ops: list) -> bool:
        """Store `ops` in one attempt; False when that failed."""
        try:
            results = self._attempt(ops)
        except PeeweeException:
            log.warning("storing %d run events failed (attempt 1)", len(ops), exc_info=True)
            return False
        self._done(ops, results)
        return True

    def _done(self, ops: list, results: list) -> None:
        for (_, _, waiter), value in zip(ops, results):
            if waiter is not None:
                waiter.set(value)
        self.doorbell.ring_others()

    def _store_retrying(self, ops: list) -> list:
        """The results of `ops` once stored by a retry (each with a connection of its own), or
        None each if every attempt failed."""
        for attempt in range(1, STORE_ATTEMPTS):
            gevent.sleep(0.05 * 2 ** (attempt - 1))
            try:
                with database.connection_context():
                    return self._attempt(ops)
            except PeeweeException:
                log.warning("storing %d run events failed (attempt %d)", len(ops), attempt + 1, exc_info=True)
        log.error("dropped %d run events after %d attempts", len(ops), STORE_ATTEMPTS)
        return [None] * len(ops)

    def _attempt(self, ops: list) -> list:
        finished = [run_lock(payload) for kind, payload, _ in ops if kind == "finish"]
        with write_transaction(*finished):
            return self._apply(ops)

    def _apply(self, ops: list) -> list:
        events = [payload for kind, payload, _ in ops if kind == "event"]
        if events:  # one prepared statement: building a Peewee insert per batch costs more than the write
            database.cursor().executemany(placeholders(INSERT_EVENTS), events)
        for run_id, _, session_id, _ in events:
            if session_id:
                self._forget_older_runs(session_id, run_id)
        return [self._finish(payload) if kind == "finish" else None for kind, payload, _ in ops]

    @staticmethod
    def _finish(run_id: str) -> list[RunFollowup]:
        if not _exists(HAS_PENDING, run_id):
            database.execute_sql(placeholders(FINISH_RUN), (now_iso(), run_id))
            return []
        pending = list(RunFollowup.select()
                       .where((RunFollowup.run == run_id) & (RunFollowup.status == "pending"))
                       .order_by(RunFollowup.id))
        RunFollowup.update(status="claimed").where(RunFollowup.id.in_([p.id for p in pending])).execute()
        return pending

    @staticmethod
    def _forget_older_runs(session_id: str, run_id: str) -> None:
        """Only the newest run of a session stays replayable once it has finished."""
        database.execute_sql(placeholders(FORGET_OLDER_RUNS), (session_id, run_id))

    # --- following -----------------------------------------------------------------------

    def find_run(self, session_id: str, user_id: str | None) -> str | None:
        """The newest run that streamed `session_id`, when `user_id` (None = anyone) owns it."""
        local = [run for run in self.local.values() if session_id in run.session_ids]
        if local:
            run_id, owner = local[-1].id, local[-1].user_id
        else:
            with database.connection_context():
                row = (RunEvent.select(RunEvent.run, ChatRun.user_id).join(ChatRun)
                       .where(RunEvent.session_id == session_id)
                       .order_by(RunEvent.id.desc()).tuples().first())
            if row is None:
                return None
            run_id, owner = row
        return run_id if user_id is None or owner == user_id else None

    def follow(self, run_id: str, after_seq: int,
               deliver: Callable[[list[str]], str] | None = None) -> Iterator[list[str]]:
        """Every frame of the run after `after_seq`, then the new ones as they come, until its end;
        in batches of whatever is there when the follower asks.  `deliver`: see `LocalRun`
        (runs of other workers come from the database in batches only)."""
        run = self.local.get(run_id)
        if run is not None:
            return run.follow(after_seq, deliver)
        return self._follow_stored(run_id, after_seq)

    def _follow_stored(self, run_id: str, last: int) -> Iterator[list[str]]:
        while True:
            changed = self.changed_elsewhere()
            with database.connection_context():
                rows = fetch_all(FOLLOW_STORED, (last, run_id))
            if not rows:
                return
            status, worker_id, heartbeat_at, newest, _ = rows[-1]
            if newest is not None:
                last = newest
                yield [frame for *_, frame in rows]
            if status == FINISHED:
                if newest is None:
                    yield from self._end_beyond_store(run_id, last)
                return
            if newest is None and self._orphaned(ChatRun(id=run_id, worker_id=worker_id, heartbeat_at=heartbeat_at)):
                self.interrupt(run_id)
                continue
            changed.wait(POLL_SECS)

    @staticmethod
    def _end_beyond_store(run_id: str, last: int) -> Iterator[list[str]]:
        """The run's end again, numbered after `last`, for a follower that saw more frames than were
        stored: its worker died before the batch writer stored them, and the `stream_end` that
        closed the run took a seq the follower already had."""
        with database.connection_context():
            stored = (RunEvent.select(RunEvent.seq, RunEvent.frame).where(RunEvent.run == run_id)
                      .order_by(RunEvent.seq.desc()).tuples().first())
        if stored is not None and stored[0] < last:
            end = json.loads(stored[1])
            if end["type"] == "stream_end":
                del end["seq"]
                yield [encode(end, last + 1)]

    def _orphaned(self, run: ChatRun) -> bool:
        """Nobody executes `run`: not this worker, and its worker's heartbeat is stale or that
        worker is known to be gone (after a crash and restart, at once rather than a minute later)."""
        if run.id in self.local:
            return False
        beat = parse_rfc3339(run.heartbeat_at)
        return beat is None or beat < utcnow() - ORPHAN_AFTER or self.doorbell.peer_gone(run.worker_id)

    def close_orphans(self) -> int:
        """Close every running run nobody executes any more (its worker died); returns how many."""
        with database.connection_context():
            running = list(ChatRun.select(ChatRun.id, ChatRun.worker_id, ChatRun.heartbeat_at)
                           .where(ChatRun.status == RUNNING))
        orphans = [run.id for run in running if self._orphaned(run)]
        for run_id in orphans:
            self.interrupt(run_id)
        return len(orphans)

    def interrupt(self, run_id: str, force: bool = False) -> None:
        """Close a run nobody is executing any more: end its open stream and mark it finished."""
        with database.connection_context(), write_transaction(run_lock(run_id)):
            run = ChatRun.get_or_none(ChatRun.id == run_id)
            if run is None or run.status == FINISHED or not (force or self._orphaned(run)):
                return
            last = (RunEvent.select(RunEvent.seq, RunEvent.frame).where(RunEvent.run == run_id)
                    .order_by(RunEvent.seq.desc()).tuples().first())
            seq, frame = last or (0, None)
            open_stream = frame is not None and json.loads(frame)["type"] not in ("stream_end", "error")
            if open_stream:
                session_id = (RunEvent.select(RunEvent.session_id)
                              .where((RunEvent.run == run_id) & RunEvent.session_id.is_null(False))
                              .order_by(RunEvent.seq.desc()).scalar())
                RunEvent.create(run=run_id, seq=seq + 1, frame=encode(failed_stream_end(session_id, INTERRUPTED), seq + 1))
            ChatRun.update(status=FINISHED, finished_at=now_iso()).where(ChatRun.id == run_id).execute()
        log.warning("run %s was interrupted and has been closed", run_id)
        self.doorbell.ring_others()

    # --- upkeep and shutdown -------------------------------------------------------------

    def heartbeat(self) -> None:
        if self.local:
            with database.connection_context():
                ChatRun.update(heartbeat_at=now_iso()).where(ChatRun.id.in_(list(self.local))).execute()

    @staticmethod
    def prune() -> int:
        """Delete finished runs older than the retention window (their events go with them)."""
        cutoff = to_rfc3339(utcnow() - RETENTION)
        with database.connection_context():
            return ChatRun.delete().where((ChatRun.status == FINISHED) & (ChatRun.finished_at < cutoff)).execute()

    def drain(self, timeout: float) -> None:
        """Let running runs finish for up to `timeout` s; close the rest as interrupted."""
        gevent.joinall([run.greenlet for run in self.local.values() if run.greenlet], timeout=timeout)
        leftovers = list(self.local)
        for run_id in leftovers:
            run = self.local.get(run_id)
            if run is not None and run.greenlet is not None:
                run.greenlet.kill(block=True, timeout=1)
        self.sync()
        for run_id in leftovers:
            self.interrupt(run_id, force=True)
