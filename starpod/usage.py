"""Token and cost usage over the stored usage rows (one per completed agent run), per UTC day.

`usage_report(days, user_id)` sums the last `days` UTC days (today included), optionally for one
user (the owner of the session a run belonged to).  Every day of the window is listed, days
without runs as zeros, each broken down by model, so a chart needs no gap filling.  No Flask here.
"""
from __future__ import annotations

from datetime import timedelta

from peewee import SQL, fn

from .models import Session, UsageStat
from .timeutil import utcnow

MAX_DAYS = 366
COUNTERS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "runs")


def _zero() -> dict:
    return {name: 0 for name in COUNTERS} | {"cost_usd": 0.0}


def _add(total: dict, row: dict) -> None:
    for name in COUNTERS:
        total[name] += row[name]


def _rows(since: str, user_id: str | None) -> list[dict]:
    """Sums per (day, model, user) of the runs stamped at or after `since`."""
    # Literal bounds: with bound ones PostgreSQL cannot tell the grouped expression is the selected one.
    day = fn.SUBSTR(UsageStat.timestamp, SQL("1"), SQL("10"))
    query = (UsageStat
             .select(day.alias("day"), UsageStat.model, Session.user_id,
                     fn.SUM(UsageStat.input_tokens).alias("input_tokens"),
                     fn.SUM(UsageStat.output_tokens).alias("output_tokens"),
                     fn.SUM(UsageStat.cache_read).alias("cache_read_tokens"),
                     fn.SUM(UsageStat.cache_write).alias("cache_write_tokens"),
                     fn.SUM(UsageStat.cost_usd).alias("cost_usd"),
                     fn.COUNT(UsageStat.id).alias("runs"))
             .join(Session, on=(UsageStat.session == Session.id))
             .where(UsageStat.timestamp >= since))
    if user_id is not None:
        query = query.where(Session.user_id == user_id)
    rows = query.group_by(day, UsageStat.model, Session.user_id).dicts()
    # int(): PostgreSQL sums integers as NUMERIC (Decimal in Python).
    return [{**row, **{name: int(row[name]) for name in COUNTERS if name != "cost_usd"},
             "model": row["model"] or "unknown", "cost_usd": float(row["cost_usd"] or 0.0)} for row in rows]


def usage_report(days: int, user_id: str | None) -> dict:
    """Totals, per-day (with per-model) and per-user sums of the last `days` UTC days."""
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    daily = {(first + timedelta(days=n)).isoformat(): {"date": (first + timedelta(days=n)).isoformat(),
                                                        **_zero(), "models": {}}
             for n in range(days)}
    totals, users = _zero(), {}
    for row in _rows(f"{first.isoformat()}T", user_id):
        entry = daily.get(row["day"])
        if entry is None:  # a clock that ran ahead stamped a later day: not in the window
            continue
        for bucket in (totals, entry, entry["models"].setdefault(row["model"], {"model": row["model"], **_zero()}),
                       users.setdefault(row["user_id"], {"user_id": row["user_id"], **_zero()})):
            _add(bucket, row)
    return {"days": days, "user_id": user_id, "since": first.isoformat(), "until": today.isoformat(),
            "totals": totals,
            "daily": [{**entry, "models": sorted(entry["models"].values(), key=lambda m: m["model"])}
                      for entry in daily.values()],
            "users": sorted(users.values(), key=lambda u: (-u["cost_usd"], u["user_id"]))}
