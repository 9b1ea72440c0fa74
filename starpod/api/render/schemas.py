"""Bodies of `POST /api/render`."""
from __future__ import annotations

from marshmallow import fields

from ...render import MAX_RENDER_BYTES
from ..schemas import BaseSchema
from ..settings.schemas import Text


class RenderRequestSchema(BaseSchema):
    text = Text(required=True, metadata={"description": f"Markdown, at most {MAX_RENDER_BYTES} bytes of UTF-8"})


class RenderedSchema(BaseSchema):
    html = fields.String(required=True, metadata={"description": "Sanitized HTML: no script, no event "
                                                                 "handlers, only http(s)/mailto links"})
