"""Cron and heartbeat notifications of a user's jobs, sent to that user's linked Telegram chat(s)."""
from __future__ import annotations

import logging

from ...config import Config
from ...models import TelegramLink, User
from .client import client_for, is_configured
from .delivery import send_reply
from .store import connection

log = logging.getLogger(__name__)


def notification_text(frame: dict) -> str:
    """A `notification` frame (see starpod.notify) as a short Markdown message."""
    status = "finished" if frame.get("success") else "failed"
    icon = "✅" if frame.get("success") else "❌"
    preview = (frame.get("result_preview") or "").strip()
    return f"{icon} **{frame.get('job_name') or 'Job'}** {status}" + (f"\n\n{preview}" if preview else "")


def linked_chats(user_id: str) -> list[int]:
    """Telegram ids linked to `user_id` when that user is active (private chat id = user id)."""
    with connection():
        return [link.telegram_id for link in
                TelegramLink.select(TelegramLink.telegram_id).join(User)
                .where((TelegramLink.user == user_id) & (User.is_active == True))]  # noqa: E712


def deliver_notification(config: Config, user_id: str, frame: dict) -> int:
    """Send `frame` to the user's linked chats when the bot is configured and enabled; returns how
    many chats got it.  Failures are logged, never raised: a notification must not fail a job."""
    if not is_configured(config) or not config.agent.channels.telegram.enabled:
        return 0
    delivered = 0
    for chat_id in linked_chats(user_id):
        try:
            send_reply(client_for(config), chat_id, notification_text(frame))
            delivered += 1
        except Exception:
            log.exception("telegram notification to chat %s failed", chat_id)
    return delivered
