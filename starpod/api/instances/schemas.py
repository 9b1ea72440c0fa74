"""Request and response schemas of the instance routes (spec memory-instances-cron.md §2.2)."""
from __future__ import annotations

from marshmallow import fields, validate

from ...instances import STATUSES
from ..schemas import BaseSchema, Text


class InstanceCreateSchema(BaseSchema):
    name = Text(allow_none=True, load_default=None)
    region = Text(allow_none=True, load_default=None)


class HealthInfoSchema(BaseSchema):
    cpu_percent = fields.Float(required=True)
    memory_mb = fields.Integer(required=True)
    disk_mb = fields.Integer(required=True)
    last_heartbeat = fields.Integer(required=True, metadata={"description": "Epoch seconds; 0 = never"})
    uptime_secs = fields.Integer(required=True)


class InstanceSchema(BaseSchema):
    id = fields.String(required=True)
    name = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    region = fields.String(required=True, allow_none=True)
    created_at = fields.Integer(required=True, metadata={"description": "Epoch seconds"})
    updated_at = fields.Integer(required=True, metadata={"description": "Epoch seconds"})
    health = fields.Nested(HealthInfoSchema, required=True, allow_none=True)


class InstanceCreatedSchema(InstanceSchema):
    api_key = fields.String(metadata={"description": "Local backend: the instance's admin key, shown only here"})
    url = fields.String(metadata={"description": "Local backend: where the instance's server listens"})


class InstanceActionSchema(BaseSchema):
    status = fields.String(required=True, metadata={"example": "paused"})
