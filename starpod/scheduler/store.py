"""Cron jobs and runs in the shared database: validation, CRUD, ownership and JSON shapes.

Names are unique per owner (`user_id`; None = agent-level job).  A caller addresses jobs through
an `Owners` scope: a user sees only their own jobs; an admin also sees agent-level ones and may
pick another user's.  `__heartbeat__` is the agent's own job: nobody creates or deletes it, and
only admins switch it on or off.  Every function needs an open database connection.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from peewee import IntegrityError

from ..errors import BadRequest, Conflict, NotFound
from ..models import CronJob, CronRun
from .schedule import Schedule, ScheduleError, next_run, schedule_from_json, validate, zone

HEARTBEAT = "__heartbeat__"
SESSION_MODES = ("isolated", "main")
NAME_MAX = 100
RUNS_LIMIT_MAX = 200
UPDATABLE = ("name", "prompt", "schedule", "timezone", "enabled", "delete_after_run", "max_retries", "timeout_secs",
             "session_mode")


@dataclass(frozen=True)
class Owners:
    """Whose jobs a caller may address: `user_id` and, when `agent_level`, the agent's own."""
    user_id: str | None
    agent_level: bool = False
    everyone: bool = False  # admins listing without a filter

    @classmethod
    def for_caller(cls, user_id: str | None, is_admin: bool, wanted: str | None = None) -> "Owners":
        if is_admin and wanted:
            return cls(wanted)
        return cls(user_id, agent_level=is_admin)

    def condition(self):
        mine = CronJob.user_id == self.user_id if self.user_id is not None else CronJob.user_id.is_null()
        return mine | CronJob.user_id.is_null() if self.agent_level else mine


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_of(job: CronJob) -> Schedule:
    return Schedule(job.schedule_type, job.schedule_value)


def job_json(job: CronJob) -> dict:
    return {"id": job.id, "name": job.name, "prompt": job.prompt, "schedule": schedule_of(job).to_json(),
            "timezone": job.timezone, "enabled": job.enabled, "delete_after_run": job.delete_after_run,
            "max_retries": job.max_retries, "timeout_secs": job.timeout_secs, "session_mode": job.session_mode,
            "user_id": job.user_id, "created_at": rfc3339(job.created_at), "last_run_at": rfc3339(job.last_run_at),
            "next_run_at": rfc3339(job.next_run_at), "retry_count": job.retry_count,
            "retry_at": rfc3339(job.retry_at), "last_error": job.last_error}


def run_json(run: CronRun, job_name: str) -> dict:
    return {"id": run.id, "job_name": job_name, "started_at": rfc3339(run.started_at),
            "completed_at": rfc3339(run.completed_at), "status": run.status,
            "result_summary": run.result_summary, "session_id": run.session_id}


def backoff_secs(retry_count: int) -> int:
    """Delay before the next attempt of a failed run, by how many retries already happened."""
    return (30, 60, 300, 900, 3600)[min(max(retry_count, 0), 4)]


# --- validation ------------------------------------------------------------------------------

def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", fields={field: [message]})


def _schedule_error(exc: ScheduleError) -> BadRequest:
    return _bad(exc.field, str(exc))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _bad("name", "must not be empty")
    if len(name) > NAME_MAX or "/" in name or any(ord(ch) < 0x20 for ch in name):
        raise _bad("name", f"at most {NAME_MAX} characters, no '/' or control characters")
    if name == HEARTBEAT:
        raise _bad("name", f"'{HEARTBEAT}' is reserved for the heartbeat (HEARTBEAT.md)")
    return name


def parse_schedule(data) -> Schedule:
    try:
        return schedule_from_json(data)
    except ScheduleError as exc:
        raise _schedule_error(exc) from None


def first_run(schedule: Schedule, now: float, tz_name: str) -> float:
    try:
        return validate(schedule, now, tz_name)
    except ScheduleError as exc:
        raise _schedule_error(exc) from None


def check_timezone(tz_name: str) -> str:
    try:
        zone(tz_name)
    except ScheduleError as exc:
        raise _schedule_error(exc) from None
    return tz_name


def _check_limits(values: dict) -> None:
    if values.get("max_retries") is not None and not 0 <= values["max_retries"] <= 100:
        raise _bad("max_retries", "must be between 0 and 100")
    if values.get("timeout_secs") is not None and values["timeout_secs"] < 1:
        raise _bad("timeout_secs", "must be at least 1")
    if values.get("session_mode") is not None and values["session_mode"] not in SESSION_MODES:
        raise _bad("session_mode", "must be 'isolated' or 'main'")
    if "prompt" in values and (not isinstance(values["prompt"], str) or not values["prompt"].strip()):
        raise _bad("prompt", "must not be empty")


# --- jobs ------------------------------------------------------------------------------------

def create_job(name: str, prompt: str, schedule: Schedule, *, user_id: str | None, tz_name: str, now: float,
               max_retries: int, timeout_secs: int, enabled: bool = True, delete_after_run: bool = False,
               session_mode: str = "isolated", reserved_ok: bool = False) -> CronJob:
    """Add a job; a past one-shot, bad zone or schedule is a 400, a duplicate name a 409."""
    if not reserved_ok:
        check_name(name)
    _check_limits({"prompt": prompt, "max_retries": max_retries, "timeout_secs": timeout_secs,
                   "session_mode": session_mode})
    check_timezone(tz_name)
    next_at = first_run(schedule, now, tz_name)
    try:
        return CronJob.create(name=name, prompt=prompt, schedule_type=schedule.kind, schedule_value=schedule.value,
                              timezone=tz_name, enabled=enabled, delete_after_run=delete_after_run,
                              created_at=now, next_run_at=next_at if enabled else None, max_retries=max_retries,
                              timeout_secs=timeout_secs, session_mode=session_mode, user_id=user_id,
                              owner_key=user_id or "")
    except IntegrityError:
        raise Conflict(f"A job named '{name}' already exists") from None


def list_jobs(owners: Owners) -> list[CronJob]:
    query = CronJob.select().order_by(CronJob.name, CronJob.user_id)
    return list(query if owners.everyone else query.where(owners.condition()))


def find_job(name: str, owners: Owners) -> CronJob:
    """The caller's job `name` (their own before an agent-level one of that name), else 404."""
    found = sorted(CronJob.select().where((CronJob.name == name) & owners.condition()),
                   key=lambda job: job.user_id is None)
    if not found:
        raise NotFound(f"Job '{name}' not found")
    return found[0]


def update_job(job: CronJob, changes: dict, now: float, is_admin: bool) -> CronJob:
    """Apply a partial update.  A new schedule or zone, or switching the job on, recomputes the
    next run (a past one-shot is a 400); switching it off clears it."""
    changes = {k: v for k, v in changes.items() if k in UPDATABLE and v is not None}
    if job.name == HEARTBEAT and (set(changes) - {"enabled"} or not is_admin):
        raise _bad("name", f"'{HEARTBEAT}' is the heartbeat: only admins may switch it on or off")
    if "name" in changes:
        check_name(changes["name"])
    _check_limits(changes)
    if "schedule" in changes:
        schedule = changes.pop("schedule")
        changes.update(schedule_type=schedule.kind, schedule_value=schedule.value)
    tz_name = check_timezone(changes.get("timezone", job.timezone))
    for field, value in changes.items():
        setattr(job, field, value)
    rescheduled = {"schedule_type", "timezone", "enabled"} & set(changes)
    if not job.enabled:
        job.next_run_at = None
    elif rescheduled:
        job.next_run_at = first_run(schedule_of(job), now, tz_name)
    try:
        job.save()
    except IntegrityError:
        raise Conflict(f"A job named '{job.name}' already exists") from None
    return job


def delete_job(job: CronJob) -> None:
    if job.name == HEARTBEAT:
        raise _bad("name", f"'{HEARTBEAT}' cannot be deleted; an admin can disable it")
    job.delete_instance()


# --- runs ------------------------------------------------------------------------------------

def list_runs(job: CronJob, limit: int) -> list[CronRun]:
    if not 1 <= limit <= RUNS_LIMIT_MAX:
        raise _bad("limit", f"must be between 1 and {RUNS_LIMIT_MAX}")
    return list(CronRun.select().where(CronRun.job == job.id)
                .order_by(CronRun.requested_at.desc(), CronRun.id.desc()).limit(limit))


def request_run(job: CronJob, now: float, note: str | None = None) -> CronRun:
    """Ask the scheduler to run `job` now (it picks pending runs up within its slots); `note` is
    put before the prompt for this run only."""
    return CronRun.create(job=job.id, status="pending", requested_at=now, note=note or None)


def reschedule_after(job: CronJob, now: float, ran: bool) -> float | None:
    """The next regular run of `job` after a run that ended at `now` (None: never again)."""
    try:
        return next_run(schedule_of(job), now, job.timezone, has_run=ran)
    except ScheduleError:
        return None
