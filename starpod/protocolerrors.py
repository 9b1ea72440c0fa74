"""JSON bodies for the errors gunicorn answers itself, before a request reaches the app.

A request line over `limit_request_line` (414), oversized headers (431) or a malformed request
(400) is refused by gunicorn's HTTP parser with a small HTML page.  Every error of this server is
JSON, so each worker swaps gunicorn's writer of those pages (`gunicorn.util.write_error`, which
its workers call for exactly these cases) for one that writes the app's error body.
"""
from __future__ import annotations

import json

from gunicorn import util


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `write_error`, answering `{"error": ...}` instead of an HTML page."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode("utf-8")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def install() -> None:
    util.write_error = write_json_error
