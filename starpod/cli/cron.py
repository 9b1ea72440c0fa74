"""`starpod cron ...`: list, add, remove and run scheduled jobs from the shell.

The shell is the operator: without `--user` the commands address agent-level jobs (owned by no
user) and `cron list` shows every job.  `cron run` queues a run for the running server's
scheduler (it does not run the agent in this process).
"""
from __future__ import annotations

import argparse

from .common import add_command, add_group, domain_call, open_store, print_record, print_rows

JOB_COLUMNS = [("name", "NAME"), ("user_id", "USER"), ("schedule", "SCHEDULE"), ("timezone", "TZ"),
               ("enabled", "ENABLED"), ("next_run_at", "NEXT RUN"), ("last_run_at", "LAST RUN"),
               ("last_error", "LAST ERROR")]


def register(subparsers, common) -> None:
    group = add_group(subparsers, "cron", common, "Manage scheduled jobs.")
    listing = add_command(group, "list", common, list_jobs, "List jobs (every job, or one user's).")
    _user_option(listing)

    add = add_command(group, "add", common, add_job, "Add a job.",
                      'SCHEDULE is a cron expression ("0 9 * * MON-FRI"), every:<milliseconds>, '
                      'at:<RFC 3339 time> or a JSON schedule object.')
    add.add_argument("name")
    add.add_argument("schedule")
    add.add_argument("prompt")
    add.add_argument("--timezone", help="IANA zone (default: settings timezone, else UTC)")
    add.add_argument("--session-mode", choices=("isolated", "main"))
    add.add_argument("--max-retries", type=int)
    add.add_argument("--timeout-secs", type=int)
    add.add_argument("--delete-after-run", action="store_true", default=None)
    add.add_argument("--disabled", dest="enabled", action="store_false", default=None)
    _user_option(add)

    remove = add_command(group, "remove", common, remove_job, "Remove a job.")
    remove.add_argument("name")
    _user_option(remove)

    run = add_command(group, "run", common, run_job, "Queue a run of a job now (the server runs it).")
    run.add_argument("name")
    _user_option(run)


def _user_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", dest="user_id", help="the owner's user id (default: agent-level jobs)")


def _schedule_text(job: dict) -> str:
    schedule = job["schedule"]
    return str(schedule.get("expr") or schedule.get("at") or f"every {schedule.get('every_ms')} ms")


def list_jobs(args: argparse.Namespace) -> int:
    from ..scheduler.commands import cron_list

    config = open_store(args)
    jobs = domain_call(cron_list, config, args.user_id)
    if not args.json:
        jobs = [{**job, "schedule": _schedule_text(job)} for job in jobs]
    print_rows(args, JOB_COLUMNS, jobs)
    return 0


def add_job(args: argparse.Namespace) -> int:
    from ..scheduler.commands import cron_add

    config = open_store(args)
    options = {key: value for key, value in (
        ("timezone", args.timezone), ("session_mode", args.session_mode), ("max_retries", args.max_retries),
        ("timeout_secs", args.timeout_secs), ("delete_after_run", args.delete_after_run),
        ("enabled", args.enabled)) if value is not None}
    job = domain_call(cron_add, config, args.name, args.prompt, args.schedule, args.user_id, **options)
    print_record(args, job, f"Added job {job['name']}; next run {job['next_run_at'] or '-'}.")
    return 0


def remove_job(args: argparse.Namespace) -> int:
    from ..scheduler.commands import cron_remove

    config = open_store(args)
    domain_call(cron_remove, config, args.name, args.user_id)
    print_record(args, {"name": args.name, "removed": True}, f"Removed job {args.name}.")
    return 0


def run_job(args: argparse.Namespace) -> int:
    from ..scheduler.commands import cron_run

    config = open_store(args)
    started = domain_call(cron_run, config, args.name, args.user_id)
    print_record(args, started, f"Queued run {started['run_id']} of {args.name}; the server's scheduler runs it.")
    return 0
