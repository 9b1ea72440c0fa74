"""Next-run computation (pure, the clock is an argument): DST gaps and overlaps, Sunday 0/7,
seconds, names, one-shots and zones."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from starpod.scheduler.schedule import (Schedule, ScheduleError, default_timezone, next_run, one_shot_instant,
                                        schedule_from_json, validate)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def utc(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


CRON_TABLE = [
    # (expr, zone, now (UTC), expected next (UTC))
    ("0 9 * * *", "UTC", "2026-03-02T08:59:59+00:00", "2026-03-02T09:00:00Z"),
    ("0 9 * * *", "UTC", "2026-03-02T09:00:00+00:00", "2026-03-03T09:00:00Z"),  # strictly after
    ("0 9 * * 0", "UTC", "2026-03-02T00:00:00+00:00", "2026-03-08T09:00:00Z"),  # Sunday as 0
    ("0 9 * * 7", "UTC", "2026-03-02T00:00:00+00:00", "2026-03-08T09:00:00Z"),  # Sunday as 7
    ("0 9 * * SUN", "UTC", "2026-03-02T00:00:00+00:00", "2026-03-08T09:00:00Z"),
    ("0 9 * * MON-FRI", "UTC", "2026-03-06T10:00:00+00:00", "2026-03-09T09:00:00Z"),  # Fri → Mon
    ("0 9 * * 1-5", "UTC", "2026-03-07T10:00:00+00:00", "2026-03-09T09:00:00Z"),  # Sat → Mon
    ("0 0 1 JAN *", "UTC", "2026-03-02T00:00:00+00:00", "2027-01-01T00:00:00Z"),
    ("*/15 * * * * *", "UTC", "2026-03-02T10:00:07+00:00", "2026-03-02T10:00:15Z"),  # 6 fields: seconds
    ("30 0 9 * * *", "UTC", "2026-03-02T08:00:00+00:00", "2026-03-02T09:00:30Z"),
    ("0 23 * * *", "Europe/Rome", "2026-06-15T12:00:00+00:00", "2026-06-15T21:00:00Z"),  # CEST = UTC+2
    ("0 23 * * *", "Europe/Rome", "2026-01-15T12:00:00+00:00", "2026-01-15T22:00:00Z"),  # CET = UTC+1
    # Europe/Rome spring forward 2026-03-29 02:00 → 03:00: 02:30 does not exist that day → skipped.
    ("30 2 * * *", "Europe/Rome", "2026-03-28T12:00:00+00:00", "2026-03-30T00:30:00Z"),
    ("30 3 * * *", "Europe/Rome", "2026-03-28T12:00:00+00:00", "2026-03-29T01:30:00Z"),
    # Europe/Rome fall back 2026-10-25 03:00 → 02:00: 02:30 happens twice → fires once, the earlier.
    ("30 2 * * *", "Europe/Rome", "2026-10-24T12:00:00+00:00", "2026-10-25T00:30:00Z"),
    ("30 2 * * *", "Europe/Rome", "2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00Z"),
    # America/New_York spring forward 2026-03-08 02:00 → 03:00 and fall back 2026-11-01 02:00 → 01:00.
    ("30 2 * * *", "America/New_York", "2026-03-07T05:00:00+00:00", "2026-03-07T07:30:00Z"),
    ("30 2 * * *", "America/New_York", "2026-03-07T08:00:00+00:00", "2026-03-09T06:30:00Z"),
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00+00:00", "2026-11-01T05:30:00Z"),
    ("30 1 * * *", "America/New_York", "2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00Z"),
    ("0 * * * *", "America/New_York", "2026-11-01T05:00:00+00:00", "2026-11-01T07:00:00Z"),
]


@pytest.mark.parametrize("expr, tz, now, expected", CRON_TABLE)
def test_next_cron_run(expr, tz, now, expected):
    assert utc(next_run(Schedule("cron", expr), at(now), tz)) == expected


def test_a_moving_clock_walks_through_the_occurrences():
    schedule, clock = Schedule("cron", "0 9 * * MON,WED"), at("2026-03-01T00:00:00+00:00")
    seen = []
    for _ in range(4):
        clock = next_run(schedule, clock, "UTC")
        seen.append(utc(clock))
    assert seen == ["2026-03-02T09:00:00Z", "2026-03-04T09:00:00Z", "2026-03-09T09:00:00Z", "2026-03-11T09:00:00Z"]


def test_interval_counts_from_now_in_whole_seconds():
    assert next_run(Schedule("interval", "1500"), 1000.75, "UTC") == 1002.0
    assert next_run(Schedule("interval", "60000"), 1000.0, "UTC") == 1060.0


ONE_SHOT_TABLE = [
    ("2030-06-15T23:00:00+01:00", "UTC", "2030-06-15T22:00:00Z"),
    ("2099-06-15T10:00:00+05:30", "UTC", "2099-06-15T04:30:00Z"),
    ("2099-06-15T10:00:00.250Z", "UTC", "2099-06-15T10:00:00Z"),
    ("2099-01-01T00:00:00", "Asia/Tokyo", "2098-12-31T15:00:00Z"),
    ("2099-01-01T00:00:00", "UTC", "2099-01-01T00:00:00Z"),
    ("2026-10-25T02:30:00", "Europe/Rome", "2026-10-25T00:30:00Z"),  # ambiguous → earlier instant
    ("2026-11-01T01:30:00", "America/New_York", "2026-11-01T05:30:00Z"),
]


@pytest.mark.parametrize("text, tz, expected", ONE_SHOT_TABLE)
def test_one_shot_instant(text, tz, expected):
    assert utc(one_shot_instant(text, tz)) == expected


@pytest.mark.parametrize("text, tz", [("2026-03-29T02:30:00", "Europe/Rome"),
                                      ("2026-03-08T02:30:00", "America/New_York")])
def test_one_shot_in_a_dst_gap_is_an_error(text, tz):
    with pytest.raises(ScheduleError, match="does not exist") as error:
        one_shot_instant(text, tz)
    assert error.value.field == "schedule.at"


def test_one_shot_fires_once_and_only_in_the_future():
    shot = Schedule("one_shot", "2030-01-01T00:00:00Z")
    assert utc(next_run(shot, at("2029-12-31T00:00:00+00:00"), "UTC")) == "2030-01-01T00:00:00Z"
    assert next_run(shot, at("2030-01-01T00:00:01+00:00"), "UTC") is None
    assert next_run(shot, at("2029-12-31T00:00:00+00:00"), "UTC", has_run=True) is None
    with pytest.raises(ScheduleError, match="in the past"):
        validate(shot, at("2031-01-01T00:00:00+00:00"), "UTC")


@pytest.mark.parametrize("data, field", [
    ({"kind": "cron", "expr": "61 * * * *"}, "schedule.expr"),
    ({"kind": "cron", "expr": "* * *"}, "schedule.expr"),
    ({"kind": "cron", "expr": "0 0 0 9 * * 2030"}, "schedule.expr"),
    ({"kind": "cron", "expr": "0 9 * * FUNDAY"}, "schedule.expr"),
    ({"kind": "interval", "every_ms": 10}, "schedule.every_ms"),
    ({"kind": "interval", "every_ms": "60000"}, "schedule.every_ms"),
    ({"kind": "one_shot"}, "schedule.at"),
    ({"kind": "sometimes"}, "schedule.kind"),
    ("0 9 * * *", "schedule"),
])
def test_invalid_schedules_name_their_field(data, field):
    with pytest.raises(ScheduleError) as error:
        schedule_from_json(data)
    assert error.value.field == field


def test_invalid_timestamp_and_timezone():
    with pytest.raises(ScheduleError, match="expected ISO 8601"):
        one_shot_instant("not-a-date", "UTC")
    with pytest.raises(ScheduleError) as error:
        validate(Schedule("interval", "60000"), 0, "Mars/Olympus_Mons")
    assert error.value.field == "timezone"
    assert default_timezone("Mars/Olympus_Mons") == "UTC" and default_timezone(None) == "UTC"
    assert default_timezone("Europe/Rome") == "Europe/Rome"


def test_schedule_json_round_trips():
    for data in ({"kind": "interval", "every_ms": 60000}, {"kind": "cron", "expr": "0 9 * * 1-5"},
                 {"kind": "one_shot", "at": "2030-01-01T09:00:00"}):
        assert schedule_from_json(data).to_json() == data
