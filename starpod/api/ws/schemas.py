"""Frames a WebSocket client may send to `/ws` (spec chat-sessions-ws §5.2 plus `resume` and `stop`)."""
from __future__ import annotations

from marshmallow import fields, validate

from ..schemas import BaseSchema, MaxBytes, StrictInteger, Text

MAX_FILE_NAME_BYTES = 255  # the longest file name common file systems store


class AttachmentSchema(BaseSchema):
    file_name = Text(required=True, validate=MaxBytes(MAX_FILE_NAME_BYTES))
    mime_type = Text(required=True)
    data = Text(required=True)


class MessageFrameSchema(BaseSchema):
    type = fields.Constant("message")
    text = Text(required=True)
    user_id = Text(load_default=None, allow_none=True)
    channel_id = Text(load_default="main", allow_none=True)
    channel_session_key = Text(load_default=None, allow_none=True)
    attachments = fields.List(fields.Nested(AttachmentSchema), load_default=list)


class ResumeFrameSchema(BaseSchema):
    type = fields.Constant("resume")
    session_id = Text(required=True)
    after_seq = StrictInteger(load_default=0, validate=validate.Range(min=0))


class StopFrameSchema(BaseSchema):
    """Stop the reply of the run this socket follows, or the one streaming in `session_id`."""
    type = fields.Constant("stop")
    session_id = Text(load_default=None, allow_none=True)


FRAME_SCHEMAS = {"message": MessageFrameSchema(), "resume": ResumeFrameSchema(), "stop": StopFrameSchema()}
