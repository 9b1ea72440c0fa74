"""The web UI's APIs on a real 2-worker gunicorn server with the fake provider: usage after real chats,
skills shared by REST and the agent, per-user memory writes searchable from any worker, markdown
rendering, and concurrent skill creation (exactly one wins)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from .fake_provider import Reply, ToolCall
from .support import LiveServer

ADMIN_KEY = "sp_live_" + "7a" * 20


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    server = LiveServer(tmp_path_factory.mktemp("webapi") / "home", workers=2,
                        env={"STARPOD_API_KEY": ADMIN_KEY, **fake.environ()})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def user(server):
    """(id, key) of a `user`-role account."""
    user, created = server.create_user(ADMIN_KEY, display_name="Bob")
    return user["id"], created["key"]


@pytest.fixture(autouse=True)
def clean_fake(fake):
    fake.reset()
    yield


def test_usage_counts_real_chats_per_user(server, user, fake):
    user_id, key = user
    fake.script(Reply("hi bob", input_tokens=700, output_tokens=70), Reply("hi admin", input_tokens=5, output_tokens=1))
    assert server.request("POST", "/api/chat", key, json={"text": "hello"}).status_code == 200
    assert server.request("POST", "/api/chat", ADMIN_KEY, json={"text": "hello"}).status_code == 200
    mine = server.get("/api/usage?days=7", key).json()
    assert mine["user_id"] == user_id and mine["totals"]["input_tokens"] == 700 and mine["totals"]["runs"] == 1
    everyone = server.get("/api/usage", ADMIN_KEY).json()
    assert everyone["totals"]["runs"] >= 2 and user_id in {u["user_id"] for u in everyone["users"]}
    assert server.get(f"/api/usage?user_id={user_id}", ADMIN_KEY).json()["totals"]["input_tokens"] == 700
    bad = server.get("/api/usage?days=0", key)
    assert bad.status_code == 400 and "days" in bad.json()["fields"]


def test_skill_from_rest_is_activated_by_the_agent(server, fake):
    skill = {"name": "brew", "description": "Make tea", "body": "Boil water, steep 3 minutes.", "version": "2"}
    assert server.request("POST", "/api/settings/skills", ADMIN_KEY, json=skill).status_code == 201
    fake.script(Reply(tool_calls=[ToolCall("SkillActivate", {"name": "brew"}, id="toolu_b")]), Reply("done"))
    assert server.request("POST", "/api/chat", ADMIN_KEY, json={"text": "tea?"}).status_code == 200
    result = fake.requests[1].body["messages"][-1]["content"][0]
    assert result["content"] == "Boil water, steep 3 minutes." and not result["is_error"]
    assert server.request("DELETE", "/api/settings/skills/brew", ADMIN_KEY).status_code == 204
    assert server.get("/api/settings/skills/brew", ADMIN_KEY).status_code == 404


def test_concurrent_creates_of_one_skill_exactly_one_wins(server):
    body = {"name": "race", "description": "d", "body": "b"}
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: server.request("POST", "/api/settings/skills", ADMIN_KEY, json=body).status_code,
                                 range(8)))
    assert sorted(statuses) == [201] + [409] * 7


def test_generate_through_the_provider(server, fake):
    fake.script(Reply('{"description": "Summarize logs", "body": "1. Read\\n2. Summarize"}'))
    r = server.request("POST", "/api/settings/skills/generate", ADMIN_KEY, json={"name": "logs"})
    assert r.status_code == 200 and r.json() == {"description": "Summarize logs", "body": "1. Read\n2. Summarize"}


def test_user_memory_write_is_searchable_from_every_worker(server, user):
    user_id, key = user
    r = server.request("PUT", f"/api/settings/users/{user_id}", ADMIN_KEY,
                       json={"user_md": "# Bob\nFavourite word: quokkaflute\n"})
    assert r.status_code == 200 and "quokkaflute" in r.json()["user_md"]
    # Fresh connections land on either worker; every answer must already see the new text.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: server.get("/api/memory/search?q=quokkaflute", key).json(), range(12)))
    assert all([hit["source"] for hit in hits] == [f"users/{user_id}/USER.md"] for hits in answers), answers
    listed = {row["id"]: row for row in server.get("/api/settings/users", ADMIN_KEY).json()}
    assert listed[user_id]["has_user_md"] is True
    assert server.get("/api/settings/users/nobody", ADMIN_KEY).status_code == 404
    assert server.get("/api/settings/users", key).status_code == 403


def test_render_and_rendered_messages(server, fake):
    r = server.request("POST", "/api/render", ADMIN_KEY, json={"text": "*x* <script>alert(1)</script>"})
    assert r.status_code == 200 and r.json()["html"] == "<p><em>x</em> &lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    fake.script(Reply("**bold** <img src=x onerror=alert(1)>"))
    session_id = server.request("POST", "/api/chat", ADMIN_KEY, json={"text": "<script>1</script>"}).json()["session_id"]
    rows = server.get(f"/api/sessions/{session_id}/messages?render=1", ADMIN_KEY).json()
    assert [row["html"] for row in rows] == ["<p>&lt;script&gt;1&lt;/script&gt;</p>\n",
                                             "<p><strong>bold</strong> &lt;img src=x onerror=alert(1)&gt;</p>\n"]
