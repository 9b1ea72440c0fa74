"""The `/ws` route: token check before the upgrade, then one Connection per socket.

Not part of the OpenAPI document (it is not a REST endpoint).  Handshake failures are JSON:
401 `Missing token parameter` / `Invalid token`, 429 when the client's address failed key
verification too often, 500 `Auth error` when the store fails.

The upgrade is simple-websocket's `Server` on the server's raw socket.  Unlike flask-sock's route
wrapper, nothing here builds a class per socket: a class is a reference cycle, and one holding the
socket kept every closed connection's objects (some 90) alive until a full garbage collection,
which then held the event loop for some 90 ms per thousand closed sockets.
"""
from __future__ import annotations

import logging
import os

from flask import Blueprint, Flask, Response, current_app, g, request
from peewee import PeeweeException
from simple_websocket import ConnectionClosed, Server
from wsproto.utilities import LocalProtocolError

from ... import accounts
from ...db import close_connection
from ...errors import new_request_id
from ...realtime.attachments import MIB
from ...realtime.hub import get_hub
from ..errors import error_response
from ..guards import AuthFailed
from .connection import Connection, WholeFrameSocket

log = logging.getLogger(__name__)

blp = Blueprint("ws", __name__)

DEFAULT_PING_SECS = 25.0
INTERNAL_ERROR = 1011
SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


def _caller() -> accounts.Principal | None:
    if not accounts.has_users():
        return None
    token = request.args.get("token")
    if token is None:
        raise AuthFailed("Missing token parameter")
    principal = accounts.authenticate(token, request.remote_addr)
    if principal is None:
        accounts.audit_failed_login(request.remote_addr, "invalid WebSocket token")
        raise AuthFailed("Invalid token")
    return principal


@blp.before_request
def authenticate_handshake():
    # Read before the upgrade completes: the follow-up mode and message size limit are the ones in
    # force when the client connected.
    g.ws_agent = current_app.config["STARPOD"].agent
    try:
        g.ws_caller = _caller()
    except AuthFailed as exc:
        return error_response(401, exc.message)
    except accounts.TooManyFailures as exc:
        return error_response(exc.status, exc.message, headers=exc.headers)
    except PeeweeException:
        request_id = new_request_id()
        log.exception("request %s: WebSocket authentication failed", request_id)
        return error_response(500, "Auth error", request_id=request_id)
    finally:
        close_connection()  # a socket may stay open for days; it must not pin a pooled connection
    for key in SOCKET_KEYS:
        if key in request.environ:
            request.environ[key] = WholeFrameSocket(request.environ[key])
    return None


def _offers_deflate() -> bool:
    """The client offered permessage-deflate: the only extension the server may accept."""
    return "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "").lower()


class Upgraded(Response):
    """What the view returns once its socket is done: no HTTP response may follow.  gunicorn ends
    the connection's request loop on StopIteration; other servers get an empty response."""

    def __call__(self, environ, start_response):
        if "gunicorn.socket" in environ:
            raise StopIteration()
        return super().__call__(environ, start_response)


@blp.route("/ws", websocket=True)
def chat_socket():
    config = current_app.config["STARPOD"]
    ws = Server(request.environ, **current_app.config["WS_SERVER_OPTIONS"])
    try:
        Connection(ws, get_hub(config), g.ws_caller, config, g.ws_agent, deflate=_offers_deflate()).serve()
    except ConnectionClosed:
        pass
    except Exception:
        # Never let Flask answer an upgraded socket with an HTTP 500: log it, close as 1011.
        request_id = new_request_id()
        log.exception("request %s: WebSocket connection failed", request_id)
        _close(ws, INTERNAL_ERROR, f"Internal error (request id {request_id})")
    _close(ws)
    return Upgraded()


def _close(ws: Server, *reason) -> None:
    """Close the socket unless it is closed already (or its client gone)."""
    try:
        ws.close(*reason)
    except (ConnectionClosed, LocalProtocolError, OSError):
        pass


def init_app(app: Flask) -> None:
    """Serve `/ws`; keep-alive pings every STARPOD_WS_PING_SECS (default 25) seconds."""
    ping = float(os.environ.get("STARPOD_WS_PING_SECS") or DEFAULT_PING_SECS)
    app.config.setdefault("WS_SERVER_OPTIONS", {"ping_interval": ping, "max_message_size": MIB})
    app.register_blueprint(blp)
