"""Frames a WebSocket client may send to `/ws` (spec chat-sessions-ws §5.2 plus `resume`)."""
from __future__ import annotations

from marshmallow import fields, validate

from ..schemas import BaseSchema, StrictInteger


class AttachmentSchema(BaseSchema):
    file_name = fields.String(required=True)
    mime_type = fields.String(required=True)
    data = fields.String(required=True)


class MessageFrameSchema(BaseSchema):
    type = fields.Constant("message")
    text = fields.String(required=True)
    user_id = fields.String(load_default=None, allow_none=True)
    channel_id = fields.String(load_default="main", allow_none=True)
    channel_session_key = fields.String(load_default=None, allow_none=True)
    attachments = fields.List(fields.Nested(AttachmentSchema), load_default=list)


class ResumeFrameSchema(BaseSchema):
    type = fields.Constant("resume")
    session_id = fields.String(required=True)
    after_seq = StrictInteger(load_default=0, validate=validate.Range(min=0))


FRAME_SCHEMAS = {"message": MessageFrameSchema(), "resume": ResumeFrameSchema()}
