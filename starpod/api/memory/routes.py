"""`GET /api/memory/search` and `POST /api/memory/reindex` (any authenticated user).

Search covers the shared space plus the caller's own private space, for admins too (an admin
reads other users' notes only through the files, never through search).
"""
from __future__ import annotations

from flask import current_app

from ...errors import BadRequest
from ...memory import MemoryStore, get_store
from ..guards import current_user_id, require_user
from ..parsing import Blueprint
from ..responses import json_response
from .schemas import ReindexSchema, SearchHitSchema, SearchQuerySchema

blp = Blueprint("memory", __name__, url_prefix="/api/memory", description="Long-term memory search")

MAX_LIMIT = 100
# The effective user of an auth-disabled server (the chat pipeline files its memory under this id).
AUTH_DISABLED_USER = "admin"


def memory_store() -> MemoryStore:
    return get_store(current_app.config["STARPOD"])


@blp.route("/search", methods=["GET"])
@require_user
@blp.arguments(SearchQuerySchema, location="query")
@blp.response(200, SearchHitSchema(many=True))
@blp.alt_response(400, description="Empty q")
def search(args):
    """Best matches first; `q` is plain text (quotes, apostrophes and operators are just words)."""
    if not args["q"].strip():
        raise BadRequest("q must not be empty")
    if not 1 <= args["limit"] <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    hits = memory_store().search(args["q"], current_user_id(AUTH_DISABLED_USER), args["limit"])
    return json_response([{"source": path, "text": text, "line_start": start, "line_end": end}
                          for path, start, end, text, _score in hits])


@blp.route("/reindex", methods=["POST"])
@require_user
@blp.response(200, ReindexSchema)
def reindex():
    """Bring the index in line with the markdown files on disk (incremental)."""
    return {"status": "ok", **memory_store().reindex()}
