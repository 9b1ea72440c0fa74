"""The API's argument parsing (starpod/api/parsing.py): flat JSON-object bodies loaded field by
field give exactly what webargs + marshmallow give, and everything else still goes through them."""
from __future__ import annotations

import flask
import pytest
from marshmallow import RAISE, ValidationError, fields

from starpod.api import errors as api_errors
from starpod.api.parsing import Blueprint, flat_fields, load_flat
from starpod.api.schemas import BaseSchema, StrictInteger, Text


class FlatSchema(BaseSchema):
    text = Text(required=True)
    count = StrictInteger(load_default=3)
    flag = fields.Boolean(load_default=None, allow_none=True)
    renamed = Text(data_key="otherName", load_default=None, allow_none=True)


class StrictSchema(FlatSchema):
    class Meta:
        unknown = RAISE


@pytest.mark.parametrize("body", [
    {"text": "hi"},
    {"text": "hi", "count": 7, "flag": True, "otherName": "x", "unknown": [1, 2]},
    {"text": "hi", "flag": None, "renamed": "ignored: only its data key counts"},
])
def test_flat_load_is_what_marshmallow_loads(body):
    schema = FlatSchema()
    assert load_flat(flat_fields(schema), body) == schema.load(body)


@pytest.mark.parametrize("body", [{}, {"text": 5}, {"text": "hi", "count": 1.5}, {"text": "\ud800"}])
def test_flat_load_refuses_what_marshmallow_refuses(body):
    schema = FlatSchema()
    with pytest.raises(ValidationError):
        schema.load(body)
    with pytest.raises(ValidationError):
        load_flat(flat_fields(schema), body)


@pytest.fixture
def app(monkeypatch):
    """A bare app with one route per schema; `parsed_by_webargs` counts the requests webargs parsed."""
    app = flask.Flask(__name__)
    api_errors.register_error_handlers(app)
    blp = Blueprint("t", __name__)
    calls = []
    original = Blueprint.ARGUMENTS_PARSER.parse

    def counting_parse(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(Blueprint.ARGUMENTS_PARSER, "parse", counting_parse)

    @blp.route("/flat", methods=["POST"])
    @blp.arguments(FlatSchema)
    def flat(body):
        return body

    @blp.route("/strict", methods=["POST"])
    @blp.arguments(StrictSchema)
    def strict(body):
        return body

    app.register_blueprint(blp)
    app.parsed_by_webargs = calls
    return app


def test_valid_flat_body_skips_webargs(app):
    response = app.test_client().post("/flat", json={"text": "hi", "extra": 1})
    assert response.status_code == 200
    assert response.get_json() == {"text": "hi", "count": 3, "flag": None, "renamed": None}
    assert app.parsed_by_webargs == []


@pytest.mark.parametrize("body, status, field", [
    ({"count": 1}, 422, "text"), ({"text": "hi", "count": "2"}, 422, "count"), ([1], 422, None), (None, 422, "text"),
])
def test_invalid_flat_body_is_answered_by_webargs(app, body, status, field):
    client = app.test_client()
    response = client.post("/flat") if body is None else client.post("/flat", json=body)
    assert response.status_code == status, response.get_json()
    if field is not None:
        assert field in str(response.get_json())
    assert app.parsed_by_webargs == [1]


def test_body_errors_come_before_any_parsing(app):
    client = app.test_client()
    assert client.post("/flat", data="{", content_type="application/json").status_code == 400
    assert client.post("/flat", data="text=hi", content_type="text/plain").status_code == 415


def test_schema_refusing_unknown_keys_keeps_webargs(app):
    response = app.test_client().post("/strict", json={"text": "hi", "extra": 1})
    assert response.status_code == 422
    assert "extra" in str(response.get_json())
    assert app.parsed_by_webargs == [1]


def test_webargs_options_keep_webargs(monkeypatch):
    """An option for webargs itself (here `validate=`) is applied: such a route is parsed by webargs."""
    app = flask.Flask(__name__)
    api_errors.register_error_handlers(app)
    blp = Blueprint("v", __name__)

    @blp.route("/validated", methods=["POST"])
    @blp.arguments(FlatSchema, validate=lambda body: body["count"] < 5, description="documented")
    def validated(body):
        return body

    app.register_blueprint(blp)
    client = app.test_client()
    assert client.post("/validated", json={"text": "hi"}).status_code == 200
    assert client.post("/validated", json={"text": "hi", "count": 9}).status_code == 422
