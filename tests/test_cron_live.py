"""The scheduler in a real deployment: gunicorn with 2 gevent workers, the fake provider, real
WebSockets.  Many due jobs fire exactly once, notifications reach only their owner, BOOT.md runs
once per start and BOOTSTRAP.md once ever, and a killed lease holder is replaced."""
from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import psutil
import pytest

from starpod.db import database
from starpod.config import Config
from starpod.notify import notify

from . import appdb
from .fake_provider import Reply
from .support import LiveServer, wait_until
from .test_ws_live import connect, worker_of

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

JOBS = 100
WAIT = 180.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("cron") / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "BOOT.md").write_text("boot-marker: say good morning")
    (home / "config" / "BOOTSTRAP.md").write_text("bootstrap-marker: introduce yourself")
    live = LiveServer(home, workers=2, env=fake.environ()).start()
    live.admin_key = live.generated_admin_key()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def keys(server):
    """API keys of two ordinary users: {"bob": key, "carol": key}."""
    return {name: server.create_user(server.admin_key, label=name, display_name=name)[1]["key"]
            for name in ("bob", "carol")}


def wait_for(condition, what: str):
    return wait_until(condition, what, timeout=WAIT)


def prompts_containing(fake, marker: str) -> int:
    return sum(1 for r in fake.requests if marker in json.dumps(r.body.get("messages", [])))


def in_seconds(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def runs(server, key, name):
    return server.get(f"/api/cron/jobs/{name}/runs", key).json()


def test_every_due_job_fires_exactly_once_across_two_workers(server, fake):
    fake.default = Reply("done")
    assert server.request("PUT", "/api/settings/cron", server.admin_key,
                          json={"default_max_retries": 0, "default_timeout_secs": 300,
                                "max_concurrent_runs": 10}).status_code == 200
    due = in_seconds(8)
    for index in range(JOBS):
        at = max(due, in_seconds(2))  # a slow box may still be creating jobs when they fall due
        created = server.request("POST", "/api/cron/jobs", server.admin_key,
                                 json={"name": f"bulk-{index:03}", "prompt": f"marker-{index:03}. do it",
                                       "schedule": {"kind": "one_shot", "at": at}})
        assert created.status_code == 201, created.text
    wait_for(lambda: all(not j["enabled"] for j in server.get("/api/cron/jobs", server.admin_key).json()
                         if j["name"].startswith("bulk-")), "every one-shot to run")
    for index in range(JOBS):
        assert prompts_containing(fake, f"marker-{index:03}.") == 1
        assert [r["status"] for r in runs(server, server.admin_key, f"bulk-{index:03}")] == ["success"]


def test_start_prompts_ran_once_for_this_start(server, fake):
    wait_for(lambda: prompts_containing(fake, "bootstrap-marker") and prompts_containing(fake, "boot-marker"),
             "BOOTSTRAP.md and BOOT.md to run")
    assert prompts_containing(fake, "bootstrap-marker") == 1 and prompts_containing(fake, "boot-marker:") == 1
    assert wait_for(lambda: (server.home / "config" / "BOOTSTRAP.md").read_text() == "", "BOOTSTRAP.md emptied")


def sockets_on_both_workers(server, key, per_worker=2, limit=40) -> list:
    by_worker: dict[int, list] = {}
    for _ in range(limit):
        ws = connect(server, key)
        ws.settimeout(60)
        by_worker.setdefault(worker_of(server, ws), []).append(ws)
        if len(by_worker) == 2 and all(len(s) >= per_worker for s in by_worker.values()):
            break
    assert len(by_worker) == 2, "the kernel gave every connection to one worker"
    return [ws for sockets in by_worker.values() for ws in sockets]


def next_notification(ws) -> dict:
    while True:
        frame = json.loads(ws.recv())
        if frame["type"] == "notification":
            return frame


def run_now(server, key, name, prompt):
    created = server.request("POST", "/api/cron/jobs", key,
                             json={"name": name, "prompt": prompt,
                                   "schedule": {"kind": "interval", "every_ms": 86_400_000}})
    assert created.status_code == 201, created.text
    assert server.request("POST", f"/api/cron/jobs/{name}/run", key).status_code == 202


def test_notifications_reach_only_the_owners_sockets(server, fake, keys):
    fake.default = Reply("notified")
    sockets = {who: sockets_on_both_workers(server, key)
               for who, key in (("bob", keys["bob"]), ("carol", keys["carol"]), ("admin", server.admin_key))}
    try:
        run_now(server, keys["bob"], "bob-news", "bob-news please")
        for ws in sockets["bob"]:
            frame = next_notification(ws)
            assert frame["job_name"] == "bob-news" and frame["success"] is True
            assert frame["result_preview"] == "notified" and frame["session_id"]
        request = next(r for r in fake.requests if "bob-news please" in json.dumps(r.body["messages"]))
        assert "scheduled cron job" in json.dumps(request.body["system"])
        appdb.open_app_database(server.home)
        try:
            notify("agent-level", "", "for admins", True, config=Config(home=server.home))
        finally:
            database.close_all()
        run_now(server, keys["carol"], "carol-news", "carol-news please")
        # Frames arrive in the order they were stored: anything of Bob's would come first.
        for ws in sockets["carol"]:
            assert next_notification(ws)["job_name"] == "carol-news"
        for ws in sockets["admin"]:
            assert next_notification(ws)["job_name"] == "agent-level"
        run_now(server, keys["bob"], "bob-again", "bob-again please")
        for ws in sockets["bob"]:
            assert next_notification(ws)["job_name"] == "bob-again"  # never agent-level or Carol's
        owner_session = runs(server, keys["bob"], "bob-news")[0]["session_id"]
        session = server.get(f"/api/sessions/{owner_session}", keys["bob"]).json()
        assert session["is_read"] is False
        assert server.get(f"/api/sessions/{owner_session}", keys["carol"]).status_code == 404
    finally:
        for group in sockets.values():
            for ws in group:
                ws.close()


def lease_holder_pid(server) -> int:
    appdb.open_app_database(server.home)
    try:
        from starpod.leases import current_holder
        holder = current_holder("scheduler")
    finally:
        database.close_all()
    return int(holder.split(":")[1]) if holder else 0


def test_killing_the_lease_holder_hands_the_scheduler_over(server, fake):
    fake.default = Reply("after takeover")
    holder = wait_for(lambda: lease_holder_pid(server), "a scheduler leader")
    assert holder in {p.pid for p in psutil.Process(server.process.pid).children()}
    os.kill(holder, signal.SIGKILL)
    run_now(server, server.admin_key, "after-kill", "after-kill marker")
    wait_for(lambda: [r["status"] for r in runs(server, server.admin_key, "after-kill")] == ["success"],
             "a run after the leader was killed")
    assert lease_holder_pid(server) not in (0, holder)
    assert prompts_containing(fake, "after-kill marker") == 1
