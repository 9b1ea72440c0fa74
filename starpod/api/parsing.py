"""Strict JSON request bodies, shared by every blueprint and by the `/ws` frame parser.

`loads_strict` refuses what `json.loads` lets through or crashes on: nesting deeper than
`MAX_JSON_DEPTH`, NaN/Infinity, and undecodable bytes, each as `InvalidJson` with a message for
the client.  `Blueprint` is flask-smorest's with a body parser that answers 415 for a body that is
not declared as JSON, 413 for a streamed (chunked) body over the size limit and 400 for JSON it
cannot accept; authentication guards run before it, so a caller without a key never gets that far.
"""
from __future__ import annotations

import json
from typing import Any

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import UnsupportedMediaType

from ..errors import BadRequest

MAX_JSON_DEPTH = 64


class InvalidJson(ValueError):
    """A body or frame that is not JSON this server accepts; the message says why."""


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not allowed in JSON")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest more than `limit` levels (iterative: no recursion to exhaust)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def loads_strict(data: str | bytes) -> Any:
    """The decoded JSON value of `data`, or InvalidJson."""
    too_deep = f"nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidJson(too_deep) from None
    except UnicodeDecodeError:
        raise InvalidJson("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"{exc.msg} at position {exc.pos}") from None
    if _too_deep(value, MAX_JSON_DEPTH):
        raise InvalidJson(too_deep)
    return value


def read_body(request: flask.Request) -> bytes:
    """The whole request body; 413 when a streamed body runs past `max_content_length`.

    Werkzeug stops reading a chunked body silently at the limit; one more read tells a body of
    exactly the limit from a longer one (it raises RequestEntityTooLarge for the latter).
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and len(data) >= limit:
        request.stream.read(1)
    return data


class StrictJsonParser(FlaskParser):
    """webargs' Flask parser with strict JSON bodies (see the module docstring)."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        declared_json = is_json_request(req)
        if req.content_type and not declared_json:
            raise UnsupportedMediaType()
        data = read_body(req)
        if not data:
            return core.missing  # no body at all: optional fields take their defaults
        if not declared_json:
            raise UnsupportedMediaType()
        try:
            return loads_strict(data)
        except InvalidJson as exc:
            raise BadRequest(f"Malformed JSON body: {exc}", fields={"body": [str(exc)]}) from None


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest Blueprint whose JSON bodies go through StrictJsonParser, each argument
    schema built once."""

    ARGUMENTS_PARSER = StrictJsonParser()

    def arguments(self, schema, *, location="json", **kwargs):
        if isinstance(schema, type):  # webargs would build an instance of a class on every request
            schema = schema()
        decorate = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return decorate

        def document_body_errors(view):
            view = decorate(view)
            responses = view._apidoc["arguments"]["responses"]
            responses.setdefault(400, "BAD_REQUEST")
            responses.setdefault(413, "REQUEST_ENTITY_TOO_LARGE")
            responses.setdefault(415, "UNSUPPORTED_MEDIA_TYPE")
            return view
        return document_body_errors
