"""The batch writer of run events (realtime/runs.py): every frame stored once, in order, even when
the database refuses a batch (it is stored by a retry on a connection of its own)."""
from __future__ import annotations

import gevent
import pytest
from gevent.event import Event
from peewee import OperationalError

from starpod.db import database, is_postgresql, placeholders
from starpod.models import ChatRun, RunEvent
from starpod.realtime.doorbell import Doorbell
from starpod.realtime.runs import FINISHED, FORGET_OLDER_RUNS, RUNNING, RunManager


@pytest.fixture
def runs(app, config, tmp_path):
    with database.connection_context():
        ChatRun.create(id="run-1", user_id="admin", worker_id="test")
    manager = RunManager(config, Doorbell(tmp_path / "bells"), Event)
    yield manager
    manager._writer.kill()


def stored_seqs() -> list[int]:
    with database.connection_context():
        return [row.seq for row in RunEvent.select(RunEvent.seq).where(RunEvent.run == "run-1").order_by(RunEvent.seq)]


def queue_events(runs: RunManager, seqs: range) -> None:
    for seq in seqs:
        runs._queue(("event", ("run-1", seq, None, f'{{"type":"text_delta","seq":{seq},"text":"x"}}'), None))


def test_batches_that_follow_each_other_are_all_stored_in_order(runs):
    with gevent.Timeout(30):
        for first in range(1, 100, 10):
            queue_events(runs, range(first, first + 10))
            gevent.sleep(0)  # the writer takes what is there, then the next batch
        runs.sync()
    assert stored_seqs() == list(range(1, 101))


def test_a_batch_the_database_refused_is_stored_by_a_retry(runs, monkeypatch):
    refusals = iter([OperationalError("database is locked")])
    apply = RunManager._apply

    def refusing_once(self, ops):
        refusal = next(refusals, None)
        if refusal is not None:
            raise refusal
        return apply(self, ops)

    monkeypatch.setattr(RunManager, "_apply", refusing_once)
    with gevent.Timeout(30):
        queue_events(runs, range(1, 6))
        runs.sync()
        queue_events(runs, range(6, 9))  # the writer goes on with the next batches
        runs.sync()
    assert stored_seqs() == list(range(1, 9))
    assert next(refusals, None) is None


def test_a_new_stream_of_a_session_forgets_its_finished_older_runs_only(runs):
    with database.connection_context():
        for run_id, status in (("older", FINISHED), ("other-session", FINISHED), ("still-running", RUNNING)):
            ChatRun.create(id=run_id, user_id="admin", worker_id="test", status=status)
    stream_start = '{"type":"stream_start","seq":1,"session_id":"%s"}'
    with gevent.Timeout(30):
        for run_id, session_id in (("older", "s1"), ("other-session", "s2"), ("still-running", "s1")):
            runs._queue(("event", (run_id, 1, session_id, stream_start % session_id), None))
        runs.sync()
        runs._queue(("event", ("run-1", 1, "s1", stream_start % "s1"), None))
        runs.sync()
    with database.connection_context():
        left = {run.id for run in ChatRun.select(ChatRun.id)}
    assert left == {"run-1", "other-session", "still-running"}


def test_forgetting_older_runs_looks_them_up_by_session_not_among_every_finished_run(runs):
    if is_postgresql(database.obj):
        pytest.skip("the plan of SQLite's planner")
    with database.connection_context():
        plan = [row[-1] for row in database.execute_sql("EXPLAIN QUERY PLAN " + placeholders(FORGET_OLDER_RUNS),
                                                        ("s1", "run-1"))]
    runs_steps = [step for step in plan if step.split()[1] in ("chat_runs", "r")]
    assert runs_steps and all(step.startswith("SEARCH") and step.endswith("(id=?)") for step in runs_steps), plan
