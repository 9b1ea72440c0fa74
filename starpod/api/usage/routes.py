"""`GET /api/usage?days=&user_id=`: users see their own runs, admins everyone's or one user's."""
from __future__ import annotations

from flask_smorest import Blueprint

from ... import usage
from ...errors import BadRequest
from ..guards import Forbidden, caller_is_admin, current_user_id, require_user
from .schemas import UsageQuerySchema, UsageReportSchema

blp = Blueprint("usage", __name__, url_prefix="/api", description="Token and cost usage")


def _invalid(field: str, message: str) -> BadRequest:
    return BadRequest(message, fields={field: [message]})


def _user_filter(requested: str | None) -> str | None:
    """The user whose runs are summed: anyone (or everyone) for admins, else only the caller."""
    if requested is not None and not requested.strip():
        raise _invalid("user_id", "user_id must not be empty")
    if caller_is_admin():
        return requested
    own = current_user_id()
    if requested is not None and requested != own:
        raise Forbidden("Admin access required to see another user's usage")
    return own


@blp.route("/usage", methods=["GET"])
@require_user
@blp.arguments(UsageQuerySchema, location="query")
@blp.response(200, UsageReportSchema)
@blp.alt_response(400, description="days outside 1\u2013366, or an empty user_id")
@blp.alt_response(403, description="A non-admin asked for another user's usage")
@blp.alt_response(422, description="days is not an integer")
def get_usage(query):
    """Tokens, cost and runs per UTC day (and per model) over the last `days` days, plus per-user sums."""
    if not 1 <= query["days"] <= usage.MAX_DAYS:
        raise _invalid("days", f"days must be between 1 and {usage.MAX_DAYS}")
    return usage.usage_report(query["days"], _user_filter(query["user_id"]))
