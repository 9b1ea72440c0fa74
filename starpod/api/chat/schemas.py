"""Request and response bodies of `POST /api/chat`."""
from __future__ import annotations

from marshmallow import fields

from ..schemas import BaseSchema, Text


class ChatRequestSchema(BaseSchema):
    text = Text(required=True, metadata={"description": "The message; must not be empty"})
    user_id = Text(load_default=None, allow_none=True,
                            metadata={"description": "Only used while auth is disabled (no users yet)"})
    channel_id = Text(load_default=None, allow_none=True, metadata={"description": "main (default) or telegram"})
    channel_session_key = Text(load_default=None, allow_none=True,
                                        metadata={"description": "Continue the session with this key; omitted = new session"})


class UsageSchema(BaseSchema):
    input_tokens = fields.Integer(required=True)
    output_tokens = fields.Integer(required=True)
    cache_read_tokens = fields.Integer(required=True)
    cache_write_tokens = fields.Integer(required=True)
    cost_usd = fields.Float(required=True)


class ChatResponseSchema(BaseSchema):
    text = fields.String(required=True)
    session_id = fields.String(required=True)
    usage = fields.Nested(UsageSchema, required=True)
