"""Strict JSON request bodies, shared by every blueprint and by the `/ws` frame parser.

`loads_strict` refuses what `json.loads` lets through or crashes on: nesting deeper than
`MAX_JSON_DEPTH`, NaN/Infinity, and undecodable bytes, each as `InvalidJson` with a message for
the client.  `Blueprint` is flask-smorest's with a body parser that answers 415 for a body that is
not declared as JSON, 413 for a streamed (chunked) body over the size limit and 400 for JSON it
cannot accept; authentication guards run before it, so a caller without a key never gets that far.
Its arguments of a flat schema, in the query string or a JSON object body, are loaded field by
field (`load_flat`); its alternative responses are documentation only (no wrapper layer at run time).
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable, Mapping

import flask
import flask_smorest
from marshmallow import EXCLUDE, Schema, ValidationError, missing
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import UnsupportedMediaType

from ..errors import BadRequest

MAX_JSON_DEPTH = 64
# flask-smorest `arguments` options that only document the arguments
DOCUMENTATION_OPTIONS = {"content_type", "required", "description", "example", "examples"}


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


FlatFields = tuple[tuple[str, str, Any], ...]  # (result key, query parameter or body key, field)


def flat_fields(schema: Schema) -> FlatFields | None:
    """The fields of a schema whose `load` of a query string or a JSON object is one `deserialize`
    per field, or None: a schema with hooks (pre/post-load, validators), a multi-valued or
    nested-key field."""
    if any(schema._hooks.values()) or schema.partial or MultiDictProxy(MultiDict(), schema).multiple_keys:
        return None
    fields = []
    for name, field in schema.load_fields.items():
        attribute = field.attribute or name
        if "." in attribute:  # marshmallow would build a nested dict
            return None
        fields.append((attribute, name if field.data_key is None else field.data_key, field))
    return tuple(fields)


def load_flat(fields: FlatFields, values: Mapping) -> dict:
    """What webargs + `schema.load` make of `values`, the query string (first value of a repeated
    parameter) or a JSON object: unknown keys ignored, defaults filled in; ValidationError when a
    value is invalid."""
    loaded = {}
    for attribute, key, field in fields:
        raw = values[key] if key in values else missing  # MultiDict.get raises and catches a KeyError
        value = field.deserialize(raw, key, values)
        if value is not missing:
            loaded[attribute] = value
    return loaded


def _query_values() -> Mapping:
    return flask.request.args


def _json_object() -> Mapping | None:
    """The request's JSON body when it is an object; None for no body or another JSON value (for
    webargs to answer).  The body errors (415, 413, 400) are raised as webargs would raise them."""
    body = Blueprint.ARGUMENTS_PARSER._raw_load_json(flask.request)
    return body if isinstance(body, dict) else None


def _flat_arguments(fields: FlatFields, parse_by_webargs, read_values: Callable[[], Mapping | None]):
    """flask-smorest's `arguments` decorator (documentation, and parsing through webargs) whose
    views load valid arguments with `load_flat` instead: webargs' and marshmallow's per-request
    machinery costs more than a small view itself.  Invalid ones still go through webargs, which
    answers them (422 naming the fields)."""
    def decorator(view):
        documented = parse_by_webargs(view)

        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            values = read_values()
            if values is not None:
                try:
                    loaded = load_flat(fields, values)
                except ValidationError:
                    return documented(*args, **kwargs)
                return view(*args, loaded, **kwargs)  # where webargs puts it: after the positional args
            return documented(*args, **kwargs)
        wrapper._apidoc = documented._apidoc
        return wrapper
    return decorator


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest Blueprint whose JSON bodies go through StrictJsonParser, each argument
    schema built once, flat query and JSON body schemas loaded directly, and alternative responses
    documented without a run-time wrapper."""

    ARGUMENTS_PARSER = StrictJsonParser()

    def arguments(self, schema, *, location="json", **kwargs):
        if isinstance(schema, type):  # webargs would build an instance of a class on every request
            schema = schema()
        decorate = super().arguments(schema, location=location, **kwargs)
        read_values = {"query": _query_values, "json": _json_object}.get(location)
        # Options for webargs itself (validate=, unknown=, ...) leave the parsing to it; a JSON
        # body's unknown keys are the schema's to judge (webargs ignores a query's).
        plain = not set(kwargs) - DOCUMENTATION_OPTIONS and (location == "query" or schema.unknown == EXCLUDE)
        fields = flat_fields(schema) if read_values is not None and plain else None
        if fields is not None:
            decorate = _flat_arguments(fields, decorate, read_values)
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

    def alt_response(self, *args, **kwargs):
        """flask-smorest's alternative response: its documentation only, on the view itself (its
        wrapper does nothing but call the view)."""
        document = super().alt_response(*args, **kwargs)

        def decorator(view):
            view._apidoc = document(view)._apidoc
            return view
        return decorator
