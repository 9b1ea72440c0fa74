"""`GET /api/sessions`, `GET /api/sessions/<id>`, `GET /api/sessions/<id>/messages`,
`POST /api/sessions/<id>/read` and `POST /api/sessions/<id>/stop`."""
from __future__ import annotations

from typing import Any, Callable, Hashable

import orjson
from flask import Response, current_app

from ... import sessions
from ...errors import BadRequest, Conflict
from ...readcache import ReadCache
from ...realtime import stops
from ...render import render_markdown
from ..guards import caller_is_admin, current_user_id, require_user
from ..parsing import Blueprint
from ..responses import encoded_json_response, json_response
from .schemas import MessageSchema, MessagesQuerySchema, OkSchema, ReadStateSchema, SessionListQuerySchema, SessionSchema

blp = Blueprint("sessions", __name__, url_prefix="/api", description="Chat sessions and their messages")

MAX_LIMIT = 200
TEXT_ROLES = ("user", "assistant")  # tool rows hold JSON, not markdown
# Listings as served, until the next commit to the database (clients poll them): 8 MB at most.
listings = ReadCache(max_entries=64, max_length=128 * 1024)


def _viewer() -> str | None:
    """None for admins (they see every session), else the caller's user id."""
    return None if caller_is_admin() else current_user_id()


def _cached_json(key: Hashable, rows: Callable[[], Any]) -> Response:
    """`rows()` as JSON, served from `listings` while nothing was committed since it was built."""
    return encoded_json_response(listings.get(key, lambda: orjson.dumps(rows())))


@blp.route("/sessions", methods=["GET"])
@require_user
@blp.arguments(SessionListQuerySchema, location="query")
@blp.response(200, SessionSchema(many=True))
@blp.alt_response(400, description="limit outside 1–200")
def list_sessions(query):
    """Sessions of every channel, most recent activity first."""
    limit = query["limit"]
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    viewer = _viewer()
    return _cached_json(("sessions", viewer, limit), lambda: sessions.list_sessions(viewer, limit))


@blp.route("/sessions/<session_id>", methods=["GET"])
@require_user
@blp.response(200, SessionSchema)
@blp.alt_response(404, description="Session not found")
def get_session(session_id):
    return json_response(sessions.session_json(session_id, _viewer()))


@blp.route("/sessions/<session_id>/messages", methods=["GET"])
@require_user
@blp.arguments(MessagesQuerySchema, location="query")
@blp.response(200, MessageSchema(many=True))
@blp.alt_response(404, description="Session not found")
@blp.alt_response(422, description="render is not a boolean")
def get_messages(query, session_id):
    """Every message of the session, oldest first; `?render=1` adds each text row's HTML."""
    viewer, render = _viewer(), query["render"]
    return _cached_json(("messages", session_id, viewer, render), lambda: _messages(session_id, viewer, render))


def _messages(session_id: str, viewer: str | None, render: bool) -> list[dict]:
    rows = sessions.messages_json(session_id, viewer)
    if render:
        for row in rows:
            row["html"] = render_markdown(row["content"]) if row["role"] in TEXT_ROLES else None
    return rows


@blp.route("/sessions/<session_id>/read", methods=["POST"])
@require_user
@blp.arguments(ReadStateSchema)
@blp.response(200, OkSchema)
@blp.alt_response(400, description="Malformed JSON body")
@blp.alt_response(404, description="Session not found")
def mark_read(body, session_id):
    """Mark the session read (default) or unread."""
    sessions.mark_read(sessions.get_session(session_id, _viewer()), body["is_read"])
    return {"ok": True}


@blp.route("/sessions/<session_id>/stop", methods=["POST"])
@require_user
@blp.response(200, OkSchema)
@blp.alt_response(404, description="Session not found")
@blp.alt_response(409, description="No reply is streaming in this session")
def stop_reply(session_id):
    """Stop the reply streaming in the session (like the WebSocket `stop` frame).

    The reply ends soon after with a `stream_end` whose `errors` say it was stopped; what it
    streamed stays stored.
    """
    viewer = _viewer()
    sessions.get_session(session_id, viewer)
    run_id = stops.running_run_of(session_id, viewer)
    if run_id is None or not stops.request_stop(current_app.config["STARPOD"].home, run_id, viewer):
        raise Conflict("No reply is streaming in this session")
    return {"ok": True}
