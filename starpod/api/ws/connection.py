"""One open `/ws` connection: parses client frames, starts, resumes or stops runs, relays their frames.

Every client frame is handled under the caller's rights as they are *now*: the principal is
re-checked through the auth cache first, and a socket whose key was revoked (or whose user was
deactivated, or whose key expired) is closed with 4401 instead.

Three greenlets serve a connection: the request greenlet reads client frames (`serve`), a writer
sends what is queued in the outbox (errors, notifications) in order, and a relay sends the frames
of the run being followed, each time all that are there in one write.  Once the relay has caught up
with a run of this worker, the event loop writes the run's new frames (`_offer`) whenever the run
pauses, as long as that needs no waiting, so a streamed delta costs no wake-up of the relay.
Runs belong to the worker's RunManager, not to the connection: when the client goes away only
the relay stops.
Without permessage-deflate a text frame is just a header and the text, built here
(`text_frames`) rather than by wsproto's general frame writer: most frames are one small delta.
"""
from __future__ import annotations

import json
import logging
import struct

import gevent
import gevent.socket
from gevent.lock import Semaphore
from gevent.queue import Full, Queue
from marshmallow import ValidationError
from peewee import PeeweeException
from simple_websocket import ConnectionClosed
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

from ... import accounts
from ...accounts import Principal
from ...agent.pipeline import check_text_size
from ...config import AgentConfig, Config
from ...db import database
from ...errors import BadRequest, StarpodError, client_message, new_request_id
from ...realtime import attachments, stops
from ...realtime.hub import Hub
from ...realtime.runs import QUEUED, REFUSED, SENT, RunSpec
from ..errors import flatten_messages
from ..parsing import InvalidJson, loads_strict
from .schemas import FRAME_SCHEMAS

log = logging.getLogger(__name__)

OUTBOX_SIZE = 512
GOING_AWAY = 1001
UNAUTHORIZED = 4401


class InvalidFrame(ValueError):
    pass


def parse_frame(text: str) -> tuple[str, dict]:
    """(type, fields) of a client frame, or InvalidFrame saying what is wrong with it."""
    try:
        payload = loads_strict(text)
    except InvalidJson as exc:
        raise InvalidFrame(str(exc)) from exc
    if not isinstance(payload, dict):
        raise InvalidFrame("expected a JSON object")
    kind = payload.get("type")
    schema = FRAME_SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise InvalidFrame("missing field 'type'" if kind is None else f"unknown type {kind!r}")
    try:
        return kind, schema.load(payload)
    except ValidationError as exc:
        detail = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in flatten_messages(exc.messages).items())
        raise InvalidFrame(detail) from exc


def encode(frame: dict) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def text_frames(texts: list[str]) -> bytes:
    """Unmasked, unfragmented server text frames without extensions (RFC 6455 §5.2)."""
    parts = []
    for text in texts:
        payload = text.encode("utf-8")
        size = len(payload)
        if size < 126:
            parts.append(bytes((0x81, size)))
        elif size < 0x10000:
            parts.append(struct.pack("!BBH", 0x81, 126, size))
        else:
            parts.append(struct.pack("!BBQ", 0x81, 127, size))
        parts.append(payload)
    return b"".join(parts)


class WholeFrameSocket:
    """The client socket as simple-websocket sees it: each send() writes all of its bytes, alone.

    simple-websocket sends pings and pongs from its reader greenlet and our frames from the writer
    with a bare send(), which under gevent may write part of a frame and let the other greenlet's
    bytes in between.
    """

    def __init__(self, sock):
        self._sock = sock
        self._lock = Semaphore()
        self._cooperative = type(sock) is gevent.socket.socket  # a plain TCP socket of gevent's (not TLS)

    def send(self, data, flags: int = 0) -> int:
        with self._lock:
            self._sock.sendall(data, flags)
        return len(data)

    @property
    def busy(self) -> bool:
        """A send is under way (or this socket cannot send without blocking the process)."""
        return not self._cooperative or self._lock.locked()

    def send_now(self, data: bytes) -> bool:
        """Send `data` as far as the socket takes it at once (only when not `busy`: the event loop
        itself may call this); False when some had to wait: that rest goes out from a greenlet of
        its own, holding the socket until then."""
        self._lock.acquire(blocking=False)
        try:
            sent = self._sock.send(data, 0, 0.0)  # gevent's send: a timeout of 0 never waits
        except BlockingIOError:
            sent = 0
        except BaseException:
            self._lock.release()
            raise
        if sent == len(data):
            self._lock.release()
            return True
        gevent.spawn(self._send_rest, memoryview(data)[sent:])
        return False

    def _send_rest(self, rest: memoryview) -> None:
        try:
            self._sock.sendall(rest)
        except OSError:
            pass  # the client went away: the relay's next send finds out
        finally:
            self._lock.release()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Connection:
    def __init__(self, ws, hub: Hub, caller: Principal | None, config: Config, agent: AgentConfig,
                 deflate: bool = True):
        """`deflate`: the client offered permessage-deflate (so it may be in use)."""
        self.ws = ws
        self._deflate = deflate
        # the run's greenlet may write to the socket itself where it is ours (routes.py wraps it)
        self._direct = isinstance(ws.sock, WholeFrameSocket)
        self.hub = hub
        self.caller = caller
        self.config = config
        self.followup_mode = agent.followup_mode
        ws.max_message_size = attachments.message_size_limit(agent.attachments)
        self.outbox: Queue = Queue(OUTBOX_SIZE)
        self._sending = Semaphore()
        self.relay: gevent.Greenlet | None = None
        self.run_id: str | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def serve(self) -> None:
        writer = gevent.spawn(self._write_loop)
        self.hub.clients.add(self)
        try:
            while True:
                data = self.ws.receive()
                if isinstance(data, str) and not self.handle(data):  # binary frames are ignored
                    return
        finally:
            self.hub.clients.discard(self)
            if self.relay is not None:
                self.relay.kill(block=False)
            writer.kill(block=False)

    def _write_loop(self) -> None:
        while True:
            frames = [self.outbox.get()]
            while not self.outbox.empty():
                frames.append(self.outbox.get_nowait())
            try:
                self.send_texts(frames)
            except (ConnectionClosed, OSError):
                return

    def send_texts(self, texts: list[str]) -> None:
        """Send text frames in one write (as simple-websocket's `send` sends one).  Frames are
        built and written under one lock: with permessage-deflate they must reach the wire in
        the order they were compressed."""
        ws = self.ws
        with self._sending:
            if not ws.connected or ws.ws.state is not ConnectionState.OPEN:
                raise ConnectionClosed(ws.close_reason, ws.close_message)
            ws.sock.send(self._frames(texts))

    def _offer(self, texts: list[str]) -> str:
        """Send new frames of the followed run from the event loop (runs.LocalRun), never waiting:
        REFUSED when another send is under way (the relay sends them then), QUEUED when the socket
        was full (the rest goes out from a greenlet of its own)."""
        ws = self.ws
        if ws.sock.busy or not ws.connected or ws.ws.state is not ConnectionState.OPEN:
            return REFUSED
        if not self._sending.acquire(blocking=False):
            return REFUSED
        try:
            return SENT if ws.sock.send_now(self._frames(texts)) else QUEUED
        except OSError:
            return REFUSED  # the client went away: the relay's next send finds out
        finally:
            self._sending.release()

    def _frames(self, texts: list[str]) -> bytes:
        if not self._deflate:
            return text_frames(texts)
        return b"".join([self.ws.ws.send(TextMessage(data=text)) for text in texts])

    def notify(self, frame: str) -> None:
        """Queue a notification; a client too far behind loses it instead of stalling the worker."""
        try:
            self.outbox.put_nowait(frame)
        except Full:
            pass

    def _still_authorized(self) -> bool:
        """Refresh the caller from the auth store (cached); False when it may no longer act."""
        if self.caller is None:  # auth disabled
            return True
        with database.connection_context():  # a long-lived socket must not pin a connection
            refreshed = accounts.refresh_principal(self.caller)
        if refreshed is None:
            return False
        self.caller = refreshed  # a demoted user's next message runs with user rights
        return True

    def _close(self, code: int, reason: str) -> None:
        try:
            self.ws.close(code, reason)
        except ConnectionClosed:
            pass
        self.ws.event.set()  # wake the reader, which would otherwise wait for the client's reply

    def close_going_away(self) -> None:
        self._close(GOING_AWAY, "Server shutting down")

    def send_error(self, message: str, request_id: str | None = None) -> None:
        frame = {"type": "error", "message": message}
        if request_id:
            frame["request_id"] = request_id
        self.outbox.put(encode(frame))

    # --- client frames -------------------------------------------------------------------

    def handle(self, text: str) -> bool:
        """Handle one client frame; False when the caller lost its rights and the socket was closed."""
        try:
            if not self._still_authorized():
                self._close(UNAUTHORIZED, "API key no longer valid (revoked, expired or user deactivated)")
                return False
            kind, fields = parse_frame(text)
            if kind == "resume":
                self._resume(fields)
            elif kind == "stop":
                self._stop(fields)
            else:
                self._message(fields)
        except InvalidFrame as exc:
            self.send_error(f"Invalid message format: {exc}")
        except PeeweeException:
            log.exception("storage failed while handling a WebSocket frame")
            self.send_error("Chat error: storage is unavailable, try again")
        except Exception as exc:  # the socket outlives any one bad frame
            self._report(exc)
        return True

    def _report(self, exc: Exception) -> None:
        """An error frame for a frame that failed; server-side failures are logged with an id."""
        if isinstance(exc, StarpodError) and exc.status < 500:
            self.send_error(exc.message)
            return
        request_id = new_request_id()
        log.error("request %s: WebSocket frame failed", request_id, exc_info=exc)
        sees_detail = self.caller is None or self.caller.is_admin
        self.send_error(client_message(exc, sees_detail), request_id)

    def _busy(self) -> bool:
        return self.relay is not None and not self.relay.dead

    def _spec(self, fields: dict) -> RunSpec:
        if self.caller is None:  # auth disabled: the client may name the user
            user_id, is_admin = fields["user_id"] or "admin", True
        else:
            user_id, is_admin = self.caller.user_id, self.caller.is_admin
        return RunSpec(text=fields["text"], user_id=user_id, is_admin=is_admin,
                       channel_id=fields["channel_id"] or "main",
                       channel_session_key=fields["channel_session_key"])

    def _message(self, fields: dict) -> None:
        spec = self._spec(fields)
        check_text_size(spec.text, self.config)  # follow-ups skip the pipeline's own check
        if self._busy() and self.hub.runs.add_followup(self.run_id, self.followup_mode, spec):
            return  # follow-ups carry only their text (attachments are for new runs)
        if self.hub.draining:
            raise BadRequest("Server is shutting down")
        uploads = [attachments.Upload(**item) for item in fields["attachments"]]
        contents = attachments.validate(uploads, self.config.agent.attachments)
        spec.attachments, spec.prompt_notes = attachments.save_for_sender(
            self.config, spec.user_id, spec.is_admin, uploads, contents)
        self._follow(self.hub.runs.start(spec), 0)

    def _owner(self) -> str | None:
        """Whose runs the caller may follow and stop: None = anyone's (admins, auth disabled)."""
        return None if self.caller is None or self.caller.is_admin else self.caller.user_id

    def _resume(self, fields: dict) -> None:
        if self._busy():
            raise BadRequest("A run is already streaming on this connection")
        run_id = self.hub.runs.find_run(fields["session_id"], self._owner())
        if run_id is None:
            raise BadRequest(f"No run to resume for session '{fields['session_id']}'")
        self._follow(run_id, fields["after_seq"])

    def _stop(self, fields: dict) -> None:
        """Stop the reply streaming in the session named, else in the run this socket follows (a
        run that has just finished has nothing left to stop).  The stream's own `stream_end` answers."""
        session_id, owner = fields["session_id"], self._owner()
        if session_id is None:
            if self.run_id is None:
                raise BadRequest("No reply is streaming on this connection")
            with database.connection_context():
                stops.request_stop(self.config.home, self.run_id, owner)
            return
        run_id = self.hub.runs.find_run(session_id, owner)
        with database.connection_context():
            if run_id is None or not stops.request_stop(self.config.home, run_id, owner):
                raise BadRequest(f"No reply is streaming in session '{session_id}'")

    def _follow(self, run_id: str, after_seq: int) -> None:
        self.run_id = run_id
        self.relay = gevent.spawn(self._relay, run_id, after_seq, self.relay)

    def _relay(self, run_id: str, after_seq: int, previous: gevent.Greenlet | None) -> None:
        if previous is not None:  # the previous run's last frames go first
            previous.join()
        try:
            # (no bound method of self is kept on self: each connection would be a reference
            # cycle, garbage for the full collections only, which then hold the event loop longer)
            deliver = self._offer if self._direct else None
            for frames in self.hub.runs.follow(run_id, after_seq, deliver):
                self.send_texts(frames)
        except (ConnectionClosed, OSError):
            return  # the client went away; the run goes on without it
        except PeeweeException:
            log.exception("lost track of run %s", run_id)
            self.send_error("Lost track of the run; send resume to continue")
