"""Marshmallow pieces shared by every blueprint's schemas."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate


class BaseSchema(Schema):
    """Request/response schema base: unknown request fields are ignored, never rejected."""

    class Meta:
        unknown = EXCLUDE
        ordered = True


class StatusSchema(BaseSchema):
    status = fields.String(required=True, metadata={"example": "ok"})


class StrictInteger(fields.Integer):
    """An integer that refuses floats like 10.5 and numeric strings."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, (bool, str)):
            raise self.make_error("invalid")
        return super()._validated(value)


class Text(fields.String):
    """A string that can be stored: valid Unicode (no lone surrogates such as "\\ud800").

    Every string a request sends goes through this type, so such text is refused as a 422 naming
    its field instead of failing in SQLite or a UTF-8 file.
    """

    default_error_messages = {"surrogate": "Not valid Unicode text (lone surrogate)."}

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise self.make_error("surrogate") from error
        return text


class MaxBytes(validate.Validator):
    """At most `limit` bytes of UTF-8 (file systems count bytes, not characters)."""

    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, value: str) -> str:
        if len(value.encode("utf-8", "surrogatepass")) > self.limit:
            raise ValidationError(f"Longer than {self.limit} bytes.")
        return value


class ErrorSchema(BaseSchema):
    """Every error body (starpod/api/errors.py): a message, plus the failing fields for 422s."""
    error = fields.String(required=True, metadata={"example": "Not found"})
    field_messages = fields.Dict(data_key="fields", keys=fields.String(), values=fields.List(fields.String()),
                                 metadata={"description": "Validation messages by field name"})
    request_id = fields.String(metadata={"description": "Server errors: the id under which the failure was logged"})
