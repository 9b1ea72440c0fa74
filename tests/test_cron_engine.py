"""The scheduler engine in-process, with a clock the tests move and a recording executor: firing,
catch-up, retries and backoff, timeouts, slots, one-shots, manual runs, racing candidates,
orphaned runs, the heartbeat job and once-per-start BOOT prompts."""
from __future__ import annotations

import threading
import time

import gevent
import pytest

from starpod import prepare_storage
from starpod.db import database
from starpod.errors import BadRequest, Conflict, NotFound
from starpod.models import CronJob, CronRun, Notification
from starpod.scheduler import engine, jobs, store
from starpod.scheduler.engine import EventWaker, JobFailed, Scheduler
from starpod.scheduler.lifecycle import claim_boot, ensure_heartbeat
from starpod.scheduler.store import Owners

from .conftest import make_config

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Clock:
    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """An executor that records each job it runs and fails while `failures` lasts."""

    def __init__(self, failures: int = 0, sleep: float = 0.0):
        self.calls: list = []
        self.failures = failures
        self.sleep = sleep

    def __call__(self, job):
        self.calls.append(job)
        if self.sleep:
            gevent.sleep(self.sleep)
        if self.failures:
            self.failures -= 1
            raise JobFailed("provider exploded")
        return f"session-{len(self.calls)}", f"done {job.name}"


@pytest.fixture
def config(home):
    config = make_config(home)
    prepare_storage(config)
    database.connect(reuse_if_open=True)
    yield config
    database.close_all()


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(jobs.time, "time", clock)  # jobs created "now" on the moved clock
    return clock


def scheduler(config, clock, executor, holder=None) -> Scheduler:
    return Scheduler(config, executor, clock=clock, waker=EventWaker(), holder=holder)


def run_tick(sched: Scheduler) -> int:
    started = sched.tick()
    gevent.joinall(started, timeout=60, raise_error=True)
    return len(started)


def add(config, name="job", schedule=None, user_id="u1", **fields):
    data = {"name": name, "prompt": f"do {name}", "schedule": schedule or {"kind": "interval", "every_ms": 60_000},
            **fields}
    return jobs.add_job(config, user_id, data)


def reload(job) -> CronJob | None:
    return CronJob.get_or_none(CronJob.id == job.id)


def set_cron_config(config, **values) -> None:
    lines = "\n".join(f"{key} = {value}" for key, value in values.items())
    config.agent_toml_path.write_text(f"[cron]\n{lines}\n")
    config.live_agent.reload()


# --- store ---------------------------------------------------------------------------------

def test_store_defaults_come_from_cron_settings(config, clock):
    set_cron_config(config, default_max_retries=5, default_timeout_secs=90)
    job = add(config)
    assert (job.max_retries, job.timeout_secs, job.session_mode, job.enabled) == (5, 90, "isolated", True)
    assert job.next_run_at == START + 60
    explicit = add(config, "explicit", max_retries=0, timeout_secs=10, session_mode="main")
    assert (explicit.max_retries, explicit.timeout_secs, explicit.session_mode) == (0, 10, "main")


def test_store_names_are_unique_per_owner_and_private(config, clock):
    add(config, "daily", user_id="u1")
    add(config, "daily", user_id="u2")
    with pytest.raises(Conflict):
        add(config, "daily", user_id="u1")
    assert store.find_job("daily", Owners("u2")).user_id == "u2"
    with pytest.raises(NotFound):
        store.find_job("daily", Owners("u3"))
    assert [j.user_id for j in store.list_jobs(Owners("u1"))] == ["u1"]
    assert len(store.list_jobs(Owners(None, everyone=True))) == 2


def test_store_update_is_partial_and_verbatim(config, clock):
    job = add(config)
    hostile = "'; DROP TABLE cron_jobs; -- \"quoted\""
    job = jobs.update_job(config, job, {"prompt": hostile}, False)
    assert reload(job).prompt == hostile and reload(job).next_run_at == START + 60
    jobs.update_job(config, job, {}, False)
    assert reload(job).prompt == hostile
    job = jobs.update_job(config, job, {"enabled": False}, False)
    assert reload(job).next_run_at is None
    clock.advance(1000)
    job = jobs.update_job(config, job, {"enabled": True}, False)  # enabling recomputes
    assert reload(job).next_run_at == START + 1060
    job = jobs.update_job(config, job, {"schedule": {"kind": "cron", "expr": "0 9 * * *"}}, False)
    assert store.job_json(reload(job))["next_run_at"] == "2027-01-15T09:00:00Z"
    with pytest.raises(BadRequest) as error:
        jobs.update_job(config, job, {"timezone": "Nowhere/Land"}, False)
    assert "timezone" in error.value.fields


def test_backoff_delays():
    assert [store.backoff_secs(n) for n in range(7)] == [30, 60, 300, 900, 3600, 3600, 3600]


# --- firing ----------------------------------------------------------------------------------

def test_due_job_fires_once_then_follows_its_schedule(config, clock):
    job, recorder = add(config), Recorder()
    sched = scheduler(config, clock, recorder)
    assert run_tick(sched) == 0  # not due yet
    clock.advance(60)
    assert run_tick(sched) == 1
    assert run_tick(sched) == 0  # the occurrence is consumed
    runs = store.list_runs(reload(job), 10)
    assert [(r.status, r.session_id, r.result_summary) for r in runs] == [("success", "session-1", "done job")]
    assert reload(job).next_run_at == START + 120 and reload(job).last_run_at == START + 60
    assert recorder.calls[0].prompt == "do job" and recorder.calls[0].user_id == "u1"


def test_catch_up_after_downtime_runs_once(config, clock):
    job, recorder = add(config, schedule={"kind": "cron", "expr": "* * * * *"}), Recorder()
    sched = scheduler(config, clock, recorder)
    clock.advance(5 * 3600)  # the server was down for 300 occurrences
    assert run_tick(sched) == 1
    assert run_tick(sched) == 0
    assert len(recorder.calls) == 1
    assert START + 5 * 3600 < reload(job).next_run_at <= START + 5 * 3600 + 60


def test_failures_retry_with_backoff_then_fail_permanently(config, clock):
    job, recorder = add(config, max_retries=2), Recorder(failures=10)
    sched = scheduler(config, clock, recorder)
    clock.advance(60)
    run_tick(sched)
    job = reload(job)
    assert (job.retry_count, job.retry_at, job.last_error) == (1, clock.now + 30, "provider exploded")
    assert job.next_run_at == clock.now + 60  # the regular schedule goes on
    clock.advance(29)
    assert run_tick(sched) == 0
    clock.advance(1)
    assert run_tick(sched) == 1
    job = reload(job)
    assert (job.retry_count, job.retry_at) == (2, clock.now + 60)
    clock.advance(60)  # the retry and the next regular occurrence are both due
    assert run_tick(sched) == 1  # one slot: the regular occurrence first
    job = reload(job)
    assert job.retry_at is None and job.retry_count == 2 and job.last_error == "provider exploded"
    assert [r.status for r in store.list_runs(job, 10)] == ["failed"] * 3
    frames = list(Notification.select().where(Notification.user_id == "u1"))
    assert len(frames) == 3 and all('"success":false' in n.frame for n in frames)


def test_success_resets_retry_state(config, clock):
    job, recorder = add(config, max_retries=3), Recorder(failures=1)
    sched = scheduler(config, clock, recorder)
    clock.advance(60)
    run_tick(sched)
    clock.advance(30)
    run_tick(sched)
    job = reload(job)
    assert (job.retry_count, job.retry_at, job.last_error) == (0, None, None)


def swallowing_executor(job):
    """Like the chat pipeline, catches every Exception: the timeout must still end it."""
    try:
        gevent.sleep(120)
    except Exception:
        return "s", "swallowed"
    return "s", "finished"


def test_timeout_cancels_the_run_and_marks_it_failed(config, clock):
    job = add(config, timeout_secs=1, max_retries=0)
    sched = scheduler(config, clock, swallowing_executor)
    clock.advance(60)
    run_tick(sched)  # returns once the 1 s timeout cancelled the 120 s execution
    run = store.list_runs(reload(job), 1)[0]
    assert run.status == "failed" and run.result_summary == "Timed out after 1 s"
    assert reload(job).last_error == "Timed out after 1 s"


def test_slots_follow_max_concurrent_runs_live(config, clock):
    for index in range(3):
        add(config, f"job{index}")
    sched = scheduler(config, clock, Recorder(sleep=0.2))
    clock.advance(60)
    assert run_tick(sched) == 1
    set_cron_config(config, max_concurrent_runs=5)
    assert run_tick(sched) == 2


def test_one_shots_are_disabled_or_deleted_after_running(config, clock):
    shot = {"kind": "one_shot", "at": "2027-01-15T09:00:00Z"}
    kept, dropped = add(config, "kept", shot), add(config, "dropped", shot, delete_after_run=True)
    sched = scheduler(config, clock, Recorder())
    sched_config_slots = 5
    set_cron_config(config, max_concurrent_runs=sched_config_slots)
    clock.advance(3600)
    assert run_tick(sched) == 2
    assert reload(dropped) is None
    kept = reload(kept)
    assert kept.enabled is False and kept.next_run_at is None and kept.last_run_at == clock.now


def test_manual_run_goes_through_the_scheduler_without_moving_the_schedule(config, clock):
    job, recorder = add(config), Recorder()
    sched = scheduler(config, clock, recorder)
    run = jobs.run_job_now(config, job, note="extra context")
    assert CronRun.get_by_id(run.id).status == "pending"
    assert run_tick(sched) == 1
    assert CronRun.get_by_id(run.id).status == "success"
    assert reload(job).next_run_at == START + 60
    assert recorder.calls[0].note == "extra context"


def test_two_candidates_racing_fire_each_occurrence_once(config, clock):
    set_cron_config(config, max_concurrent_runs=500)
    for index in range(100):
        add(config, f"job{index:03}")
    recorder = Recorder(sleep=0.001)
    first, second = scheduler(config, clock, recorder, "a"), scheduler(config, clock, recorder, "b")
    clock.advance(60)
    ticks = [gevent.spawn(run_tick, s) for s in (first, second, first, second)]
    gevent.joinall(ticks, timeout=120, raise_error=True)
    names = [job.name for job in recorder.calls]
    assert len(names) == 100 and len(set(names)) == 100
    assert CronRun.select().count() == 100


def test_claims_are_compare_and_set(config, clock):
    created = [add(config, f"job{index:02}") for index in range(20)]
    clock.advance(60)
    first, second = scheduler(config, clock, Recorder(), "a"), scheduler(config, clock, Recorder(), "b")
    # Both read the same due instant (a stale read by the slower one): only one claim wins.
    wins = [candidate._claim_occurrence(job.id, CronJob.next_run_at, START + 60, clock.now)
            for job in created for candidate in (first, second)]
    assert sum(win is not None for win in wins) == 20
    assert CronRun.select().count() == 20


def test_two_candidates_in_threads_race_over_due_jobs(config, clock):
    """Real concurrency: two OS threads with their own connections tick over the same due jobs."""
    set_cron_config(config, max_concurrent_runs=500)
    for index in range(100):
        add(config, f"job{index:03}")
    clock.advance(60)
    recorder = Recorder()
    candidates = [scheduler(config, clock, recorder, holder) for holder in ("a", "b")]

    def race(candidate):
        with database.connection_context():
            for _ in range(5):
                run_tick(candidate)

    threads = [threading.Thread(target=race, args=(c,)) for c in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    names = [job.name for job in recorder.calls]
    assert len(names) == 100 and len(set(names)) == 100


def test_only_the_lease_holder_leads_and_a_successor_takes_over(config):
    set_cron_config(config, max_concurrent_runs=50)
    recorder = Recorder()
    first, second = (Scheduler(config, recorder, waker=EventWaker(), holder=h) for h in ("first", "second"))
    greenlets = [gevent.spawn(s.run_forever) for s in (first, second)]
    try:
        for index in range(20):
            add(config, f"job{index:02}", {"kind": "interval", "every_ms": 1000})
        wait_until(lambda: len({c.name for c in recorder.calls}) == 20)
        assert first.leading != second.leading
        leader, other = (first, second) if first.leading else (second, first)
        assert {r.holder for r in CronRun.select()} == {leader.holder}
        leader.stop()
        gevent.kill(greenlets[0 if leader is first else 1])
        before = CronRun.select().count()
        wait_until(lambda: other.leading and CronRun.select().where(CronRun.holder == other.holder).count() > 0)
        assert CronRun.select().count() > before
    finally:
        gevent.killall(greenlets)


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        gevent.sleep(0.05)


def test_runs_orphaned_by_a_dead_leader_fail_and_the_job_goes_on(config, clock):
    job = add(config, max_retries=0)
    CronJob.update(next_run_at=None).where(CronJob.id == job.id).execute()
    orphan = CronRun.create(job=job.id, status="running", requested_at=START, started_at=START, due_at=START,
                            holder="dead-worker")
    sched = scheduler(config, clock, Recorder())
    sched.step()
    assert CronRun.get_by_id(orphan.id).status == "failed"
    assert CronRun.get_by_id(orphan.id).result_summary == engine.INTERRUPTED
    assert reload(job).next_run_at == START + 60


def test_a_run_is_concluded_once(config, clock):
    job = add(config)
    sched = scheduler(config, clock, Recorder())
    clock.advance(60)
    run_id = sched._claim_occurrence(job.id, CronJob.next_run_at, START + 60, clock.now)
    sched.complete(job.id, run_id, "due", False, "", engine.INTERRUPTED)  # concluded as an orphan
    sched.complete(job.id, run_id, "due", True, "s1", "late success")      # the original finishing
    assert CronRun.get_by_id(run_id).status == "failed"
    assert Notification.select().count() == 1 and reload(job).retry_count == 1


# --- heartbeat and start-up prompts ----------------------------------------------------------

def test_heartbeat_job_is_created_from_heartbeat_md_and_protected(config, clock):
    ensure_heartbeat(config, clock.now)
    assert jobs.heartbeat_job() is None  # blank HEARTBEAT.md: no job
    (config.config_dir / "HEARTBEAT.md").write_text("Check the inbox.")
    ensure_heartbeat(config, clock.now)
    ensure_heartbeat(config, clock.now)
    heartbeat = jobs.heartbeat_job()
    assert heartbeat.user_id is None and heartbeat.session_mode == "main"
    assert store.job_json(heartbeat)["next_run_at"] == "2027-01-15T08:30:00Z"
    with pytest.raises(BadRequest):
        store.delete_job(heartbeat)
    with pytest.raises(BadRequest):
        jobs.update_job(config, heartbeat, {"enabled": False}, False)  # users cannot touch it
    with pytest.raises(BadRequest):
        jobs.update_job(config, heartbeat, {"prompt": "x"}, True)
    assert jobs.update_job(config, heartbeat, {"enabled": False}, True).enabled is False
    with pytest.raises(BadRequest):
        add(config, store.HEARTBEAT)


def test_start_prompts_are_claimed_once_per_start(config):
    assert claim_boot("start-1") is True
    assert claim_boot("start-1") is False
    assert claim_boot("start-2") is True
