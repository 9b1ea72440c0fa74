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
