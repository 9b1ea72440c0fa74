"""Notifications for every connected WebSocket client, callable from any worker or process.

`notify(...)` stores one `notification` frame and rings every worker's doorbell; each worker's
realtime hub reads the new rows and sends them to all of its clients (a client too slow to keep
up loses notifications rather than stalling the others).  The database must be open in the
calling process (`starpod.db.open_database`), as it is in every Starpod process.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from .db import database
from .models import Notification
from .realtime.doorbell import ring, run_dir
from .realtime.pgbell import announce
from .sessions import truncate_utf8

PREVIEW_MAX_BYTES = 500


def notification_frame(job_name: str, session_id: str, result_preview: str, success: bool) -> dict:
    return {"type": "notification", "job_name": job_name, "session_id": session_id,
            "result_preview": truncate_utf8(result_preview, PREVIEW_MAX_BYTES), "success": success}


def notify(job_name: str, session_id: str, result_preview: str, success: bool, *, home: Path) -> None:
    """Tell every WebSocket client of every worker serving the data directory `home` that a cron
    job or heartbeat finished (`session_id` is "" when it failed before a session existed)."""
    frame = notification_frame(job_name, session_id, result_preview, success)
    # Reuse the caller's connection (it may be inside a transaction); open one only when needed.
    with database.connection_context() if database.is_closed() else nullcontext():
        Notification.create(frame=json.dumps(frame, ensure_ascii=False, separators=(",", ":")))
    ring(run_dir(home))
    announce()
