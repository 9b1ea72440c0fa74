"""Domain errors: raised by plain modules, turned into JSON responses by the web layer."""
from __future__ import annotations

import uuid


GENERIC_MESSAGES = {500: "Internal server error", 502: "An upstream service failed",
                    503: "A service the request needs is not available"}


def new_request_id() -> str:
    """A short id that ties an error a client sees to the server log lines about it."""
    return uuid.uuid4().hex[:16]


class StarpodError(Exception):
    """An error with an HTTP status and a message meant for the client.

    Messages of 5xx errors may hold server detail (paths, exception text): only callers allowed
    to see it get them (`public` marks a 5xx message written for everyone).
    """

    status = 500
    public = False

    def __init__(self, message: str, status: int | None = None, fields: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.fields = fields
        self.headers = headers or {}


class BadRequest(StarpodError):
    status = 400


class NotFound(StarpodError):
    status = 404


class Conflict(StarpodError):
    status = 409


class PayloadTooLarge(StarpodError):
    status = 413


class ValidationFailed(StarpodError):
    status = 422


class UpstreamFailed(StarpodError):
    """A provider or remote backend failed or could not be reached."""
    status = 502


class NotConfigured(StarpodError):
    """Something the request needs (a provider key) is not configured; the message names it."""
    status = 503
    public = True


def client_message(exc: Exception, sees_detail: bool) -> str:
    """What a caller may read about `exc`: the detail for 4xx, public errors and callers allowed
    to see it (admins), else the generic text of its status."""
    if isinstance(exc, StarpodError) and (exc.status < 500 or exc.public or sees_detail):
        return exc.message
    status = exc.status if isinstance(exc, StarpodError) else 500
    return GENERIC_MESSAGES.get(status, GENERIC_MESSAGES[500])
