"""Two servers as one: separate gunicorn masters (own ports) on one data directory and one
database (PostgreSQL under STARPOD_TEST_DATABASE=postgresql, else the shared SQLite file).

Both serve the same users, settings, cron jobs and Telegram bot; a server killed mid-stream
leaves a run the other closes and resumes.  Being on one machine, they share its doorbells
(`run/<host>/`) as well as the NOTIFY hints that reach servers on other machines (those are
proven on their own in test_change_hints and test_db_engines)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psutil
import pytest
import requests
from peewee import fn

from starpod.db import database, open_database
from starpod.models import RunEvent
from starpod.realtime.runs import INTERRUPTED

from . import pgtest
from .fake_provider import Reply
from .fake_telegram import FakeTelegram
from .support import LiveServer, wait_until
from .test_ws_live import connect, deltas, recv, send, until_end

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ADMIN_KEY = "sp_live_" + "ab" * 20
CRON_JOBS = 20
TELEGRAM_USER = 7001
WAIT = 120.0


@pytest.fixture(scope="module")
def tg():
    fake_telegram = FakeTelegram().start()
    yield fake_telegram
    fake_telegram.stop()


@pytest.fixture(scope="module")
def environ(fake, tg):
    return {**fake.environ(STARPOD_API_KEY=ADMIN_KEY), **tg.environ()}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, environ):
    home = tmp_path_factory.mktemp("scale") / "home"
    first = LiveServer(home, env=environ).start()
    second = LiveServer(home, env=environ)
    try:
        second.start()
    except Exception:
        first.stop()
        raise
    for live in (first, second):
        live.admin_key = ADMIN_KEY
    yield first, second
    first.stop()
    second.stop()


def test_a_run_started_on_one_server_resumes_on_the_other_without_a_gap(servers, fake):
    server_a, server_b = servers
    text = "".join(f"<{i:03d}>" for i in range(40))
    fake.script(Reply(text, chunks=40, chunk_delay=0.03))
    first = connect(server_a)
    send(first, type="message", text="long story")
    seen = [recv(first) for _ in range(5)]
    first.close()  # the client leaves server A mid-run
    other = connect(server_b)
    send(other, type="resume", session_id=seen[0]["session_id"], after_seq=seen[-1]["seq"])
    rest = until_end(other)
    other.close()
    assert deltas(seen + rest) == text
    assert [frame["seq"] for frame in seen + rest] == list(range(seen[0]["seq"], seen[0]["seq"] + len(seen + rest)))


def test_a_key_revoked_on_one_server_is_refused_by_the_other(servers):
    server_a, server_b = servers
    user, issued = server_a.create_user(ADMIN_KEY, display_name="Bo")
    assert requests.get(server_b.base_url + "/api/auth/verify", headers={"X-API-Key": issued["key"]},
                        timeout=30).json()["authenticated"]  # B has verified (and cached) the key
    server_a.request("POST", f"/api/settings/auth/api-keys/{issued['meta']['id']}/revoke", ADMIN_KEY)
    refused = requests.get(server_b.base_url + f"/api/settings/auth/users/{user['id']}",
                           headers={"X-API-Key": issued["key"]}, timeout=30)
    assert refused.status_code == 401


def test_a_settings_change_on_one_server_is_what_the_other_serves_next(servers):
    server_a, server_b = servers
    general = server_b.get("/api/settings/general", ADMIN_KEY).json()
    changed = {**general, "agent_name": "Renamed on A", "max_turns": general["max_turns"] + 7}
    assert server_a.request("PUT", "/api/settings/general", ADMIN_KEY, json=changed).status_code == 200
    served = server_b.get("/api/settings/general", ADMIN_KEY).json()
    assert (served["agent_name"], served["max_turns"]) == ("Renamed on A", changed["max_turns"])
    frontend = {"greeting": "hello from A", "prompts": ["one", "two"]}
    assert server_a.request("PUT", "/api/settings/frontend", ADMIN_KEY, json=frontend).status_code == 200
    assert server_b.get("/api/settings/frontend", ADMIN_KEY).json() == frontend


def prompts_containing(fake, marker: str) -> int:
    """How many model requests were asked `marker` (in their last message: not as history)."""
    return sum(1 for r in fake.requests if marker in json.dumps(r.body.get("messages", [])[-1:]))


def test_a_due_cron_job_fires_once_across_both_servers(servers, fake):
    fake.default = Reply("done")
    due = (datetime.now(timezone.utc) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for index in range(CRON_JOBS):
        creator = servers[index % 2]
        created = creator.request("POST", "/api/cron/jobs", ADMIN_KEY,
                                  json={"name": f"both-{index:02}", "prompt": f"cron-marker-{index:02}.",
                                        "schedule": {"kind": "one_shot", "at": due}})
        assert created.status_code == 201, created.text
    wait_until(lambda: all(not job["enabled"] for job in servers[1].get("/api/cron/jobs", ADMIN_KEY).json()
                           if job["name"].startswith("both-")), "every one-shot job to run", WAIT)
    for index in range(CRON_JOBS):
        assert prompts_containing(fake, f"cron-marker-{index:02}.") == 1
        runs = servers[index % 2].get(f"/api/cron/jobs/both-{index:02}/runs", ADMIN_KEY).json()
        assert [run["status"] for run in runs] == ["success"]


def test_one_telegram_poller_across_both_servers(servers, fake, tg):
    server_a, _ = servers
    fake.default = lambda recorded: Reply("echo: " + json.dumps(recorded.body["messages"][-1]["content"]))
    user = server_a.request("POST", "/api/settings/auth/users", ADMIN_KEY, json={"display_name": "Tia"}).json()
    assert server_a.request("PUT", f"/api/settings/auth/users/{user['id']}/telegram", ADMIN_KEY,
                            json={"telegram_id": TELEGRAM_USER, "username": "tia"}).status_code == 200
    texts = [f"telegram-marker-{index}" for index in range(6)]
    for text in texts:
        tg.push_text(TELEGRAM_USER, text)
    wait_until(lambda: len(tg.sent_to(TELEGRAM_USER)) >= len(texts), "a reply to every message", WAIT)
    replies = [sent.text for sent in tg.sent_to(TELEGRAM_USER)]
    for text in texts:
        assert sum(text in reply for reply in replies) == 1, replies
        assert prompts_containing(fake, text) == 1
    assert tg.conflicts == 0  # never two getUpdates at once: one poller across both servers


def stored_up_to(home, session_id: str) -> int:
    """The highest stored `seq` of the session's runs (0 when none is stored yet)."""
    open_database(home / "db" / "starpod.db", pgtest.database_url_for(home))
    try:
        runs = RunEvent.select(RunEvent.run).where(RunEvent.session_id == session_id)
        return RunEvent.select(fn.MAX(RunEvent.seq)).where(RunEvent.run.in_(runs)).scalar() or 0
    finally:
        database.close_all()


def kill(server: LiveServer) -> None:
    """SIGKILL the server's master and every worker at once: nothing of it cleans up."""
    master = psutil.Process(server.process.pid)
    for process in [*master.children(recursive=True), master]:
        process.kill()
    server.process.wait()


def test_a_run_of_a_killed_server_is_closed_and_its_client_resumes_on_another(servers, fake, environ):
    server_a, _ = servers
    doomed = LiveServer(server_a.home, env=environ).start()
    try:
        fake.script(Reply("".join(f"<{i:03d}>" for i in range(400)), chunks=400, chunk_delay=0.05))
        client = connect(doomed, ADMIN_KEY)
        send(client, type="message", text="a story the server will not finish")
        seen = [recv(client) for _ in range(5)]
        # Frames reach the run's own clients before its batch writer stores them; a kill in
        # between would lose frames this client saw.  Kill once they are stored.
        wait_until(lambda: stored_up_to(doomed.home, seen[0]["session_id"]) >= seen[-1]["seq"],
                   "the frames seen to be stored", WAIT)
        kill(doomed)
        client.close()
    finally:
        doomed.stop()
    session_id = seen[0]["session_id"]
    other = connect(server_a, ADMIN_KEY)
    try:
        send(other, type="resume", session_id=session_id, after_seq=seen[-1]["seq"])
        rest = until_end(other, timeout=WAIT)
        assert [frame["seq"] for frame in rest] == list(range(seen[-1]["seq"] + 1, seen[-1]["seq"] + 1 + len(rest)))
        assert rest[-1]["type"] == "stream_end" and rest[-1]["is_error"] and rest[-1]["errors"] == [INTERRUPTED]
        fake.default = Reply("after the crash")
        send(other, type="message", text="are you there?")
        answer = until_end(other, timeout=WAIT)
        assert answer[-1]["type"] == "stream_end" and not answer[-1]["is_error"]
        assert deltas(answer) == "after the crash"
    finally:
        other.close()
