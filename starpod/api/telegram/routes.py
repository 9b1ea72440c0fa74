"""`POST /api/telegram/webhook`: Telegram delivers updates here in webhook mode.

The secret header is checked before the body is read.  The answer is sent as soon as the update
is claimed (processing continues in the background), and a redelivered update id is answered
`duplicate` without being handled again.
"""
from __future__ import annotations

import functools
import hmac

from flask import current_app, request
from flask_smorest import Blueprint

from ...channels.telegram import accept_webhook_update, webhook_enabled
from ...config import Config
from ...errors import NotFound, StarpodError
from .schemas import WebhookAnswerSchema, WebhookUpdateSchema

blp = Blueprint("telegram", __name__, url_prefix="/api/telegram", description="Telegram bot webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class Unauthorized(StarpodError):
    status = 401


def _config() -> Config:
    return current_app.config["STARPOD"]


def require_secret(view):
    """404 unless webhook mode is on; 401 unless the secret header matches TELEGRAM_WEBHOOK_SECRET."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        config = _config()
        if not webhook_enabled(config):
            raise NotFound("Telegram webhook is not enabled")
        expected = config.telegram_webhook_secret
        presented = request.headers.get(SECRET_HEADER, "")
        if expected is None or not hmac.compare_digest(presented.encode(), expected.encode()):
            raise Unauthorized("Invalid webhook secret")
        return view(*args, **kwargs)
    return wrapper


@blp.route("/webhook", methods=["POST"])
@require_secret
@blp.arguments(WebhookUpdateSchema)
@blp.response(200, WebhookAnswerSchema)
@blp.alt_response(400, description="Malformed JSON, or not a Telegram Update")
@blp.alt_response(401, description="Missing or wrong X-Telegram-Bot-Api-Secret-Token")
@blp.alt_response(404, description="No bot token, channel disabled, or not in webhook mode")
def webhook(_body):
    """Accept one Telegram Update; it is answered in the background, each update_id once."""
    accepted = accept_webhook_update(_config(), request.get_json())
    return {"status": "ok" if accepted else "duplicate"}
