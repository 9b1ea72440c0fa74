"""Schedules and their next run: `interval` (every_ms), `cron` (croniter) and `one_shot` (at).

Everything here is pure: instants are epoch seconds (UTC) and "now" is passed in, so tests can move
the clock.  Cron expressions have 5 fields (min hour dom month dow) or 6 with leading seconds;
day-of-week 0 and 7 are both Sunday, names MON–SUN and JAN–DEC work.  They are evaluated in the
job's IANA zone on wall-clock time: a wall time that does not exist (DST gap) is skipped, a wall
time that happens twice (DST overlap) fires once, at the earlier instant.  A naive one-shot `at`
in a gap is an error; in an overlap it means the earlier instant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

KINDS = ("interval", "cron", "one_shot")
MIN_INTERVAL_MS = 1000
MAX_CANDIDATES = 1000  # wall-clock occurrences examined before giving up (impossible expressions)
NAIVE_FORMAT = "%Y-%m-%dT%H:%M:%S"
UTC = timezone.utc


class ScheduleError(ValueError):
    """A schedule, expression, timestamp or zone that cannot be used; `field` names the input."""

    def __init__(self, message: str, field: str = "schedule"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Schedule:
    kind: str
    value: str  # interval: decimal ms; cron: the expression; one_shot: the timestamp as given

    def to_json(self) -> dict:
        if self.kind == "interval":
            return {"kind": "interval", "every_ms": int(self.value)}
        if self.kind == "cron":
            return {"kind": "cron", "expr": self.value}
        return {"kind": "one_shot", "at": self.value}


def schedule_from_json(data) -> Schedule:
    """A validated Schedule from its tagged JSON form (errors name `schedule.<field>`)."""
    if not isinstance(data, dict):
        raise ScheduleError("schedule must be an object", "schedule")
    kind = data.get("kind")
    if kind == "interval":
        every = data.get("every_ms")
        if isinstance(every, bool) or not isinstance(every, int) or every < MIN_INTERVAL_MS:
            raise ScheduleError(f"every_ms must be an integer ≥ {MIN_INTERVAL_MS}", "schedule.every_ms")
        return Schedule("interval", str(every))
    if kind == "cron":
        expr = data.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            raise ScheduleError("expr must be a cron expression", "schedule.expr")
        cron_fields(expr)
        return Schedule("cron", expr.strip())
    if kind == "one_shot":
        at = data.get("at")
        if not isinstance(at, str) or not at.strip():
            raise ScheduleError("at must be a timestamp", "schedule.at")
        return Schedule("one_shot", at.strip())
    raise ScheduleError(f"kind must be one of {', '.join(KINDS)}", "schedule.kind")


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or ScheduleError naming `timezone`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f"Unknown timezone '{name}': expected an IANA name like 'Europe/Rome'",
                            "timezone") from None


def default_timezone(configured: str | None) -> str:
    """The settings `timezone` when it is a valid zone, else UTC."""
    if configured:
        try:
            ZoneInfo(configured)
            return configured
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return "UTC"


def cron_fields(expr: str) -> str:
    """`expr` normalised to croniter's 6-field form (seconds first), or ScheduleError."""
    parts = expr.split()
    if len(parts) == 5:
        parts = ["0"] + parts
    elif len(parts) != 6:
        raise ScheduleError(f"Invalid cron expression '{expr}': expected 5 fields "
                            "(minute hour day month weekday) or 6 with leading seconds", "schedule.expr")
    normalised = " ".join(parts)
    try:
        croniter(normalised, datetime(2000, 1, 1), second_at_beginning=True)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"Invalid cron expression '{expr}': {exc}", "schedule.expr") from None
    return normalised


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    """False for a wall time inside a DST gap (it does not survive a round trip through UTC)."""
    local = wall.replace(tzinfo=tz)
    return local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


def local_instant(wall: datetime, tz: ZoneInfo) -> float | None:
    """Epoch seconds of naive wall time `wall` in `tz` (earlier one on overlap); None in a gap."""
    if not _exists(wall, tz):
        return None
    return wall.replace(tzinfo=tz, fold=0).timestamp()


def next_cron(expr: str, after: float, tz_name: str) -> float:
    """The first occurrence of `expr` strictly after `after`, evaluated in `tz_name`."""
    tz = zone(tz_name)
    wall_now = datetime.fromtimestamp(after, tz).replace(tzinfo=None)
    # Start an hour back so occurrences in a repeated (overlap) hour are not missed.
    iterator = croniter(cron_fields(expr), wall_now - timedelta(hours=1), second_at_beginning=True)
    for _ in range(MAX_CANDIDATES):
        try:
            wall = iterator.get_next(datetime)
        except CroniterError as exc:
            raise ScheduleError(f"Invalid cron expression '{expr}': {exc}", "schedule.expr") from None
        instant = local_instant(wall, tz)
        if instant is not None and instant > after:
            return instant
    raise ScheduleError(f"Invalid cron expression '{expr}': no upcoming occurrence", "schedule.expr")


def one_shot_instant(at: str, tz_name: str) -> float:
    """Epoch seconds of `at`: RFC 3339 with offset, or naive `YYYY-MM-DDTHH:MM:SS` in `tz_name`."""
    text = at.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is not None and moment.tzinfo is not None and "T" in text.upper():
        return moment.timestamp()
    try:
        wall = datetime.strptime(at.strip(), NAIVE_FORMAT)
    except ValueError:
        raise ScheduleError(f"Invalid timestamp '{at}': expected ISO 8601 format "
                            "(e.g. '2026-03-19T09:00:00Z' or '2026-03-19T09:00:00')", "schedule.at") from None
    instant = local_instant(wall, zone(tz_name))
    if instant is None:
        raise ScheduleError(f"Timestamp '{at}' does not exist in timezone '{tz_name}'", "schedule.at")
    return instant


def next_run(schedule: Schedule, now: float, tz_name: str, has_run: bool = False) -> float | None:
    """When `schedule` fires next after `now` (for an interval: `now` + the interval, `now` being
    the creation or the completion of the previous run); None when it never fires again."""
    if schedule.kind == "interval":
        return float(math.floor(now + int(schedule.value) / 1000))
    if schedule.kind == "cron":
        return next_cron(schedule.value, now, tz_name)
    instant = one_shot_instant(schedule.value, tz_name)
    return instant if instant > now and not has_run else None


def validate(schedule: Schedule, now: float, tz_name: str) -> float:
    """The first run of a new or changed schedule; a one-shot in the past is an error."""
    zone(tz_name)
    first = next_run(schedule, now, tz_name)
    if first is None:
        raise ScheduleError(f"One-shot timestamp '{schedule.value}' is in the past. Use a future timestamp.",
                            "schedule.at")
    return first
