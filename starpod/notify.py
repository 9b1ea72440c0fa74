"""Notifications for the WebSocket clients of one user, callable from any worker or process.

`notify(...)` stores one `notification` frame with its owner and rings every worker's doorbell;
each worker's realtime hub reads the new rows and sends them to the owner's clients only (an
agent-level notification, owner None, goes to admins; a client too slow to keep up loses
notifications rather than stalling the others).  A user's notification also goes to the user's
linked Telegram chats when the bot is configured.  The database must be open in the
calling process (`starpod.db.open_database`), as it is in every Starpod process.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from .channels.telegram.notifications import deliver_notification
from .config import Config
from .db import database
from .models import Notification
from .realtime.doorbell import ring_everyone
from .sessions import truncate_utf8

PREVIEW_MAX_BYTES = 500


def notification_frame(job_name: str, session_id: str, result_preview: str, success: bool) -> dict:
    return {"type": "notification", "job_name": job_name, "session_id": session_id,
            "result_preview": truncate_utf8(result_preview, PREVIEW_MAX_BYTES), "success": success}


def notify(job_name: str, session_id: str, result_preview: str, success: bool, *, config: Config,
           user_id: str | None = None) -> None:
    """Tell the WebSocket clients of `user_id` (None: of the admins) on every worker serving
    `config`'s data directory, and the user's linked Telegram chats, that a cron job or heartbeat
    finished (`session_id` is "" when it failed before a session existed)."""
    frame = notification_frame(job_name, session_id, result_preview, success)
    # Reuse the caller's connection (it may be inside a transaction); open one only when needed.
    with database.connection_context() if database.is_closed() else nullcontext():
        Notification.create(frame=json.dumps(frame, ensure_ascii=False, separators=(",", ":")),
                            user_id=user_id)
    ring_everyone(config.home)
    if user_id is not None:
        deliver_notification(config, user_id, frame)
