"""Query and response schemas of the memory routes."""
from __future__ import annotations

from marshmallow import fields

from ..schemas import BaseSchema, Text


class SearchQuerySchema(BaseSchema):
    q = Text(load_default="", metadata={"description": "Plain text; every word must match"})
    limit = fields.Integer(load_default=10, metadata={"description": "1\u2013100"})


class SearchHitSchema(BaseSchema):
    source = fields.String(required=True, metadata={"description": "Memory file name"})
    text = fields.String(required=True)
    line_start = fields.Integer(required=True)
    line_end = fields.Integer(required=True)


class ReindexSchema(BaseSchema):
    status = fields.String(required=True, metadata={"example": "ok"})
    files = fields.Integer(required=True, metadata={"description": "Markdown files found"})
    indexed = fields.Integer(required=True, metadata={"description": "Files (re)indexed"})
    unchanged = fields.Integer(required=True)
    removed = fields.Integer(required=True, metadata={"description": "Files dropped from the index"})
    bytes = fields.Integer(required=True, metadata={"description": "Bytes (re)indexed"})
    seconds = fields.Float(required=True)
