"""`POST /api/render`: markdown to sanitized HTML, for any authenticated user."""
from __future__ import annotations

from flask_smorest import Blueprint

from ...errors import PayloadTooLarge
from ...render import MAX_RENDER_BYTES, render_markdown
from ..guards import require_user
from .schemas import RenderedSchema, RenderRequestSchema

blp = Blueprint("render", __name__, url_prefix="/api", description="Markdown rendering")


@blp.route("/render", methods=["POST"])
@require_user
@blp.arguments(RenderRequestSchema)
@blp.response(200, RenderedSchema)
@blp.alt_response(400, description="Malformed JSON")
@blp.alt_response(413, description=f"text larger than {MAX_RENDER_BYTES} bytes")
@blp.alt_response(422, description="text missing or not a string")
def render(body):
    """Render `text` as CommonMark (plus tables and strikethrough); raw HTML in it is shown as text."""
    size = len(body["text"].encode("utf-8"))
    if size > MAX_RENDER_BYTES:
        raise PayloadTooLarge(f"text size ({size} bytes) exceeds maximum ({MAX_RENDER_BYTES} bytes)",
                              fields={"text": [f"at most {MAX_RENDER_BYTES} bytes"]})
    return {"html": render_markdown(body["text"])}
