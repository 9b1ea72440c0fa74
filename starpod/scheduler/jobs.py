"""Job operations shared by the REST API, the agent tools and the CLI commands.

Each applies configured defaults, calls the store and wakes the scheduler so a change takes
effect at once.  Callers hold a database connection and pass who is acting (`Owners`).
"""
from __future__ import annotations

import time

from ..config import Config
from ..models import CronJob, CronRun
from . import store
from .engine import wake
from .schedule import default_timezone
from .store import Owners


def add_job(config: Config, user_id: str | None, data: dict) -> CronJob:
    """Create a job from its JSON fields (`name`, `prompt`, `schedule` required); omitted retries
    and timeout come from `[cron]`, the zone from settings `timezone` (else UTC)."""
    defaults = config.agent.cron
    job = store.create_job(
        data.get("name"), data.get("prompt"), store.parse_schedule(data.get("schedule")),
        user_id=user_id, tz_name=data.get("timezone") or default_timezone(config.agent.timezone),
        now=time.time(), enabled=_given(data, "enabled", True),
        delete_after_run=_given(data, "delete_after_run", False),
        max_retries=_given(data, "max_retries", defaults.default_max_retries),
        timeout_secs=_given(data, "timeout_secs", defaults.default_timeout_secs),
        session_mode=_given(data, "session_mode", "isolated"))
    wake(config.home)
    return job


def _given(data: dict, key: str, default):
    value = data.get(key)
    return default if value is None else value


def update_job(config: Config, job: CronJob, changes: dict, is_admin: bool) -> CronJob:
    changes = dict(changes)
    if changes.get("schedule") is not None:
        changes["schedule"] = store.parse_schedule(changes["schedule"])
    job = store.update_job(job, changes, time.time(), is_admin)
    wake(config.home)
    return job


def remove_job(job: CronJob) -> None:
    store.delete_job(job)


def run_job_now(config: Config, job: CronJob, note: str | None = None) -> CronRun:
    """Queue a run of `job` for the scheduler (it starts as soon as a slot is free)."""
    run = store.request_run(job, time.time(), note)
    wake(config.home)
    return run


def record_inline_run(job: CronJob) -> CronJob:
    """The CronRun tool: the model carries the prompt out in its own turn; record that as a run."""
    now = time.time()
    CronRun.create(job=job.id, status="success", requested_at=now, started_at=now, completed_at=now,
                   result_summary="Manual run triggered inline by CronRun tool")
    CronJob.update(last_run_at=now).where(CronJob.id == job.id).execute()
    return job


def find(name: str, owners: Owners) -> CronJob:
    return store.find_job(name, owners)


def heartbeat_job() -> CronJob | None:
    return CronJob.get_or_none((CronJob.name == store.HEARTBEAT) & CronJob.user_id.is_null())
