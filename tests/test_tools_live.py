"""Bounded work on a real gunicorn gevent worker: a catastrophic regex runs in a child process
that is stopped at `[tools] timeout_secs`, a stalled provider call ends at `[providers]
request_timeout_secs`, and the worker keeps answering meanwhile."""
from __future__ import annotations

import threading

import psutil
import pytest
import requests

from .fake_provider import Reply, ToolCall
from .support import live_server, wait_until as wait_for

API_KEY = "sp_live_" + "ef" * 20
TOOL_TIMEOUT_SECS = 10
PROVIDER_TIMEOUT_SECS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("tools") / ".starpod"
    (home / "config").mkdir(parents=True)
    (home / "config" / "agent.toml").write_text(f"[tools]\ntimeout_secs = {TOOL_TIMEOUT_SECS}\n"
                                                f"[providers]\nrequest_timeout_secs = {PROVIDER_TIMEOUT_SECS}\n")
    with live_server(home, workers=1, env={**fake.environ(), "STARPOD_API_KEY": API_KEY}) as running:
        yield running


def children_running(server, program: str) -> list[psutil.Process]:
    """Live descendants of the server whose command line ends with `program`."""
    found = []
    for proc in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and " ".join(proc.cmdline()).endswith(program):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def chat_in_background(server, text: str) -> tuple[threading.Thread, dict]:
    answer: dict = {}
    chat = threading.Thread(target=lambda: answer.update(response=server.request(
        "POST", "/api/chat", API_KEY, json={"text": text})))
    chat.start()
    return chat, answer


def assert_worker_answers_while(server, child: psutil.Process) -> None:
    """/api/health answers while `child` (started by the only worker) is still running."""
    assert requests.get(f"{server.base_url}/api/health", timeout=30).status_code == 200
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE


def test_catastrophic_grep_is_bounded_and_the_worker_keeps_serving(server, fake):
    (server.home / "workspace" / "evil.txt").write_text("a" * 64 + "!\n")
    fake.reset()
    fake.script(Reply(tool_calls=[ToolCall("Grep", {"pattern": "(a+)+$"}, id="toolu_evil")]), Reply("done"))
    chat, answer = chat_in_background(server, "search")
    try:
        # The only worker answers while the regex burns CPU in its child.
        assert_worker_answers_while(server, wait_for(lambda: children_running(server, "filescan.py"))[0])
    finally:
        chat.join(60)
    response = answer["response"]
    assert response.status_code == 200 and response.json()["text"] == "done"
    result = fake.requests[1].body["messages"][-1]["content"][0]
    assert result["tool_use_id"] == "toolu_evil" and result["is_error"] is True
    # Whichever limit the child reaches first (CPU time or wall time, both the tool timeout) stops it.
    assert result["content"] in (f"Grep timed out after {TOOL_TIMEOUT_SECS}s and was stopped",
                                 f"Grep used more CPU time than a tool may ({TOOL_TIMEOUT_SECS}s) and was stopped")
    wait_for(lambda: not children_running(server, "filescan.py"))


def test_bash_is_waited_for_cooperatively_and_killed_at_its_timeout(server, fake):
    fake.reset()
    fake.script(Reply(tool_calls=[ToolCall("Bash", {"command": "sleep 600", "timeout": 8000}, id="toolu_sleep")]),
                Reply("done"))
    chat, answer = chat_in_background(server, "sleep")
    try:
        assert_worker_answers_while(server, wait_for(lambda: children_running(server, "sleep 600"))[0])
    finally:
        chat.join(60)
    assert answer["response"].json()["text"] == "done"
    result = fake.requests[1].body["messages"][-1]["content"][0]
    assert result["is_error"] and result["content"] == "Command timed out after 8s"
    wait_for(lambda: not children_running(server, "sleep 600"))


def test_stalled_provider_ends_at_the_call_deadline(server, fake):
    fake.reset()
    fake.script(Reply("ab", chunks=2, chunk_delay=60))
    chat, answer = chat_in_background(server, "hello")
    wait_for(lambda: fake.requests)  # the call is under way
    assert requests.get(f"{server.base_url}/api/health", timeout=30).status_code == 200
    chat.join(60)
    response = answer["response"]
    assert response.status_code == 502
    assert response.json()["error"] == "Chat error: API error: request timed out"
