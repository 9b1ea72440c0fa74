"""JSON error responses for everything: domain errors, framework errors and crashes.

A server-side error (5xx) is logged with a fresh request id, which its body carries as
`request_id`; its message keeps server detail (paths, exception text) only for callers allowed to
see it (admins, or anyone while auth is disabled), everyone else reads a generic message.
"""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import StarpodError, client_message, new_request_id

log = logging.getLogger(__name__)

DEFAULT_MESSAGES = {404: "Not found", 405: "Method not allowed", 413: "Request body too large",
                    415: "Content-Type must be application/json"}


def error_response(status: int, message: str, fields: dict | None = None, headers: dict | None = None,
                   request_id: str | None = None):
    body = {"error": message}
    if fields:
        body["fields"] = fields
    if request_id:
        body["request_id"] = request_id
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten_messages(messages, prefix: str = "") -> dict[str, list[str]]:
    """webargs/marshmallow nested messages → {"a.b": ["msg", ...]}, without the location level."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                flat.update(flatten_messages(value, name))
            else:
                flat[name] = [str(v) for v in (value if isinstance(value, list) else [value])]
    elif messages:
        flat[prefix or "_body"] = [str(v) for v in (messages if isinstance(messages, list) else [messages])]
    return flat


def _validation_error(exc: HTTPException):
    messages = exc.data.get("messages", {})
    # Drop the webargs location level ("json", "query", ...).
    if isinstance(messages, dict) and len(messages) == 1 and next(iter(messages)) in ("json", "query", "form", "view_args"):
        messages = next(iter(messages.values()))
    if exc.code == 400:  # unparseable JSON
        return error_response(400, "Malformed JSON body")
    fields = flatten_messages(messages)
    fields = {("body" if k in ("_schema", "_body") else k): v for k, v in fields.items()}
    summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items())
    return error_response(exc.code or 422, f"Invalid request: {summary}" if summary else "Invalid request", fields)


def handle_http_exception(exc: HTTPException):
    data = getattr(exc, "data", None)
    if isinstance(data, dict) and "messages" in data:
        return _validation_error(exc)
    status = exc.code or 500
    message = DEFAULT_MESSAGES.get(status) or exc.description or exc.name
    if isinstance(data, dict) and data.get("message"):
        message = data["message"]
    headers = dict(exc.get_headers()) if status == 405 else {}
    headers.pop("Content-Type", None)
    return error_response(status, message, headers=headers)


def caller_sees_detail() -> bool:
    """Admins, and anyone while auth is disabled; never a caller the guards did not check."""
    if "principal" not in g:
        return False
    return g.principal is None or g.principal.is_admin


def handle_starpod_error(exc: StarpodError):
    if exc.status < 500:
        return error_response(exc.status, exc.message, exc.fields, exc.headers)
    request_id = new_request_id()
    log.error("request %s: %s %s answered %d: %s", request_id, request.method, request.path, exc.status, exc.message)
    return error_response(exc.status, client_message(exc, caller_sees_detail()), exc.fields, exc.headers, request_id)


def handle_unexpected(exc: Exception):
    request_id = new_request_id()
    log.exception("request %s: unhandled error on %s %s", request_id, request.method, request.path)
    return error_response(500, client_message(exc, False), request_id=request_id)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(StarpodError, handle_starpod_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
