"""Skills REST API in-process: CRUD on skills/<name>/SKILL.md shared with the agent's skill tools,
validation and access rules, and drafting a skill through the fake provider."""
from __future__ import annotations

import json

import pytest

from starpod.agent import providers
from starpod.agent.skillgen import strip_json_fence
from starpod.agent.skills import MAX_SKILL_BYTES

from .conftest import make_config
from .fake_provider import Failure, Reply, ToolCall

SKILLS = "/api/settings/skills"
DEPLOY = {"name": "deploy", "description": "Ship the app", "body": "1. build\n2. ship", "version": "1.0"}


@pytest.fixture
def config(home, fake_provider):
    return make_config(home, environ=fake_provider.environ())


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(providers, "RETRY_POLICY", providers.RetryPolicy(max_retries=1, base_delay=0.01))


@pytest.fixture
def h(admin_headers):
    return admin_headers


def test_crud_lifecycle(client, h, home):
    assert client.get(SKILLS, headers=h).get_json() == []
    created = client.post(SKILLS, json=DEPLOY, headers=h)
    assert created.status_code == 201
    skill = created.get_json()
    assert {k: skill[k] for k in DEPLOY} == DEPLOY and skill["created_at"].endswith("Z")
    text = (home / "skills" / "deploy" / "SKILL.md").read_text()
    assert text.startswith("---\nname: deploy\ndescription: Ship the app\nversion: 1.0\n") and "1. build" in text
    assert client.get(SKILLS, headers=h).get_json() == [skill]
    assert client.get(f"{SKILLS}/deploy", headers=h).get_json() == skill

    updated = client.put(f"{SKILLS}/deploy", json={"description": "Ship it\nnow", "body": "new body"}, headers=h)
    assert updated.status_code == 200
    assert updated.get_json() == {**skill, "description": "Ship it now", "body": "new body"}  # version, created_at kept
    cleared = client.put(f"{SKILLS}/deploy", json={"body": "b", "version": ""}, headers=h).get_json()
    assert cleared["version"] is None and cleared["description"] == ""

    deleted = client.delete(f"{SKILLS}/deploy", headers=h)
    assert deleted.status_code == 204 and deleted.data == b""
    assert not (home / "skills" / "deploy").exists()
    assert client.get(SKILLS, headers=h).get_json() == []


def test_conflicts_and_unknown_names(client, h):
    assert client.post(SKILLS, json=DEPLOY, headers=h).status_code == 201
    duplicate = client.post(SKILLS, json=DEPLOY, headers=h)
    assert duplicate.status_code == 409 and "already exists" in duplicate.get_json()["error"]
    for method in ("get", "delete"):
        r = getattr(client, method)(f"{SKILLS}/nope", headers=h)
        assert r.status_code == 404 and "not found" in r.get_json()["error"]
    assert client.put(f"{SKILLS}/nope", json={"body": "x"}, headers=h).status_code == 404


def test_damaged_skill_file_is_skipped_in_lists_and_a_clear_error_alone(client, h, home):
    client.post(SKILLS, json=DEPLOY, headers=h)
    (home / "skills" / "broken").mkdir()
    (home / "skills" / "broken" / "SKILL.md").write_bytes(b"---\nname: broken\n---\n\xff\xfe")
    (home / "skills" / "README").write_text("a file where a skill's folder would be")
    (home / "skills" / ".drafts").mkdir()  # no skill name
    assert [s["name"] for s in client.get(SKILLS, headers=h).get_json()] == ["deploy"]
    r = client.get(f"{SKILLS}/broken", headers=h)
    assert r.status_code == 500 and "cannot be read" in r.get_json()["error"]


@pytest.mark.parametrize("name", ["../evil", "a b", "-lead", "x" * 65, "", "dot.name", "sl/ash"])
def test_invalid_names_are_400_naming_the_field(client, h, name):
    r = client.post(SKILLS, json={**DEPLOY, "name": name}, headers=h)
    assert r.status_code == 400, r.get_json()
    assert "name" in r.get_json()["fields"] and "Invalid skill name" in r.get_json()["error"]


def test_invalid_name_in_path(client, h):
    r = client.get(f"{SKILLS}/dot.name", headers=h)
    assert r.status_code == 400 and "name" in r.get_json()["fields"]


@pytest.mark.parametrize("body,status,field", [
    ({"description": "d", "body": "b"}, 422, "name"), ({"name": "ok", "description": "d"}, 422, "body"),
    ({"name": "ok", "body": 5}, 422, "body"), ({"name": "ok", "body": "b", "version": "bad version!"}, 400, "version"),
    ({"name": "ok", "body": "\ud800"}, 422, "body")])
def test_bad_bodies(client, h, body, status, field):
    r = client.post(SKILLS, json=body, headers=h)
    assert r.status_code == status and field in r.get_json()["fields"]


def test_malformed_json_wrong_type_and_size(client, h):
    assert client.post(SKILLS, data="{nope", content_type="application/json", headers=h).status_code == 400
    assert client.post(SKILLS, data="name=x", content_type="text/plain", headers=h).status_code == 415
    big = client.post(SKILLS, json={**DEPLOY, "body": "x" * (MAX_SKILL_BYTES + 1)}, headers=h)
    assert big.status_code == 413 and "error" in big.get_json()


def test_admin_only_and_auth_before_body(client, make_user, admin):
    _, user_key = make_user("user")
    user = {"X-API-Key": user_key}
    assert client.get(SKILLS, headers=user).status_code == 403
    assert client.post(SKILLS, json=DEPLOY, headers=user).status_code == 403
    assert client.post(f"{SKILLS}/generate", json={"name": "x"}, headers=user).status_code == 403
    assert client.post(SKILLS, data="{nope", content_type="application/json").status_code == 401
    assert client.delete(f"{SKILLS}/deploy").status_code == 401


def test_agent_tools_and_rest_share_skills(client, h, fake_provider):
    """A skill created over REST is what SkillActivate returns; one the agent creates is listed by REST."""
    client.post(SKILLS, json=DEPLOY, headers=h)
    fake_provider.script(
        Reply(tool_calls=[ToolCall("SkillActivate", {"name": "deploy"}, id="toolu_1"),
                          ToolCall("SkillCreate", {"name": "triage", "description": "Sort bugs", "body": "Label them"},
                                   id="toolu_2")]),
        Reply("done"))
    assert client.post("/api/chat", json={"text": "deploy please"}, headers=h).status_code == 200
    results = {r["tool_use_id"]: r for r in fake_provider.requests[1].body["messages"][-1]["content"]}
    assert results["toolu_1"]["content"] == "1. build\n2. ship" and not results["toolu_1"]["is_error"]
    assert "<name>deploy</name>" in fake_provider.requests[0].body["system"][0]["text"]
    triage = client.get(f"{SKILLS}/triage", headers=h).get_json()
    assert (triage["description"], triage["body"], triage["version"]) == ("Sort bugs", "Label them", None)
    assert [s["name"] for s in client.get(SKILLS, headers=h).get_json()] == ["deploy", "triage"]


# --- generate --------------------------------------------------------------------------------

def test_generate_drafts_with_the_configured_model(client, h, fake_provider):
    answer = '```json\n{"description": "Review pull requests", "body": "# Review\\n1. Read the diff"}\n```'
    fake_provider.script(Reply(answer, chunks=4))
    r = client.post(f"{SKILLS}/generate", json={"name": "review", "prompt": "help me review PRs"}, headers=h)
    assert r.status_code == 200
    assert r.get_json() == {"description": "Review pull requests", "body": "# Review\n1. Read the diff"}
    request = fake_provider.requests[-1].body
    assert request["model"] == "claude-haiku-4-5" and "tools" not in request
    assert "JSON" in request["system"][0]["text"]
    asked = request["messages"][-1]["content"][0]["text"]
    assert "Skill name: review" in asked and "help me review PRs" in asked
    assert client.get(SKILLS, headers=h).get_json() == []  # nothing saved


def test_generate_keeps_the_given_description_when_the_model_omits_it(client, h, fake_provider):
    fake_provider.script(Reply(json.dumps({"body": "Steps"})))
    r = client.post(f"{SKILLS}/generate", json={"name": "x", "description": "Mine"}, headers=h)
    assert r.get_json() == {"description": "Mine", "body": "Steps"}


def test_generate_errors_map_like_chat(client, h, fake_provider, home):
    fake_provider.script(Failure(401, "invalid x-api-key", "authentication_error"))
    failed = client.post(f"{SKILLS}/generate", json={"name": "x"}, headers=h)
    assert failed.status_code == 502 and "invalid x-api-key" in failed.get_json()["error"]
    fake_provider.script(Reply("Sure! Here is a skill about things."))
    unusable = client.post(f"{SKILLS}/generate", json={"name": "x"}, headers=h)
    assert unusable.status_code == 502 and "JSON" in unusable.get_json()["error"]
    invalid = client.post(f"{SKILLS}/generate", json={"name": "../x"}, headers=h)
    assert invalid.status_code == 400 and "name" in invalid.get_json()["fields"]
    assert client.post(f"{SKILLS}/generate", json={}, headers=h).status_code == 422


def test_generate_without_provider_key_is_503(home, fake_provider):
    from starpod import create_app
    app = create_app(make_config(home, environ={}))
    r = app.test_client().post(f"{SKILLS}/generate", json={"name": "x"})
    assert r.status_code == 503 and "ANTHROPIC_API_KEY" in r.get_json()["error"]
    assert not fake_provider.requests


@pytest.mark.parametrize("text", ['{"a": 1}', '  {"a": 1}\n', '```json\n{"a": 1}\n```', '```\n{"a": 1}\n```',
                                  '\n```json\n{"a": 1}\n```\n'])
def test_strip_json_fence(text):
    assert strip_json_fence(text) == '{"a": 1}'


def test_skills_in_openapi(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert {"200", "401", "403", "429"} <= set(paths[SKILLS]["get"]["responses"])
    assert {"201", "400", "409", "413", "415", "422"} <= set(paths[SKILLS]["post"]["responses"])
    assert {"200", "502", "503"} <= set(paths[f"{SKILLS}/generate"]["post"]["responses"])
    item = paths[f"{SKILLS}/{{name}}"]
    assert {"200", "404"} <= set(item["get"]["responses"]) and {"204", "404"} <= set(item["delete"]["responses"])
    assert {"200", "404", "413"} <= set(item["put"]["responses"])
