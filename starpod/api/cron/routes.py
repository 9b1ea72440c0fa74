"""`/api/cron/jobs[/<name>[/runs|/run]]`.  A user addresses only their own jobs (another user's
job is 404); admins also reach agent-level jobs (`__heartbeat__`) and, with `?user_id=`, any
user's."""
from __future__ import annotations

from flask import current_app

from ...scheduler import jobs, store
from ...scheduler.store import Owners
from ..guards import caller_is_admin, current_user_id, require_user
from ..parsing import Blueprint
from .schemas import (JobCreateSchema, JobSchema, JobUpdateSchema, OwnerQuerySchema, RunSchema, RunsQuerySchema,
                      RunStartedSchema)

blp = Blueprint("cron", __name__, url_prefix="/api/cron", description="Scheduled agent jobs and their runs")

AUTH_DISABLED_USER = "admin"  # the single operator of a server without users, as in chat


def _config():
    return current_app.config["STARPOD"]


def _user() -> str:
    return current_user_id(AUTH_DISABLED_USER)


def _owners(query: dict) -> Owners:
    return Owners.for_caller(_user(), caller_is_admin(), query.get("user_id"))


def _job(name: str, query: dict):
    return jobs.find(name, _owners(query))


@blp.route("/jobs", methods=["GET"])
@require_user
@blp.arguments(OwnerQuerySchema, location="query")
@blp.response(200, JobSchema(many=True))
def list_jobs(query):
    """Users: their jobs.  Admins: every job, or one user's with `?user_id=`."""
    owners = _owners(query)
    if caller_is_admin() and not query.get("user_id"):
        owners = Owners(None, everyone=True)
    return [store.job_json(job) for job in store.list_jobs(owners)]


@blp.route("/jobs", methods=["POST"])
@require_user
@blp.arguments(JobCreateSchema)
@blp.response(201, JobSchema)
@blp.alt_response(400, description="Invalid schedule, timezone, name or limits, or a one-shot in the past")
@blp.alt_response(409, description="The caller already has a job with this name")
def create_job(body):
    """Schedule a prompt for the caller; omitted retries/timeout come from `[cron]`."""
    return store.job_json(jobs.add_job(_config(), _user(), body))


@blp.route("/jobs/<name>", methods=["GET"])
@require_user
@blp.arguments(OwnerQuerySchema, location="query")
@blp.response(200, JobSchema)
@blp.alt_response(404, description="No such job of the caller")
def get_job(query, name):
    return store.job_json(_job(name, query))


@blp.route("/jobs/<name>", methods=["PUT"])
@require_user
@blp.arguments(OwnerQuerySchema, location="query")
@blp.arguments(JobUpdateSchema)
@blp.response(200, JobSchema)
@blp.alt_response(400, description="Invalid value, or a change to the heartbeat other than enabled")
@blp.alt_response(404, description="No such job of the caller")
@blp.alt_response(409, description="Renamed to a name the owner already uses")
def update_job(query, body, name):
    """Partial update; a new schedule or zone, or enabling, recomputes the next run."""
    return store.job_json(jobs.update_job(_config(), _job(name, query), body, caller_is_admin()))


@blp.route("/jobs/<name>", methods=["DELETE"])
@require_user
@blp.arguments(OwnerQuerySchema, location="query")
@blp.response(204)
@blp.alt_response(400, description="The heartbeat cannot be deleted (disable it instead)")
@blp.alt_response(404, description="No such job of the caller")
def delete_job(query, name):
    jobs.remove_job(_job(name, query))


@blp.route("/jobs/<name>/runs", methods=["GET"])
@require_user
@blp.arguments(RunsQuerySchema, location="query")
@blp.response(200, RunSchema(many=True))
@blp.alt_response(400, description="limit out of range")
@blp.alt_response(404, description="No such job of the caller")
def list_runs(query, name):
    """The job's runs, newest first."""
    job = _job(name, query)
    return [store.run_json(run, job.name) for run in store.list_runs(job, query["limit"])]


@blp.route("/jobs/<name>/run", methods=["POST"])
@require_user
@blp.arguments(OwnerQuerySchema, location="query")
@blp.response(202, RunStartedSchema)
@blp.alt_response(404, description="No such job of the caller")
def run_job(query, name):
    """Run the job now through the scheduler (it waits for a free `max_concurrent_runs` slot)."""
    return {"run_id": jobs.run_job_now(_config(), _job(name, query)).id}
