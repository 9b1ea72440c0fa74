"""The part of a Telegram Update the webhook checks (the rest is read by the channel itself)."""
from __future__ import annotations

from ..schemas import BaseSchema, StatusSchema, StrictInteger


class WebhookUpdateSchema(BaseSchema):
    update_id = StrictInteger(required=True, metadata={"description": "Telegram's id of the update"})


class WebhookAnswerSchema(StatusSchema):
    """`ok` when the update was queued, `duplicate` when it had been received before."""
