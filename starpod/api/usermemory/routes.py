"""`GET /api/settings/users`, `GET/PUT /api/settings/users/<id>`: each user's USER.md and MEMORY.md,
admin only.  A PUT replaces the files atomically and re-indexes them before answering, so memory
search (by that user) finds the new text at once."""
from __future__ import annotations

from flask import current_app
from flask_smorest import Blueprint

from ... import usermemory
from ...memory import MemoryStore, get_store
from ..bodies import json_body_for
from ..guards import require_admin
from .schemas import UserMemorySchema, UserMemorySummarySchema, UserMemoryUpdateSchema

blp = Blueprint("user_memory", __name__, url_prefix="/api/settings/users",
                description="Per-user memory files (admin)")
json_body = json_body_for(blp)
SPACE_UNUSABLE = "The user's space leads outside the data directory (a symlink)"


def _store() -> MemoryStore:
    return get_store(current_app.config["STARPOD"])


@blp.route("", methods=["GET"])
@require_admin
@blp.response(200, UserMemorySummarySchema(many=True))
def list_users():
    """Every account, then any other user space on disk, with which memory files exist."""
    return usermemory.list_user_memory(_store())


@blp.route("/<user_id>", methods=["GET"])
@require_admin
@blp.response(200, UserMemorySchema)
@blp.alt_response(400, description=SPACE_UNUSABLE)
@blp.alt_response(404, description=usermemory.USER_NOT_FOUND)
def get_user(user_id):
    return usermemory.get_user_memory(_store(), user_id)


@blp.route("/<user_id>", methods=["PUT"])
@require_admin
@json_body
@blp.arguments(UserMemoryUpdateSchema)
@blp.response(200, UserMemorySchema)
@blp.alt_response(404, description=usermemory.USER_NOT_FOUND)
@blp.alt_response(413, description="A file larger than 1 MiB")
def put_user(body, user_id):
    """Replace USER.md and/or MEMORY.md (neither given → 400); answers with the stored files."""
    return usermemory.update_user_memory(_store(), user_id, body)
