"""POST /api/chat and the sessions API on a real gunicorn server (2 gevent workers)."""
from __future__ import annotations

import json

import pytest

from .fake_provider import Reply, ToolCall
from .support import live_server

API_KEY = "sp_live_" + "cd" * 20


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("live") / ".starpod"
    with live_server(home, workers=2, env={**fake.environ(), "STARPOD_API_KEY": API_KEY}) as running:
        yield running


def test_parallel_tools_under_gevent(server, fake):
    fake.reset()
    calls = [ToolCall("Bash", {"command": f"sleep 0.2; echo run{i}"}, id=f"toolu_{i}") for i in range(3)]
    fake.script(Reply(tool_calls=calls), Reply("all three ran"))
    response = server.request("POST", "/api/chat", API_KEY, json={"text": "run them", "channel_session_key": "live"})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "all three ran"
    results = {r["tool_use_id"]: r for r in fake.requests[1].body["messages"][-1]["content"]}
    assert {k: v["content"].strip() for k, v in results.items()} == {"toolu_0": "run0", "toolu_1": "run1",
                                                                      "toolu_2": "run2"}
    session_id = response.json()["session_id"]
    rows = server.get(f"/api/sessions/{session_id}/messages", API_KEY).json()
    assert [r["role"] for r in rows] == ["user"] + ["tool_use"] * 3 + ["tool_result"] * 3 + ["assistant"]
    assert {json.loads(r["content"])["tool_use_id"] for r in rows if r["role"] == "tool_result"} == set(results)


def test_session_continues_across_workers(server, fake):
    """Each turn, whichever worker takes it (each request comes on a new connection), sends the
    model every prior exchange: a worker's cached transcript takes in what the other one wrote."""
    fake.reset()
    ids = {server.request("POST", "/api/chat", API_KEY, json={"text": f"turn {i}", "channel_session_key": "multi"})
           .json()["session_id"] for i in range(10)}
    assert len(ids) == 1
    session = server.get(f"/api/sessions/{ids.pop()}", API_KEY).json()
    assert session["message_count"] == 10 and session["title"] == "turn 0"
    sent = [[m["content"][0]["text"] for m in r.body["messages"] if m["role"] == "user"] for r in fake.requests]
    assert sent == [[f"turn {i}" for i in range(n + 1)] for n in range(10)]
    assert len(fake.requests[-1].body["messages"]) == 19  # nine prior exchanges + the new question


def test_provider_failure_is_502_live(server, fake):
    fake.reset()
    fake.default = Reply("never")
    from .fake_provider import Failure
    fake.script(Failure(400, "bad request from provider", "invalid_request_error"))
    response = server.request("POST", "/api/chat", API_KEY, json={"text": "hi"})
    assert response.status_code == 502 and "bad request from provider" in response.json()["error"]


def test_provider_stalling_mid_stream_is_cut_at_the_deadline_under_gevent(server, fake):
    """A stream that stopped sending ends as timed out under gevent workers too, where the
    deadline closes it with an event-loop timer."""
    fake.reset()
    toml = server.home / "config" / "agent.toml"
    original = toml.read_text()
    toml.write_text(original + "\n[providers]\nrequest_timeout_secs = 2\n")
    try:
        fake.script(Reply("ab", chunks=2, chunk_delay=20))
        response = server.request("POST", "/api/chat", API_KEY, json={"text": "hi"})
    finally:
        toml.write_text(original)
    assert response.status_code == 502
    assert response.json()["error"] == "Chat error: API error: request timed out"
