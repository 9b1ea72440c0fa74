"""Concurrency proof: 4 gunicorn workers × 25 concurrent chats, each turn running three tool calls at
once (a memory write, a memory search, an env read) against the fake provider, while admins PUT
settings, write agent files and revoke keys.  Every chat is answered and its messages stored, no
request gets a 5xx, and "database is locked" never reaches a client.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .fake_provider import Reply, ToolCall
from .proof_support import start_proof_server

WORKERS = 4
CHATS = WORKERS * 25
USERS = 4
SIDE_WRITES = 12  # settings PUTs, agent-file writes and key revocations each
LOCKED = "database is locked"
CHAT_TIMEOUT = 300  # a turn waits for its worker's share of 100 concurrent chats on a loaded box


def tool_turn(recorded) -> Reply:
    """First model call of a turn: three tool calls; the call after their results: the answer."""
    if "tool_result" in json.dumps(recorded.body.get("messages", [])[-1:]):
        return Reply("all tools done", chunks=3)
    marker = recorded.body["messages"][-1]["content"]
    marker = marker if isinstance(marker, str) else json.dumps(marker)
    return Reply(tool_calls=[ToolCall("MemoryWrite", {"file": "MEMORY.md", "content": f"note {marker[:40]}"}),
                             ToolCall("MemorySearch", {"query": "note"}),
                             ToolCall("EnvGet", {"key": "STARPOD_NOT_SET"})])


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    fake.default = tool_turn
    live = start_proof_server(tmp_path_factory, "concurrency", env=fake.environ(), workers=WORKERS)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def user_keys(server) -> list[str]:
    return [server.create_user(server.admin_key, label=f"chatter {n}")[1]["key"] for n in range(USERS)]


def chat(server, key: str, number: int) -> tuple[str, int, str]:
    text = f"concurrent chat {number}"
    response = requests.post(f"{server.base_url}/api/chat", headers={"X-API-Key": key}, json={"text": text},
                             timeout=CHAT_TIMEOUT)
    return text, response.status_code, response.text


def expect(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.request.method, response.url, response.status_code, response.text[:300])
    return response.text


def put_settings(server, number: int) -> str:
    general = server.get("/api/settings/general", server.admin_key).json()
    general["max_turns"] = 10 + number % 5
    return expect(server.request("PUT", "/api/settings/general", server.admin_key, json=general), 200)


def write_agent_file(server, number: int) -> str:
    return expect(server.request("PUT", "/api/settings/files/HEARTBEAT.md", server.admin_key,
                                 json={"content": f"# Heartbeat {number}\n"}), 200)


def revoke_a_key(server, number: int) -> str:
    _, created = server.create_user(server.admin_key, label=f"short-lived {number}")
    revoked = server.request("POST", f"/api/settings/auth/api-keys/{created['meta']['id']}/revoke", server.admin_key)
    return expect(revoked, 200) + expect(server.get("/api/sessions", created["key"]), 401)


def test_concurrent_chats_tools_settings_and_revocations(server, user_keys, fake):
    with ThreadPoolExecutor(max_workers=CHATS + 3 * SIDE_WRITES) as pool:
        chats = [pool.submit(chat, server, user_keys[n % USERS], n) for n in range(CHATS)]
        side = [pool.submit(job, server, n) for n in range(SIDE_WRITES)
                for job in (put_settings, write_agent_file, revoke_a_key)]
        chat_results = [future.result(timeout=600) for future in chats]
        side_results = [future.result(timeout=600) for future in side]

    failed_chats = [(text, status, body[:300]) for text, status, body in chat_results if status != 200]
    assert not failed_chats, failed_chats
    assert not [body for body in [r[2] for r in chat_results] + side_results if LOCKED in body]

    assert len(fake.requests) >= 2 * CHATS  # every turn called its tools and the model again
    for key in user_keys:
        stored = stored_user_texts(server, key)
        sent = {text for n, (text, _, _) in enumerate(chat_results) if user_keys[n % USERS] == key}
        assert sent <= stored, f"messages not stored: {sorted(sent - stored)[:5]}"


def stored_user_texts(server, key: str) -> set[str]:
    sessions = server.get("/api/sessions?limit=100", key)
    assert sessions.status_code == 200, sessions.text
    texts = set()
    for session in sessions.json():
        messages = server.get(f"/api/sessions/{session['id']}/messages", key)
        assert messages.status_code == 200, messages.text
        rows = messages.json()
        assert [m["role"] for m in rows].count("tool_result") == 3, rows
        texts |= {m["content"] for m in rows if m["role"] == "user"}
    return texts
