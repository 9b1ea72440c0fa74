"""Marshmallow pieces shared by every blueprint's schemas."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields


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


class ErrorSchema(BaseSchema):
    """Every error body (starpod/api/errors.py): a message, plus the failing fields for 422s."""
    error = fields.String(required=True, metadata={"example": "Not found"})
    field_messages = fields.Dict(data_key="fields", keys=fields.String(), values=fields.List(fields.String()),
                                 metadata={"description": "Validation messages by field name"})
