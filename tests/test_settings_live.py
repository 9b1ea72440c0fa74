"""Settings on a real 2-worker gunicorn server: a PUT handled by one worker is what every worker
serves next; hand edits (good or broken) reach every worker; concurrent PUTs never corrupt the file
or lose unrelated keys."""
from __future__ import annotations

import re
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from starpod.home import AGENT_TOML

from .fake_provider import Reply, ToolCall
from .support import LiveServer

ADMIN_KEY = "sp_live_" + "5e" * 20
ACCESS_LOG = {"GUNICORN_CMD_ARGS": "--access-logfile - --access-logformat 'ACCESS %(p)s %(m)s %(U)s %(s)s'"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    server = LiveServer(tmp_path_factory.mktemp("settings") / "home", workers=2,
                        env={"STARPOD_API_KEY": ADMIN_KEY, **ACCESS_LOG, **fake.environ()})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def agent_toml(server):
    """agent.toml of the live server, restored to the seeded file after the test."""
    path = server.home / "config" / "agent.toml"
    yield path
    path.write_text(AGENT_TOML)


def answering_pids(server: LiveServer, since: int, path: str, method: str = "GET") -> set[str]:
    pattern = re.compile(rf"ACCESS <(\d+)> {method} {re.escape(path)} 200")
    return set(pattern.findall(server.log_text()[since:]))


def on_every_worker(server: LiveServer, method: str, path: str, **kwargs) -> list[requests.Response]:
    """Send `method path` until both workers have answered it; returns every response.

    Requests go in parallel bursts on fresh connections: the kernel hands a new connection to
    an idle worker, so sequential requests could all land on the same one.
    """
    since = len(server.log_text())
    responses: list[requests.Response] = []
    with ThreadPoolExecutor(4) as pool:
        for _ in range(50):
            responses += pool.map(lambda _: server.request(method, path, ADMIN_KEY, **kwargs), range(4))
            if len(answering_pids(server, since, path, method)) == 2:
                return responses
    raise AssertionError(f"only one worker answered {method} {path}")


def get_on_every_worker(server: LiveServer, path: str) -> list[dict]:
    responses = on_every_worker(server, "GET", path)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json() for r in responses]


def put(server: LiveServer, path: str, body: dict) -> requests.Response:
    return server.request("PUT", f"/api/settings/{path}", ADMIN_KEY, json=body)


GROUPS = [
    ("general", {"provider": "openai", "model": "gpt-4o", "max_turns": 50, "max_tokens": 8192, "agent_name": "Nova",
                 "timezone": "US/Pacific", "reasoning_effort": "low", "compaction_model": "gpt-4o-mini",
                 "compaction_provider": "openai", "followup_mode": "queue", "server_addr": "0.0.0.0:8080"}),
    ("memory", {"half_life_days": 14.0, "mmr_lambda": 0.5, "vector_search": False, "chunk_size": 800,
                "chunk_overlap": 160, "export_sessions": False}),
    ("cron", {"default_max_retries": 5, "default_timeout_secs": 3600, "max_concurrent_runs": 4}),
    ("channels", {"telegram": {"enabled": False, "gap_minutes": 120, "stream_mode": "all_messages", "mode": "webhook"}}),
    ("frontend", {"greeting": "Hi!", "prompts": ["What's new?", "Plan my day"]}),
    ("files/SOUL.md", {"content": "# Soul\nYou are Nova.\n"}),
    ("files/HEARTBEAT.md", {"content": "Check the inbox.\n"}),
]


@pytest.mark.parametrize("path,body", GROUPS, ids=[g[0] for g in GROUPS])
def test_put_on_one_worker_is_served_by_every_worker(server, agent_toml, path, body):
    response = put(server, path, body)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    for seen in get_on_every_worker(server, f"/api/settings/{path}"):
        assert seen == body


def test_put_keeps_comments_of_the_seeded_file(server, agent_toml):
    assert put(server, "cron", dict(GROUPS[2][1])).status_code == 200
    text = agent_toml.read_text()
    assert text == AGENT_TOML.replace("default_max_retries = 3", "default_max_retries = 5") \
        .replace("default_timeout_secs = 7200", "default_timeout_secs = 3600") \
        .replace("max_concurrent_runs = 1", "max_concurrent_runs = 4")


def test_hand_edit_reaches_every_worker_and_broken_edit_keeps_last_good(server, agent_toml):
    agent_toml.write_text(AGENT_TOML.replace('model = "claude-haiku-4-5"', 'model = "hand-edited"'))
    assert {b["model"] for b in get_on_every_worker(server, "/api/settings/general")} == {"hand-edited"}

    agent_toml.write_text('model = "broken\n')
    assert {b["model"] for b in get_on_every_worker(server, "/api/settings/general")} == {"hand-edited"}
    assert "keeping the previous config" in server.log_text()
    refused = put(server, "general", GROUPS[0][1])
    assert refused.status_code == 500 and refused.json()["error"].startswith("Failed to parse")
    assert agent_toml.read_text() == 'model = "broken\n'


def test_concurrent_puts_keep_the_file_valid_and_lose_nothing(server, agent_toml):
    agent_toml.write_text(AGENT_TOML + '\n[custom]\nkeep = "me"  # unknown to Starpod\n')
    general = dict(GROUPS[0][1])
    rounds = 15
    failures: list[str] = []

    def client(group: str, bodies: list[dict]) -> None:
        for body in bodies:
            response = put(server, group, body)
            if response.status_code != 200:
                failures.append(f"{group}: {response.status_code} {response.text}")

    def reader(stop: threading.Event) -> None:
        while not stop.is_set():
            response = server.get("/api/settings/general", ADMIN_KEY)
            if response.status_code != 200:
                failures.append(f"GET general: {response.status_code} {response.text}")

    general_a = [{**general, "max_turns": 100 + i, "agent_name": "A"} for i in range(rounds)]
    general_b = [{**general, "max_turns": 200 + i, "agent_name": "B"} for i in range(rounds)]
    memory_c = [{**GROUPS[1][1], "chunk_size": 1000 + i} for i in range(rounds)]
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=("general", general_a)),
               threading.Thread(target=client, args=("general", general_b)),
               threading.Thread(target=client, args=("memory", memory_c)),
               threading.Thread(target=reader, args=(stop,))]
    for thread in threads:
        thread.start()
    for thread in threads[:3]:
        thread.join(120)
    stop.set()
    threads[3].join(30)
    assert failures == []

    data = tomllib.loads(agent_toml.read_text())  # still valid TOML
    final_general = {k: data.get(k) for k in general}
    assert final_general in (general_a[-1], general_b[-1])  # one client's last write wins whole
    assert data["memory"]["chunk_size"] == memory_c[-1]["chunk_size"]  # the other group's last write survives
    assert data["custom"] == {"keep": "me"} and data["cron"]["default_timeout_secs"] == 7200
    assert "# provider: anthropic, openai, gemini, groq, deepseek, openrouter or ollama\n" in agent_toml.read_text()
    for seen in get_on_every_worker(server, "/api/settings/general"):
        assert seen == final_general


def test_next_chat_on_every_worker_uses_the_new_model_provider_and_max_turns(server, agent_toml, fake):
    general = {**GROUPS[0][1], "provider": "anthropic", "model": "claude-sonnet-4-6", "max_turns": 3}
    assert put(server, "general", general).status_code == 200
    assert put(server, "general", {**general, "provider": "openai", "model": "gpt-4o-mini", "max_turns": 1}).status_code == 200
    fake.default = lambda request: Reply("again", tool_calls=[ToolCall("SkillList", {})])
    before = len(fake.requests)
    try:
        responses = on_every_worker(server, "POST", "/api/chat", json={"text": "hello"})
    finally:
        fake.default = Reply("ok")
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    calls = fake.requests[before:]
    assert len(calls) == len(responses)  # max_turns = 1: one provider call per chat
    assert {(c.api, c.body["model"]) for c in calls} == {("openai", "gpt-4o-mini")}


def test_rate_limit_edit_applies_on_every_worker_without_restart(server, agent_toml):
    agent_toml.write_text(AGENT_TOML.replace("rate_limit_requests = 0", "rate_limit_requests = 3")
                          .replace("rate_limit_window_secs = 60", "rate_limit_window_secs = 3600"))
    statuses = [server.get("/api/settings/models", ADMIN_KEY).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
