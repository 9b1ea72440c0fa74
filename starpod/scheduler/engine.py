"""The scheduler: one leader across every worker and server fires each due occurrence once.

Every worker runs a candidate (`Scheduler.run_forever` in a greenlet).  The one holding the
database lease `scheduler` is the leader; the others retry the lease every couple of seconds and
take over within ~`LEASE_TTL` when the leader dies.  The leader sleeps until the earliest due
instant (or its lease renewal), and is woken early by a ring of the scheduler doorbells
(`wake(home)`, called whenever a job is created, changed or run by hand).

Exactly once does not rest on the lease alone: an occurrence is claimed by a compare-and-set of
the very `next_run_at` / `retry_at` / run status the leader read, so even two leaders (a stalled
holder whose lease expired) cannot both fire it.  Runs execute in greenlets, at most
`[cron] max_concurrent_runs` at a time, each cancelled after its job's `timeout_secs`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import gevent
from gevent.event import Event
from peewee import PeeweeException

from .. import leases
from ..config import Config
from ..db import database, write_transaction
from ..models import CronJob, CronRun
from ..notify import notify
from ..realtime.doorbell import Doorbell, ring, run_dir
from . import store
from .lifecycle import ensure_heartbeat

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
LEASE_TTL = 10.0          # a dead leader is replaced within this plus CANDIDATE_RETRY_SECS
RENEW_SECS = 3.0          # the leader renews (and polls the database) at least this often
CANDIDATE_RETRY_SECS = 2.0
HEARTBEAT_CHECK_SECS = 30.0
INTERRUPTED = "Interrupted: the scheduler running it stopped"


class JobFailed(Exception):
    """An execution that ended in an error (its message is the run's summary)."""


@dataclass(frozen=True)
class JobContext:
    """What an executor needs to run one job."""
    name: str
    prompt: str
    session_mode: str
    user_id: str | None
    note: str | None = None

    @property
    def is_heartbeat(self) -> bool:
        return self.name == store.HEARTBEAT and self.user_id is None


Executor = Callable[[JobContext], "tuple[str, str]"]  # → (session_id, result summary); raises on failure


class Waker(Protocol):
    def wait(self, timeout: float) -> bool: ...
    def ring(self) -> None: ...


def bell_dir(home: Path) -> Path:
    return run_dir(home) / "scheduler"


def wake(home: Path) -> None:
    """Wake the scheduler of every worker on this machine (others notice within RENEW_SECS)."""
    ring(bell_dir(home))


class BellWaker:
    """Wakes on a ring of this process's scheduler doorbell (from any process on this machine)."""

    def __init__(self, directory: Path):
        self.doorbell = Doorbell(directory)

    def wait(self, timeout: float) -> bool:
        if timeout <= 0:  # work is due already (a zero socket timeout would mean non-blocking)
            return False
        return self.doorbell.wait(timeout)

    def ring(self) -> None:
        ring(self.doorbell.directory, peers=[self.doorbell.path])


class EventWaker:
    """An in-process waker (tests, single-process use)."""

    def __init__(self):
        self.event = Event()

    def wait(self, timeout: float) -> bool:
        rung = self.event.wait(timeout)
        self.event.clear()
        return bool(rung)

    def ring(self) -> None:
        self.event.set()


class Scheduler:
    def __init__(self, config: Config, executor: Executor, clock: Callable[[], float] = time.time,
                 waker: Waker | None = None, holder: str | None = None):
        self.config = config
        self.executor = executor
        self.clock = clock
        self.waker = waker or BellWaker(bell_dir(config.home))
        self.holder = holder or leases.new_holder_id()
        self.leading = False
        self.active: set[gevent.Greenlet] = set()
        self.on_lead: list[Callable[[], None]] = []
        self._heartbeat_checked = float("-inf")
        self._stopped = False

    # --- leadership ------------------------------------------------------------------------

    def run_forever(self) -> None:
        while not self._stopped:
            try:
                timeout = self.step()
            except PeeweeException:
                log.warning("scheduler step failed; retrying", exc_info=True)
                timeout = CANDIDATE_RETRY_SECS
            except Exception:  # the scheduler must outlive any bug in one step
                log.exception("scheduler step crashed; retrying")
                timeout = CANDIDATE_RETRY_SECS
            if self.leading:
                self.waker.wait(timeout)
            else:
                gevent.sleep(timeout)  # rings are for the leader; candidates only retry the lease

    def step(self) -> float:
        """Take or renew the lease and, as leader, fire what is due; returns seconds to sleep."""
        was_leading = self.leading
        self.leading = leases.acquire(LEASE_NAME, self.holder, LEASE_TTL)
        if not self.leading:
            if was_leading:
                log.warning("scheduler %s lost its lease", self.holder)
            return CANDIDATE_RETRY_SECS
        if not was_leading:
            log.info("scheduler %s leads", self.holder)
            self.recover_orphans()
            for hook in self.on_lead:
                gevent.spawn(hook)
        self.tick()
        return min(RENEW_SECS, max(0.0, self.seconds_to_next_due()))

    def stop(self) -> None:
        """Stop leading (at once, so a successor need not wait for expiry); runs keep going."""
        self._stopped = True
        if self.leading:
            with database.connection_context():
                leases.release(LEASE_NAME, self.holder)
            self.leading = False

    # --- firing ----------------------------------------------------------------------------

    def tick(self) -> list[gevent.Greenlet]:
        """Start what is pending, due or up for retry, within the free slots."""
        now = self.clock()
        if now - self._heartbeat_checked >= HEARTBEAT_CHECK_SECS:
            self._heartbeat_checked = now
            ensure_heartbeat(self.config, now)
        started = []
        for claim in (self._claim_pending, self._claim_due, self._claim_retry):
            started += claim(now)
        return started

    def _slots(self) -> int:
        return max(0, self.config.agent.cron.max_concurrent_runs - len(self.active))

    def _claim_pending(self, now: float) -> list[gevent.Greenlet]:
        started = []
        with database.connection_context():
            pending = list(CronRun.select().where(CronRun.status == "pending")
                           .order_by(CronRun.requested_at).limit(self._slots()))
        for run in pending:
            with database.connection_context(), write_transaction(f"cron_run:{run.id}"):
                claimed = (CronRun.update(status="running", started_at=now, holder=self.holder)
                           .where((CronRun.id == run.id) & (CronRun.status == "pending")).execute())
                if claimed:
                    CronJob.update(last_run_at=now).where(CronJob.id == run.job_id).execute()
            if claimed:
                started.append(self._spawn(run.job_id, run.id, "manual", run.note))
        return started

    def _claim_due(self, now: float) -> list[gevent.Greenlet]:
        due = (CronJob.enabled == True) & CronJob.next_run_at.is_null(False) & (CronJob.next_run_at <= now)  # noqa: E712
        return self._claim_jobs(now, due, CronJob.next_run_at, "due")

    def _claim_retry(self, now: float) -> list[gevent.Greenlet]:
        up = (CronJob.enabled == True) & CronJob.retry_at.is_null(False) & (CronJob.retry_at <= now)  # noqa: E712
        return self._claim_jobs(now, up, CronJob.retry_at, "retry")

    def _claim_jobs(self, now: float, condition, instant_field, kind: str) -> list[gevent.Greenlet]:
        started = []
        with database.connection_context():
            jobs = list(CronJob.select(CronJob.id, instant_field).where(condition)
                        .order_by(instant_field).limit(self._slots()).tuples())
        for job_id, instant in jobs:
            run_id = self._claim_occurrence(job_id, instant_field, instant, now)
            if run_id is not None:
                started.append(self._spawn(job_id, run_id, kind, None))
        return started

    def _claim_occurrence(self, job_id: str, instant_field, instant: float, now: float) -> str | None:
        """Clear the instant we read (only if it is still that value) and record a running run."""
        with database.connection_context(), write_transaction(f"cron_job:{job_id}"):
            claimed = (CronJob.update({instant_field: None, CronJob.last_run_at: now})
                       .where((CronJob.id == job_id) & (instant_field == instant)).execute())
            if not claimed:
                return None
            return CronRun.create(job=job_id, status="running", requested_at=now, started_at=now,
                                  due_at=instant, holder=self.holder).id

    def _spawn(self, job_id: str, run_id: str, kind: str, note: str | None) -> gevent.Greenlet:
        greenlet = gevent.spawn(self._execute, job_id, run_id, kind, note)
        self.active.add(greenlet)
        greenlet.link(lambda g: self.active.discard(g))
        return greenlet

    def seconds_to_next_due(self) -> float:
        if self._slots() == 0:
            return RENEW_SECS
        with database.connection_context():
            pending = CronRun.select().where(CronRun.status == "pending").exists()
            candidates = [CronJob.select(CronJob.next_run_at).where(CronJob.enabled == True)  # noqa: E712
                          .order_by(CronJob.next_run_at.asc(nulls="LAST")).limit(1).scalar(),
                          CronJob.select(CronJob.retry_at).where(CronJob.enabled == True)  # noqa: E712
                          .order_by(CronJob.retry_at.asc(nulls="LAST")).limit(1).scalar()]
        if pending:
            return 0.0
        instants = [c for c in candidates if c is not None]
        return min(instants) - self.clock() if instants else RENEW_SECS

    # --- executing -------------------------------------------------------------------------

    def _execute(self, job_id: str, run_id: str, kind: str, note: str | None) -> None:
        with database.connection_context():
            job = CronJob.get_or_none(CronJob.id == job_id)
        if job is None:
            return self._finish_run(run_id, False, "", "Job was deleted")
        context = JobContext(job.name, job.prompt, job.session_mode, job.user_id, note)
        # A gevent.Timeout is a BaseException: code in the run that catches Exception cannot swallow it.
        timer = gevent.Timeout(job.timeout_secs)
        timer.start()
        try:
            session_id, summary = self.executor(context)
            success = True
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            session_id, summary, success = "", f"Timed out after {job.timeout_secs} s", False
        except Exception as exc:  # any failure of a run is recorded, never fatal to the scheduler
            if not isinstance(exc, JobFailed):
                log.exception("cron job %s failed", job.name)
            session_id, summary, success = "", str(exc) or type(exc).__name__, False
        finally:
            timer.close()
        self.active.discard(gevent.getcurrent())  # the slot is free before the waker rings
        self.complete(job_id, run_id, kind, success, session_id, summary)

    def _finish_run(self, run_id: str, success: bool, session_id: str, summary: str) -> bool:
        """Conclude a running run; False when it was concluded already (e.g. as an orphan)."""
        with database.connection_context():
            return bool(CronRun.update(status="success" if success else "failed", completed_at=self.clock(),
                                       result_summary=summary, session_id=session_id or None)
                        .where((CronRun.id == run_id) & (CronRun.status == "running")).execute())

    def complete(self, job_id: str, run_id: str, kind: str, success: bool, session_id: str, summary: str) -> None:
        """Record the outcome, apply retries and the next occurrence, then notify the owner."""
        now = self.clock()
        if not self._finish_run(run_id, success, session_id, summary):
            return
        with database.connection_context(), write_transaction(f"cron_job:{job_id}"):
            job = CronJob.get_or_none(CronJob.id == job_id)
            if job is None:
                return
            if kind != "manual":
                self._after_occurrence(job, kind, success, summary, now)
        notify(job.name, session_id if success else "", summary, success, config=self.config,
               user_id=job.user_id)
        self.waker.ring()  # a slot is free: look for work that waited for one

    def _after_occurrence(self, job: CronJob, kind: str, success: bool, error: str, now: float) -> None:
        if success:
            job.retry_count, job.retry_at, job.last_error = 0, None, None
        elif job.retry_count < job.max_retries:
            job.retry_at = now + store.backoff_secs(job.retry_count)
            job.retry_count, job.last_error = job.retry_count + 1, error
        else:
            job.retry_at, job.last_error = None, error
        if kind == "due" and job.next_run_at is None and job.enabled:
            job.next_run_at = store.reschedule_after(job, now, ran=True)
        if job.retry_at is None and job.next_run_at is None:
            if job.delete_after_run:
                job.delete_instance()
                return
            job.enabled = False  # nothing left to do: a one-shot that ran, or an unusable schedule
        job.save()

    def recover_orphans(self) -> None:
        """Runs left `running` by a scheduler that is gone fail, and their jobs go on as after any failure."""
        with database.connection_context():
            orphans = list(CronRun.select().where((CronRun.status == "running") & (CronRun.holder != self.holder)))
        for run in orphans:
            self.complete(run.job_id, run.id, "manual" if run.due_at is None else "due", False, "", INTERRUPTED)
