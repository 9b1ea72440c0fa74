"""`/api/cron` through the real app (auth, isolation, errors, run-now) and the cron tools, called
through the registry and by the model through the fake provider."""
from __future__ import annotations

import json
import re

import pytest

from starpod.agent.tools import ToolContext, run_tool
from starpod.models import CronJob, CronRun
from starpod.scheduler import store

from .conftest import make_config
from .fake_provider import Reply, ToolCall

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DAILY = {"kind": "cron", "expr": "0 9 * * MON-FRI"}


@pytest.fixture
def config(home, fake_provider):
    return make_config(home, environ=fake_provider.environ())


@pytest.fixture
def users(admin, make_user):
    return {"admin": admin, "bob": make_user("user"), "carol": make_user("user")}


def call(client, method, path, key=None, **kwargs):
    headers = {"X-API-Key": key} if key else {}
    return client.open(path, method=method, headers=headers, **kwargs)


def create(client, key, name="digest", schedule=None, **fields):
    body = {"name": name, "prompt": f"Summarise {name}", "schedule": schedule or DAILY, **fields}
    return call(client, "POST", "/api/cron/jobs", key, json=body)


def test_authentication_comes_before_the_body(client, users):
    assert call(client, "GET", "/api/cron/jobs").status_code == 401
    response = call(client, "POST", "/api/cron/jobs", json={"name": 5})
    assert response.status_code == 401 and "Missing API key" in response.json["error"]
    assert call(client, "POST", "/api/cron/jobs/x/run", "sp_live_" + "0" * 40).status_code == 401


def test_create_returns_the_job_object(client, users):
    key = users["bob"][1]
    response = create(client, key, timezone="Europe/Rome", session_mode="main", max_retries=1)
    assert response.status_code == 201
    job = response.json
    assert list(job) == ["id", "name", "prompt", "schedule", "timezone", "enabled", "delete_after_run",
                         "max_retries", "timeout_secs", "session_mode", "user_id", "created_at", "last_run_at",
                         "next_run_at", "retry_count", "retry_at", "last_error"]
    assert job["schedule"] == DAILY and job["timezone"] == "Europe/Rome" and job["user_id"] == users["bob"][0].id
    assert (job["max_retries"], job["timeout_secs"], job["session_mode"]) == (1, 7200, "main")
    assert RFC3339_Z.match(job["created_at"]) and RFC3339_Z.match(job["next_run_at"])
    assert job["next_run_at"][11:] in ("08:00:00Z", "07:00:00Z")  # 09:00 in Rome (CET or CEST)
    assert job["last_run_at"] is None and job["retry_at"] is None


@pytest.mark.parametrize("body, status, field", [
    ({"schedule": {"kind": "cron", "expr": "0 25 * * *"}}, 400, "schedule.expr"),
    ({"schedule": {"kind": "interval", "every_ms": 5}}, 400, "schedule.every_ms"),
    ({"schedule": {"kind": "interval"}}, 400, "schedule.every_ms"),
    ({"schedule": {"kind": "one_shot", "at": "2001-01-01T00:00:00Z"}}, 400, "schedule.at"),
    ({"schedule": {"kind": "one_shot", "at": "tomorrow"}}, 400, "schedule.at"),
    ({"timezone": "Atlantis/Capital"}, 400, "timezone"),
    ({"name": "a/b"}, 400, "name"),
    ({"name": store.HEARTBEAT}, 400, "name"),
    ({"max_retries": -1}, 400, "max_retries"),
    ({"timeout_secs": 0}, 400, "timeout_secs"),
    ({"schedule": {"kind": "hourly"}}, 422, "schedule.kind"),
    ({"schedule": {"kind": "interval", "every_ms": "60000"}}, 422, "schedule.every_ms"),
    ({"max_retries": 1.5}, 422, "max_retries"),
    ({"session_mode": "shared"}, 422, "session_mode"),
    ({"name": None}, 422, "name"),
])
def test_invalid_jobs_are_refused_naming_the_field(client, users, body, status, field):
    fields = {"name": "bad", "prompt": "p", "schedule": DAILY, **body}
    response = call(client, "POST", "/api/cron/jobs", users["bob"][1], json=fields)
    assert response.status_code == status, response.json
    assert field in response.json["fields"]


def test_malformed_json_and_duplicates(client, users):
    key = users["bob"][1]
    response = call(client, "POST", "/api/cron/jobs", key, data="{oops", content_type="application/json")
    assert response.status_code == 400
    assert create(client, key).status_code == 201
    assert create(client, key).status_code == 409
    assert create(client, users["carol"][1]).status_code == 201  # names are unique per owner


def test_users_see_only_their_jobs_admins_see_all(client, users):
    bob, carol, admin = users["bob"][1], users["carol"][1], users["admin"][1]
    create(client, bob, "bob-job")
    create(client, carol, "carol-job")
    assert [j["name"] for j in call(client, "GET", "/api/cron/jobs", bob).json] == ["bob-job"]
    for method, path in (("GET", "/api/cron/jobs/carol-job"), ("PUT", "/api/cron/jobs/carol-job"),
                         ("DELETE", "/api/cron/jobs/carol-job"), ("GET", "/api/cron/jobs/carol-job/runs"),
                         ("POST", "/api/cron/jobs/carol-job/run")):
        kwargs = {"json": {"prompt": "mine now"}} if method == "PUT" else {}
        assert call(client, method, path, bob, **kwargs).status_code == 404
    carol_id = users["carol"][0].id
    assert call(client, "GET", f"/api/cron/jobs?user_id={carol_id}", bob).json[0]["name"] == "bob-job"
    assert {j["name"] for j in call(client, "GET", "/api/cron/jobs", admin).json} == {"bob-job", "carol-job"}
    assert [j["name"] for j in call(client, "GET", f"/api/cron/jobs?user_id={carol_id}", admin).json] == ["carol-job"]
    assert call(client, "GET", "/api/cron/jobs/carol-job", admin).status_code == 404
    assert call(client, "GET", f"/api/cron/jobs/carol-job?user_id={carol_id}", admin).status_code == 200


def test_update_delete_runs_and_run_now(client, users):
    key = users["bob"][1]
    create(client, key)
    create(client, key, "other")
    updated = call(client, "PUT", "/api/cron/jobs/digest", key,
                   json={"prompt": "new", "schedule": {"kind": "interval", "every_ms": 60000}})
    assert updated.status_code == 200
    assert updated.json["prompt"] == "new" and updated.json["schedule"]["kind"] == "interval"
    assert updated.json["timezone"] == "UTC" and updated.json["session_mode"] == "isolated"
    assert call(client, "PUT", "/api/cron/jobs/digest", key, json={"name": "other"}).status_code == 409
    assert call(client, "PUT", "/api/cron/jobs/digest", key, json={"enabled": "yes"}).status_code == 422
    disabled = call(client, "PUT", "/api/cron/jobs/digest", key, json={"enabled": False}).json
    assert disabled["enabled"] is False and disabled["next_run_at"] is None
    started = call(client, "POST", "/api/cron/jobs/digest/run", key)
    assert started.status_code == 202 and set(started.json) == {"run_id"}
    again = call(client, "POST", "/api/cron/jobs/digest/run", key).json["run_id"]
    runs = call(client, "GET", "/api/cron/jobs/digest/runs?limit=5", key).json
    assert [r["id"] for r in runs] == [again, started.json["run_id"]]
    assert runs[0] == {"id": again, "job_name": "digest", "started_at": None, "completed_at": None,
                       "status": "pending", "result_summary": None, "session_id": None}
    assert call(client, "GET", "/api/cron/jobs/digest/runs?limit=0", key).status_code == 400
    assert call(client, "DELETE", "/api/cron/jobs/digest", key).status_code == 204
    assert CronRun.select().count() == 0  # runs go with their job
    assert call(client, "GET", "/api/cron/jobs/digest", key).status_code == 404
    assert call(client, "DELETE", "/api/cron/jobs/digest", key).status_code == 404


def test_the_heartbeat_is_protected(client, users, config):
    (config.config_dir / "HEARTBEAT.md").write_text("Look around.")
    from starpod.scheduler.lifecycle import ensure_heartbeat
    ensure_heartbeat(config, 1_800_000_000)
    admin, bob = users["admin"][1], users["bob"][1]
    path = f"/api/cron/jobs/{store.HEARTBEAT}"
    assert call(client, "GET", path, bob).status_code == 404
    assert call(client, "GET", path, admin).json["user_id"] is None
    assert call(client, "DELETE", path, admin).status_code == 400
    assert call(client, "PUT", path, admin, json={"name": "renamed"}).status_code == 400
    assert call(client, "PUT", path, admin, json={"enabled": False}).json["enabled"] is False


def test_openapi_documents_the_cron_routes(client):
    spec = client.get("/api/openapi.json").json
    assert {"/api/cron/jobs", "/api/cron/jobs/{name}", "/api/cron/jobs/{name}/runs",
            "/api/cron/jobs/{name}/run"} <= set(spec["paths"])
    assert "202" in spec["paths"]["/api/cron/jobs/{name}/run"]["post"]["responses"]
    assert "Job" in spec["components"]["schemas"] and "JobCreate" in spec["components"]["schemas"]


# --- tools -----------------------------------------------------------------------------------

def tool(ctx, tool_name, **args):
    return run_tool(ctx, tool_name, args)


def test_cron_tools_see_only_the_callers_jobs(app, config):
    bob, carol = ToolContext(config, "bob", False, "s1"), ToolContext(config, "carol", False, "s2")
    added = tool(bob, "CronAdd", name="water", prompt="Water the plants",
                 schedule={"kind": "interval", "every_ms": 3_600_000}, max_retries=5, session_mode="main")
    assert not added.is_error and added.content.startswith("Scheduled job 'water' (id: ")
    listed = json.loads(tool(bob, "CronList").content)
    assert [(j["name"], j["max_retries"], j["session_mode"]) for j in listed] == [("water", 5, "main")]
    assert json.loads(tool(carol, "CronList").content) == []
    for tool_name, args in (("CronRuns", {}), ("CronRun", {}), ("CronUpdate", {"prompt": "x"})):
        result = tool(carol, tool_name, name="water", **args)
        assert result.is_error and result.content == "No job found with name 'water'"
    removed = tool(carol, "CronRemove", name="water")
    assert removed.is_error and removed.content == "Cron remove error: Cron error: Job 'water' not found"
    assert tool(bob, "CronUpdate", name="water", prompt="Water twice").content == "Updated job 'water'."
    inline = tool(bob, "CronRun", name="water")
    assert inline.content == "Manual run recorded for job 'water'. Execute the following prompt:\n\nWater twice"
    runs = json.loads(tool(bob, "CronRuns", name="water").content)
    assert runs[0]["status"] == "success" and runs[0]["result_summary"] == "Manual run triggered inline by CronRun tool"
    assert json.loads(tool(bob, "CronList").content)[0]["last_run_at"] is not None
    past = tool(bob, "CronAdd", name="late", prompt="p", schedule={"kind": "one_shot", "at": "2000-01-01T00:00:00Z"})
    assert past.is_error and past.content == ("One-shot timestamp '2000-01-01T00:00:00Z' is in the past. "
                                              "Use a future timestamp.")
    bad = tool(bob, "CronAdd", name="bad", prompt="p", schedule={"kind": "cron", "expr": "nope"})
    assert bad.is_error and bad.content.startswith("Invalid schedule: Invalid cron expression 'nope'")
    duplicate = tool(bob, "CronAdd", name="water", prompt="p", schedule={"kind": "interval", "every_ms": 60000})
    assert duplicate.is_error and duplicate.content == "Cron add error: A job named 'water' already exists"
    assert tool(bob, "CronRemove", name="water").content == "Removed job 'water'."
    assert CronJob.select().count() == 0


def test_heartbeat_wake(app, config):
    admin, bob = ToolContext(config, "admin", True, "s1"), ToolContext(config, "bob", False, "s2")
    assert "natural schedule" in tool(bob, "HeartbeatWake").content
    assert tool(admin, "HeartbeatWake", mode="now").is_error  # no heartbeat job yet
    assert tool(bob, "HeartbeatWake", mode="now").is_error
    (config.config_dir / "HEARTBEAT.md").write_text("Look around.")
    from starpod.scheduler.lifecycle import ensure_heartbeat
    ensure_heartbeat(config, 1_800_000_000)
    assert tool(admin, "HeartbeatWake", mode="now", message="Also check mail").content == \
        "Heartbeat will fire on the next scheduler tick."
    run = CronRun.get()
    assert run.status == "pending" and run.note == "Also check mail"


def test_the_model_schedules_through_the_tool(client, users, fake_provider):
    fake_provider.script(
        Reply(tool_calls=[ToolCall("CronAdd", {"name": "standup", "prompt": "Remind me of the standup",
                                               "schedule": {"kind": "cron", "expr": "0 9 * * 1-5"}})]),
        Reply("Scheduled."))
    bob_user, bob_key = users["bob"]
    response = call(client, "POST", "/api/chat", bob_key, json={"text": "remind me every weekday at 9"})
    assert response.status_code == 200, response.json
    assert "CronAdd" in {t["name"] for t in fake_provider.requests[0].body["tools"]}
    tool_result = fake_provider.requests[1].body["messages"][-1]["content"][0]
    assert "Scheduled job 'standup'" in str(tool_result)
    assert [j["name"] for j in call(client, "GET", "/api/cron/jobs", bob_key).json] == ["standup"]
    assert CronJob.get().user_id == bob_user.id


# --- execution and CLI commands ----------------------------------------------------------------

def test_jobs_run_as_their_owner_through_the_pipeline(client, users, fake_provider, config):
    from starpod import accounts
    from starpod.scheduler.engine import JobContext, JobFailed
    from starpod.scheduler.execute import run_job

    bob = users["bob"][0]
    fake_provider.default = Reply("It is done.")
    first = run_job(config, JobContext("main-job", "tidy up", "main", bob.id))
    second = run_job(config, JobContext("main-job", "tidy up again", "main", bob.id))
    isolated = run_job(config, JobContext("solo", "look around", "isolated", bob.id))
    assert first[0] == second[0] != isolated[0] and first[1] == "It is done."
    system = fake_provider.requests[-1].body["system"]
    assert "EXECUTION CONTEXT" in str(system) and "scheduled cron job" in str(system)
    session = call(client, "GET", f"/api/sessions/{first[0]}", users["bob"][1]).json
    assert session["user_id"] == bob.id and session["is_read"] is False
    assert (session["channel"], session["origin"]) == ("main", "scheduler")
    solo = call(client, "GET", f"/api/sessions/{isolated[0]}", users["bob"][1]).json
    assert solo["channel_session_key"].startswith("scheduler:") and solo["origin"] == "scheduler"
    assert "Bash" not in {t["name"] for t in fake_provider.requests[-1].body["tools"]}  # not an admin

    assert run_job(config, JobContext(store.HEARTBEAT, "", "main", None)) == ("", "skipped")  # blank file
    (config.config_dir / "HEARTBEAT.md").write_text("heartbeat-instructions")
    run_job(config, JobContext(store.HEARTBEAT, "", "main", None, note="wake-note"))
    request = fake_provider.requests[-1].body
    assert request["messages"][-1]["content"][-1]["text"] == "wake-note\n\nheartbeat-instructions"
    assert "heartbeat run" in str(request["system"])

    accounts.set_user_active(bob.id, False)
    with pytest.raises(JobFailed, match="deactivated"):
        run_job(config, JobContext("solo", "look around", "isolated", bob.id))


def test_cli_commands(app, config):
    from starpod.errors import StarpodError
    from starpod.scheduler import commands

    added = commands.cron_add(config, "nightly", "Back up the notes", "0 2 * * *", timezone="Europe/Rome")
    assert added["user_id"] is None and added["schedule"] == {"kind": "cron", "expr": "0 2 * * *"}
    commands.cron_add(config, "pulse", "Ping", "every:60000", user_id="bob")
    commands.cron_add(config, "later", "Once", "at:2099-01-01T09:00:00")
    assert [j["name"] for j in commands.cron_list(config)] == ["later", "nightly", "pulse"]
    assert [j["name"] for j in commands.cron_list(config, "bob")] == ["pulse"]
    assert set(commands.cron_run(config, "nightly")) == {"run_id"}
    with pytest.raises(StarpodError) as error:
        commands.cron_add(config, "broken", "x", "every:soon")
    assert error.value.status == 400
    with pytest.raises(StarpodError) as error:
        commands.cron_remove(config, "pulse")  # bob's job is not agent-level
    assert error.value.status == 404
    commands.cron_remove(config, "pulse", user_id="bob")
    assert [j["name"] for j in commands.cron_list(config)] == ["later", "nightly"]
