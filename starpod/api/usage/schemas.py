"""Query and response schemas of `GET /api/usage`."""
from __future__ import annotations

from marshmallow import fields

from ...usage import MAX_DAYS
from ..schemas import BaseSchema


class UsageQuerySchema(BaseSchema):
    days = fields.Integer(load_default=30, metadata={"description": f"1\u2013{MAX_DAYS} UTC days, today included"})
    user_id = fields.String(load_default=None, metadata={
        "description": "Only this user's runs; admins may name anyone, other users only themselves"})


class UsageCountersSchema(BaseSchema):
    input_tokens = fields.Integer(required=True)
    output_tokens = fields.Integer(required=True)
    cache_read_tokens = fields.Integer(required=True)
    cache_write_tokens = fields.Integer(required=True)
    cost_usd = fields.Float(required=True)
    runs = fields.Integer(required=True, metadata={"description": "Completed agent runs"})


class ModelUsageSchema(UsageCountersSchema):
    model = fields.String(required=True)


class DayUsageSchema(UsageCountersSchema):
    date = fields.String(required=True, metadata={"description": "UTC day, YYYY-MM-DD"})
    models = fields.List(fields.Nested(ModelUsageSchema), required=True)


class UserUsageSchema(UsageCountersSchema):
    user_id = fields.String(required=True)


class UsageReportSchema(BaseSchema):
    days = fields.Integer(required=True)
    user_id = fields.String(required=True, allow_none=True, metadata={"description": "The filter, null = all visible"})
    since = fields.String(required=True, metadata={"description": "First day of the window (UTC)"})
    until = fields.String(required=True, metadata={"description": "Last day of the window (today, UTC)"})
    totals = fields.Nested(UsageCountersSchema, required=True)
    daily = fields.List(fields.Nested(DayUsageSchema), required=True,
                        metadata={"description": "Every day of the window, oldest first, zeros included"})
    users = fields.List(fields.Nested(UserUsageSchema), required=True,
                        metadata={"description": "Sums per user with runs in the window, highest cost first"})
