"""Domain errors: raised by plain modules, turned into JSON responses by the web layer."""
from __future__ import annotations


class StarpodError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    status = 500

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
    """Something the request needs (a provider key) is not configured."""
    status = 503
