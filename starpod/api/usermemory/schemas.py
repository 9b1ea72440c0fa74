"""Bodies of the per-user memory file routes."""
from __future__ import annotations

from marshmallow import fields

from ..schemas import BaseSchema
from ..settings.schemas import Text


class UserMemorySummarySchema(BaseSchema):
    id = fields.String(required=True, metadata={"description": "User id (account id, or a space found on disk)"})
    has_user_md = fields.Boolean(required=True)
    has_memory_md = fields.Boolean(required=True)
    daily_log_count = fields.Integer(required=True, metadata={"description": "Files in users/<id>/memory/"})


class UserMemorySchema(BaseSchema):
    id = fields.String(required=True)
    user_md = fields.String(required=True, metadata={"description": "USER.md (\"\" when missing)"})
    memory_md = fields.String(required=True, metadata={"description": "MEMORY.md (\"\" when missing)"})
    daily_log_count = fields.Integer(required=True)


class UserMemoryUpdateSchema(BaseSchema):
    user_md = Text(allow_none=True, load_default=None, metadata={"description": "New USER.md; absent/null keeps it"})
    memory_md = Text(allow_none=True, load_default=None,
                     metadata={"description": "New MEMORY.md; absent/null keeps it"})
