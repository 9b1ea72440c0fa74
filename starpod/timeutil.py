"""Timestamps: one fixed-width RFC 3339 UTC text form, stored and served as-is.

`YYYY-MM-DDTHH:MM:SS.ffffffZ` sorts as text in time order, so the database can order by it.
"""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return to_rfc3339(utcnow())


def parse_rfc3339(text: str | None) -> datetime | None:
    """Parse a stored timestamp; None when absent or unparseable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
