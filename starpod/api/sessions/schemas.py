"""Bodies of the `/api/sessions` routes."""
from __future__ import annotations

from marshmallow import fields

from ..schemas import BaseSchema, StrictInteger


class SessionListQuerySchema(BaseSchema):
    limit = fields.Integer(load_default=20, metadata={"description": "1–200, default 20"})


class SessionSchema(BaseSchema):
    id = fields.String(required=True)
    created_at = fields.String(required=True)
    last_message_at = fields.String(required=True)
    is_closed = fields.Boolean(required=True)
    summary = fields.String(allow_none=True, required=True)
    title = fields.String(allow_none=True, required=True)
    message_count = fields.Integer(required=True)
    channel = fields.String(required=True)
    channel_session_key = fields.String(allow_none=True, required=True)
    user_id = fields.String(required=True)
    is_read = fields.Boolean(required=True)
    origin = fields.String(required=True, metadata={
        "enum": ["main", "telegram", "scheduler"],
        "description": "Where the conversation comes from: `scheduler` for the sessions cron jobs and the "
                       "heartbeat run in (stored on channel `main`: key `main`, or a key starting "
                       "`scheduler:`), else the channel"})


class MessageSchema(BaseSchema):
    id = StrictInteger(required=True)
    session_id = fields.String(required=True)
    role = fields.String(required=True, metadata={"enum": ["user", "assistant", "tool_use", "tool_result"]})
    content = fields.String(required=True, metadata={"description": "Tool rows hold serialized JSON"})
    timestamp = fields.String(required=True)
    html = fields.String(allow_none=True, metadata={
        "description": "Only with ?render=1: sanitized HTML of a user/assistant row's markdown; null for tool rows"})


class MessagesQuerySchema(BaseSchema):
    render = fields.Boolean(load_default=False, metadata={"description": "Add `html` to each message"})


class ReadStateSchema(BaseSchema):
    is_read = fields.Boolean(load_default=True)


class OkSchema(BaseSchema):
    ok = fields.Boolean(required=True)
