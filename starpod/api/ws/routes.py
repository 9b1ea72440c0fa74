"""The `/ws` route: token check before the upgrade, then one Connection per socket.

Not part of the OpenAPI document (it is not a REST endpoint).  Handshake failures are JSON:
401 `Missing token parameter` / `Invalid token`, 429 when the client's address failed key
verification too often, 500 `Auth error` when the store fails.
"""
from __future__ import annotations

import logging
import os

from flask import Blueprint, Flask, current_app, g, request
from flask_sock import Sock
from peewee import PeeweeException
from simple_websocket import ConnectionClosed

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
sock = Sock()

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


@sock.route("/ws", bp=blp)
def chat_socket(ws):
    config = current_app.config["STARPOD"]
    try:
        Connection(ws, get_hub(config), g.ws_caller, config, g.ws_agent, deflate=_offers_deflate()).serve()
    except ConnectionClosed:
        raise
    except Exception:
        # Never let Flask answer an upgraded socket with an HTTP 500: log it, close as 1011.
        request_id = new_request_id()
        log.exception("request %s: WebSocket connection failed", request_id)
        ws.close(INTERNAL_ERROR, f"Internal error (request id {request_id})")


def init_app(app: Flask) -> None:
    """Serve `/ws`; keep-alive pings every STARPOD_WS_PING_SECS (default 25) seconds."""
    ping = float(os.environ.get("STARPOD_WS_PING_SECS") or DEFAULT_PING_SECS)
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"ping_interval": ping, "max_message_size": MIB})
    sock.init_app(app)
    app.register_blueprint(blp)
