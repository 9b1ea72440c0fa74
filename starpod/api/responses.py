"""JSON responses serialized once, straight from plain rows (orjson), for the hot read routes.

flask-smorest dumps a view's return value through its response schema and then `jsonify`s it:
two passes over every field.  A view whose rows already have exactly the documented shape (the
schema still documents it) returns `json_response(rows)` instead, which flask-smorest passes
through untouched.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app


def json_response(data: Any, status: int = 200) -> Response:
    return encoded_json_response(orjson.dumps(data), status)


def encoded_json_response(body: bytes, status: int = 200) -> Response:
    """A response of JSON already serialized (e.g. kept in a cache)."""
    return current_app.response_class(body, status=status, mimetype="application/json")
