"""`starpod cron list|add|remove|run` as plain functions for the CLI: each returns data (JSON
shapes of the REST API) or raises StarpodError.

The shell is the operator: without `user_id` the commands address agent-level jobs (owned by no
user) and `cron list` shows every job.  The database must be open (`starpod.prepare_storage`).
"""
from __future__ import annotations

import json

from ..config import Config
from ..db import database
from ..errors import BadRequest
from . import jobs, store
from .store import Owners


def _owners(user_id: str | None) -> Owners:
    return Owners(user_id)


def cron_list(config: Config, user_id: str | None = None) -> list[dict]:
    with database.connection_context():
        owners = _owners(user_id) if user_id else Owners(None, everyone=True)
        return [store.job_json(job) for job in store.list_jobs(owners)]


def parse_schedule_arg(text: str) -> dict:
    """A schedule from the command line: JSON (`{"kind": ...}`), `every:<ms>`, `at:<timestamp>`
    or a cron expression."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"schedule: invalid JSON: {exc}", fields={"schedule": [str(exc)]}) from None
    if text.startswith("every:"):
        every = text.removeprefix("every:")
        if not every.isdigit():
            raise BadRequest("schedule: every:<milliseconds> expects an integer", fields={"schedule": ["not an integer"]})
        return {"kind": "interval", "every_ms": int(every)}
    if text.startswith("at:"):
        return {"kind": "one_shot", "at": text.removeprefix("at:")}
    return {"kind": "cron", "expr": text}


def cron_add(config: Config, name: str, prompt: str, schedule: str, user_id: str | None = None,
             **options) -> dict:
    """Add a job; `options` are the optional job fields (timezone, enabled, delete_after_run,
    max_retries, timeout_secs, session_mode)."""
    data = {**options, "name": name, "prompt": prompt, "schedule": parse_schedule_arg(schedule)}
    with database.connection_context():
        return store.job_json(jobs.add_job(config, user_id, data))


def cron_remove(config: Config, name: str, user_id: str | None = None) -> None:
    with database.connection_context():
        jobs.remove_job(jobs.find(name, _owners(user_id)))


def cron_run(config: Config, name: str, user_id: str | None = None) -> dict:
    """Queue a run for the running server's scheduler; returns `{"run_id": ...}`."""
    with database.connection_context():
        return {"run_id": jobs.run_job_now(config, jobs.find(name, _owners(user_id))).id}
