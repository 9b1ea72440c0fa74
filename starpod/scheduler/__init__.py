"""The cron scheduler: jobs, schedules, the leader-elected engine, lifecycle prompts and tools.

`start_scheduler(config)` starts this process's scheduler candidate in a greenlet (gunicorn's
`post_worker_init` calls it in every worker); `stop_scheduler()` hands the lease over at exit.
"""
from __future__ import annotations

import functools

import gevent

from ..config import Config
from .engine import Scheduler, wake

_running: list[Scheduler] = []


def start_scheduler(config: Config) -> Scheduler:
    """Run a scheduler candidate for `config`'s data directory in this process (a greenlet)."""
    from .execute import run_job
    from .lifecycle import boot_id, run_start_prompts

    scheduler = Scheduler(config, functools.partial(run_job, config))
    start_id = boot_id()
    scheduler.on_lead.append(lambda: run_start_prompts(config, start_id))
    _running.append(scheduler)
    gevent.spawn(scheduler.run_forever)
    return scheduler


def stop_scheduler() -> None:
    """Give up leadership at once so another worker takes over without waiting for expiry."""
    while _running:
        _running.pop().stop()


__all__ = ["Scheduler", "start_scheduler", "stop_scheduler", "wake"]
