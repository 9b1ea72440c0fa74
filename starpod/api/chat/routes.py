"""`POST /api/chat`: the shared chat pipeline, collected into one JSON answer."""
from __future__ import annotations

from flask import current_app

from ...agent.pipeline import ChatRequest, collect, run_chat
from ...errors import StarpodError, UpstreamFailed
from ..guards import caller_is_admin, current_user_id, require_user
from ..parsing import Blueprint
from ..responses import json_response
from .schemas import ChatRequestSchema, ChatResponseSchema

blp = Blueprint("chat", __name__, url_prefix="/api", description="Chat with the agent")


@blp.route("/chat", methods=["POST"])
@require_user
@blp.arguments(ChatRequestSchema)
@blp.response(200, ChatResponseSchema)
@blp.alt_response(400, description="Empty text")
@blp.alt_response(502, description="The LLM provider failed")
@blp.alt_response(503, description="No API key configured for the provider")
def chat(body):
    """Run one agent turn (tools included) and return the reply, the session id and the usage."""
    request = ChatRequest(text=body["text"], user_id=current_user_id(body["user_id"] or "admin"),
                          is_admin=caller_is_admin(), channel_id=body["channel_id"] or "main",
                          channel_session_key=body["channel_session_key"])
    end = collect(run_chat(request, current_app.config["STARPOD"]))
    for error in end["errors"]:
        if error.startswith("API error"):
            raise UpstreamFailed(f"Chat error: {error}")
        raise StarpodError(f"Chat error: Agent error: {error}")
    # Already in the documented shape (token counts are ints, the cost a float): serialized once.
    return json_response({"text": end["text"], "session_id": end["session_id"],
                          "usage": {"input_tokens": end["input_tokens"], "output_tokens": end["output_tokens"],
                                    "cache_read_tokens": end["cache_read_tokens"],
                                    "cache_write_tokens": end["cache_write_tokens"], "cost_usd": end["cost_usd"]}})
