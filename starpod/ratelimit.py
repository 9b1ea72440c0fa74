"""Per-user sliding-window rate limiting that holds across every worker process.

The window log lives in the shared database (`rate_limit_hits`), so all gunicorn workers count
against one budget.  Rejected requests are not recorded (exactly `max_requests` per window pass).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from peewee import fn

from .db import write_transaction
from .models import RateLimitHit


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # whole seconds until the oldest hit leaves the window


def _now_us() -> int:
    return time.time_ns() // 1000


def check(user_id: str, max_requests: int, window_secs: float, now_us: int | None = None) -> Verdict:
    """Record and allow a request, or reject it when the user's window is full."""
    if max_requests <= 0:
        return Verdict(True)
    now_us = _now_us() if now_us is None else now_us
    window_us = int(window_secs * 1_000_000)
    with write_transaction(f"rate_limit:{user_id}"):
        RateLimitHit.delete().where(
            (RateLimitHit.user_id == user_id) & (RateLimitHit.at <= now_us - window_us)).execute()
        count, oldest = (RateLimitHit.select(fn.COUNT(RateLimitHit.id), fn.MIN(RateLimitHit.at))
                         .where(RateLimitHit.user_id == user_id).scalar(as_tuple=True))
        if count >= max_requests:
            wait_us = oldest + window_us - now_us
            return Verdict(False, max(1, math.ceil(wait_us / 1_000_000)))
        RateLimitHit.create(user_id=user_id, at=now_us)
    return Verdict(True)
