"""Bodies of the `/api/cron` routes (spec memory-instances-cron.md §3, issue 11)."""
from __future__ import annotations

from marshmallow import fields, validate

from ...scheduler.schedule import KINDS
from ...scheduler.store import RUNS_LIMIT_MAX, SESSION_MODES
from ..schemas import BaseSchema, StrictInteger
from ..settings.schemas import StrictBoolean

TIMESTAMP = {"description": "RFC 3339 UTC (`Z`), or null"}


class ScheduleSchema(BaseSchema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    every_ms = StrictInteger(metadata={"description": "interval: milliseconds (≥ 1000)"})
    expr = fields.String(metadata={"description": "cron: 5 fields (Sunday = 0 or 7, names MON–SUN) "
                                                  "or 6 with leading seconds"})
    at = fields.String(metadata={"description": "one_shot: RFC 3339, or naive YYYY-MM-DDTHH:MM:SS in the "
                                                "job's timezone"})


class JobFieldsSchema(BaseSchema):
    prompt = fields.String()
    schedule = fields.Nested(ScheduleSchema)
    timezone = fields.String(metadata={"description": "IANA zone; default: settings timezone, else UTC"})
    enabled = StrictBoolean()
    delete_after_run = StrictBoolean()
    max_retries = StrictInteger(metadata={"description": "default: [cron] default_max_retries"})
    timeout_secs = StrictInteger(metadata={"description": "default: [cron] default_timeout_secs"})
    session_mode = fields.String(validate=validate.OneOf(SESSION_MODES))


class JobCreateSchema(JobFieldsSchema):
    name = fields.String(required=True)
    prompt = fields.String(required=True)
    schedule = fields.Nested(ScheduleSchema, required=True)


class JobUpdateSchema(JobFieldsSchema):
    name = fields.String(metadata={"description": "rename (unique per owner)"})


class OwnerQuerySchema(BaseSchema):
    user_id = fields.String(metadata={"description": "admins: address this user's jobs"})


class RunsQuerySchema(OwnerQuerySchema):
    limit = fields.Integer(load_default=20, metadata={"description": f"1–{RUNS_LIMIT_MAX}, default 20"})


class JobSchema(BaseSchema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    prompt = fields.String(required=True)
    schedule = fields.Nested(ScheduleSchema, required=True)
    timezone = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    delete_after_run = fields.Boolean(required=True)
    max_retries = fields.Integer(required=True)
    timeout_secs = fields.Integer(required=True)
    session_mode = fields.String(required=True)
    user_id = fields.String(required=True, allow_none=True, metadata={"description": "null = agent-level job"})
    created_at = fields.String(required=True, metadata=TIMESTAMP)
    last_run_at = fields.String(required=True, allow_none=True, metadata=TIMESTAMP)
    next_run_at = fields.String(required=True, allow_none=True, metadata=TIMESTAMP)
    retry_count = fields.Integer(required=True)
    retry_at = fields.String(required=True, allow_none=True, metadata=TIMESTAMP)
    last_error = fields.String(required=True, allow_none=True)


class RunSchema(BaseSchema):
    id = fields.String(required=True)
    job_name = fields.String(required=True)
    started_at = fields.String(required=True, allow_none=True, metadata={"description": "null while pending"})
    completed_at = fields.String(required=True, allow_none=True, metadata=TIMESTAMP)
    status = fields.String(required=True, validate=validate.OneOf(("pending", "running", "success", "failed")))
    result_summary = fields.String(required=True, allow_none=True)
    session_id = fields.String(required=True, allow_none=True)


class RunStartedSchema(BaseSchema):
    run_id = fields.String(required=True)
