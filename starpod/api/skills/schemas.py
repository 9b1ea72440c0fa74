"""Bodies of the skills routes."""
from __future__ import annotations

from marshmallow import fields, validate

from ...agent.skills import MAX_SKILL_BYTES, NAME_RE
from ..schemas import BaseSchema
from ..settings.schemas import Text

NAME_DOC = {"description": "Letters, digits, '-' and '_', starting with a letter or digit (max 64)",
            "pattern": NAME_RE.pattern}


class SkillSchema(BaseSchema):
    name = fields.String(required=True, metadata=NAME_DOC)
    description = fields.String(required=True)
    version = fields.String(required=True, allow_none=True)
    body = fields.String(required=True, metadata={"description": "Markdown instructions given to the model"})
    created_at = fields.String(required=True, metadata={"description": "RFC 3339 UTC"})


class SkillUpdateSchema(BaseSchema):
    description = Text(load_default="", metadata={"description": "One line (whitespace is collapsed)"})
    body = Text(required=True, metadata={"description": f"Markdown; description + body at most {MAX_SKILL_BYTES} bytes"})
    version = Text(allow_none=True, load_default=None,
                   metadata={"description": "e.g. 1.0.2; on update null keeps the stored one and \"\" removes it"})


class SkillCreateSchema(SkillUpdateSchema):
    name = Text(required=True, metadata=NAME_DOC)


class SkillGenerateSchema(BaseSchema):
    name = Text(required=True, metadata=NAME_DOC)
    description = Text(allow_none=True, load_default=None, validate=validate.Length(max=1000))
    prompt = Text(allow_none=True, load_default=None, validate=validate.Length(max=20000),
                  metadata={"description": "What the skill should do"})


class SkillDraftSchema(BaseSchema):
    description = fields.String(required=True)
    body = fields.String(required=True)
