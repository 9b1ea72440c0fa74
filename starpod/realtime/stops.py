"""Stopping the reply a chat run is streaming, from any worker: the `stop` frame of `/ws` and
`POST /api/sessions/<id>/stop` (extensions of the spec).

A stop request is a flag on the run's row plus a ring of every doorbell (and a NOTIFY for the
workers of other servers).  The worker executing the run notices on its listener's next wake
(`apply_requests`), clears the flag and stops the stream through the stream's StopSignal.  The
stream then ends like any other, with a `stream_end` whose `errors` say it was stopped, stored as
the run's events: every follower, in any worker, live or resuming later, sees the same end.
Follow-ups sent before the stop are answered afterwards, as for a reply that ended by itself.

`running_run_of` and `request_stop` expect the caller's database connection to be open.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from ..db import database, placeholders
from ..models import ChatRun, RunEvent
from .doorbell import ring_everyone
from .runs import RUNNING, LocalRun

log = logging.getLogger(__name__)

# Runs on every wake of every worker that executes runs: plain SQL (no query building) over the
# partial index of migration 0013_run_stops, which holds only the runs with a pending request.
REQUESTS_TO_WORKER = f"SELECT id FROM {ChatRun._meta.table_name} WHERE stop_requested AND worker_id = ?"


def running_run_of(session_id: str, owner: str | None) -> str | None:
    """The running run that streams `session_id`, when `owner` (None = anyone) started it."""
    query = (RunEvent.select(RunEvent.run).join(ChatRun)
             .where((RunEvent.session_id == session_id) & (ChatRun.status == RUNNING)))
    if owner is not None:
        query = query.where(ChatRun.user_id == owner)
    return query.order_by(RunEvent.id.desc()).scalar()


def request_stop(home: Path, run_id: str, owner: str | None) -> bool:
    """Ask the worker executing `run_id` to stop the reply it streams; False when the run is not
    running (it finished meanwhile) or not `owner`'s (None = anyone's)."""
    query = ChatRun.update(stop_requested=True).where((ChatRun.id == run_id) & (ChatRun.status == RUNNING))
    if owner is not None:
        query = query.where(ChatRun.user_id == owner)
    if not query.execute():
        return False
    ring_everyone(home)  # this worker's own doorbell too: it may be the one executing the run
    return True


def apply_requests(worker_id: str, local: Mapping[str, LocalRun]) -> None:
    """Stop the streams of the runs of this worker (`worker_id`, its runs `local`) whose stop was
    requested; called on every wake of the worker's listener."""
    if not local:
        return
    with database.connection_context():
        asked = [run_id for run_id, in database.execute_sql(placeholders(REQUESTS_TO_WORKER), (worker_id,))]
        if asked:
            ChatRun.update(stop_requested=False).where(ChatRun.id.in_(asked)).execute()
    for run_id in asked:
        run = local.get(run_id)
        if run is not None:
            log.info("run %s: stopping its reply on request", run_id)
            run.stop.stop()
