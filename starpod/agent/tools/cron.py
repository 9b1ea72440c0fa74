"""Cron tools: CronAdd, CronList, CronRemove, CronRuns, CronRun, CronUpdate and HeartbeatWake.

A caller's tools see and change only that caller's jobs; waking the (agent-level) heartbeat is
for admins.  Omitted retries/timeout use the `[cron]` defaults, and a HeartbeatWake message is
put before HEARTBEAT.md for that one run.
"""
from __future__ import annotations

import json

from ...db import database
from ...errors import StarpodError
from ...scheduler import jobs, store
from ...scheduler.store import Owners
from .registry import ToolContext, ToolError, optional_int, require_str, tool

SCHEDULE_PROPERTY = {
    "type": "object",
    "description": "{kind: 'interval', every_ms} | {kind: 'cron', expr} (5 fields, or 6 with leading seconds; "
                   "weekday 0 or 7 = Sunday, names MON-SUN) | {kind: 'one_shot', at} (RFC 3339, or naive "
                   "YYYY-MM-DDTHH:MM:SS in the job's timezone)",
    "properties": {"kind": {"type": "string", "enum": ["interval", "cron", "one_shot"]},
                   "every_ms": {"type": "integer"}, "expr": {"type": "string"}, "at": {"type": "string"}},
    "required": ["kind"],
}
JOB_PROPERTIES = {
    "prompt": {"type": "string", "description": "What to do when the job fires"},
    "schedule": SCHEDULE_PROPERTY,
    "timezone": {"type": "string", "description": "IANA zone (default: the agent's timezone, else UTC)"},
    "delete_after_run": {"type": "boolean"},
    "max_retries": {"type": "integer"},
    "timeout_secs": {"type": "integer"},
    "session_mode": {"type": "string", "enum": ["isolated", "main"]},
}
NAME = {"name": {"type": "string"}}
INT_FIELDS = ("max_retries", "timeout_secs")


def _owners(ctx: ToolContext) -> Owners:
    return Owners(ctx.user_id)


def _job_fields(args: dict) -> dict:
    data = {key: args.get(key) for key in ("name", *JOB_PROPERTIES, "enabled") if args.get(key) is not None}
    for key in INT_FIELDS:
        if key in data:
            data[key] = optional_int(args, key, 0)
    if "session_mode" in data:
        data["session_mode"] = "main" if data["session_mode"] == "main" else "isolated"
    for key in ("enabled", "delete_after_run"):
        if key in data and not isinstance(data[key], bool):
            raise ToolError(f"Field '{key}' must be a boolean")
    return data


def _message(exc: StarpodError, prefix: str) -> str:
    """The model-facing text of a store error: schedule problems say so, as in the spec."""
    field, messages = next(iter((exc.fields or {exc.message: [exc.message]}).items()))
    text = messages[0] if exc.fields else exc.message
    if field.startswith("schedule") and "in the past" not in text:
        return f"Invalid schedule: {text}"
    return text if "in the past" in text else f"{prefix}{text}"


def _call(prefix: str, action):
    with database.connection_context():
        try:
            return action()
        except StarpodError as exc:
            raise ToolError(_message(exc, prefix)) from exc


def _find(ctx: ToolContext, name: str):
    try:
        return jobs.find(name, _owners(ctx))
    except StarpodError:
        raise ToolError(f"No job found with name '{name}'") from None


@tool("CronAdd", "Schedule a prompt to run later or repeatedly (reminders, recurring checks).",
      {**NAME, **JOB_PROPERTIES}, ("name", "prompt", "schedule"))
def cron_add(ctx: ToolContext, args: dict) -> str:
    data = _job_fields(args)
    job = _call("Cron add error: ", lambda: jobs.add_job(ctx.config, ctx.user_id, data))
    return f"Scheduled job '{job.name}' (id: {job.id[:8]})"


@tool("CronList", "List your scheduled jobs with their schedules, next run and retry state.", {})
def cron_list(ctx: ToolContext, args: dict) -> str:
    listed = _call("Cron list error: ", lambda: [store.job_json(j) for j in store.list_jobs(_owners(ctx))])
    return json.dumps(listed, indent=2, ensure_ascii=False)


@tool("CronRemove", "Delete one of your scheduled jobs by name.", NAME, ("name",))
def cron_remove(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    _call("Cron remove error: Cron error: ", lambda: jobs.remove_job(jobs.find(name, _owners(ctx))))
    return f"Removed job '{name}'."


@tool("CronRuns", "Recent runs of one of your jobs, newest first.",
      {**NAME, "limit": {"type": "integer", "description": "default 10"}}, ("name",))
def cron_runs(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    limit = optional_int(args, "limit", 10, low=1, high=store.RUNS_LIMIT_MAX)

    def runs():
        return [store.run_json(run, name) for run in store.list_runs(_find(ctx, name), limit)]
    return json.dumps(_call("Cron runs error: ", runs), indent=2, ensure_ascii=False)


@tool("CronRun", "Run one of your jobs now, inline: records the run and gives you its prompt to carry out.",
      NAME, ("name",))
def cron_run(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    job = _call("Cron run error: ", lambda: jobs.record_inline_run(_find(ctx, name)))
    return f"Manual run recorded for job '{name}'. Execute the following prompt:\n\n{job.prompt}"


@tool("CronUpdate", "Change fields of one of your jobs (prompt, schedule, timezone, enabled, retries, "
      "timeout, session mode); a new schedule or re-enabling recomputes the next run.",
      {**NAME, **JOB_PROPERTIES, "enabled": {"type": "boolean"}}, ("name",))
def cron_update(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    changes = _job_fields(args)
    changes.pop("name", None)
    _call("Cron update error: ", lambda: jobs.update_job(ctx.config, _find(ctx, name), changes, ctx.is_admin))
    return f"Updated job '{name}'."


@tool("HeartbeatWake", "Run the heartbeat (HEARTBEAT.md) now ('now', optionally with a message put "
      "before it for this run) or leave it on its 30-minute schedule ('next').",
      {"mode": {"type": "string", "enum": ["now", "next"]}, "message": {"type": "string"}})
def heartbeat_wake(ctx: ToolContext, args: dict) -> str:
    if args.get("mode", "next") != "now":
        return "Heartbeat will fire on its natural schedule (every 30 minutes)."
    if not ctx.is_admin:
        raise ToolError("Only an admin can wake the heartbeat.")
    message = args.get("message")
    if message is not None and not isinstance(message, str):
        raise ToolError("Field 'message' must be a string")
    with database.connection_context():
        job = jobs.heartbeat_job()
        if job is None:
            raise ToolError("No heartbeat job found. It is created once HEARTBEAT.md has content.")
        jobs.run_job_now(ctx.config, job, message)
    return "Heartbeat will fire on the next scheduler tick."
