"""Request-body rules shared by blueprints: `json_body_for(blp)` makes a decorator that answers
415 for a body not declared as JSON (checked after auth, before the body is parsed)."""
from __future__ import annotations

import functools
from typing import Callable

from flask import request
from flask_smorest import Blueprint
from werkzeug.exceptions import UnsupportedMediaType


def json_body_for(blp: Blueprint) -> Callable[[Callable], Callable]:
    def json_body(view: Callable) -> Callable:
        view = blp.alt_response(415, description="Content-Type must be application/json")(view)
        view = blp.alt_response(400, description="Malformed JSON, or a value that fails a semantic check")(view)

        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not request.is_json:
                raise UnsupportedMediaType()
            return view(*args, **kwargs)
        return wrapper
    return json_body
