"""GET /api/usage in-process: per-day/per-model sums of stored runs, the window, user scoping, errors."""
from __future__ import annotations

from datetime import timedelta

import pytest

from starpod.models import Session, UsageStat
from starpod.timeutil import to_rfc3339, utcnow

from .conftest import make_config
from .fake_provider import Reply


@pytest.fixture
def config(home, fake_provider):
    return make_config(home, environ=fake_provider.environ())


def run_at(user_id: str, days_ago: int, model: str, input_tokens: int, output_tokens: int, cost: float) -> None:
    """A stored run of `user_id` stamped `days_ago` UTC days before now."""
    stamp = to_rfc3339(utcnow() - timedelta(days=days_ago))
    session = Session.create(user_id=user_id, created_at=stamp, last_message_at=stamp)
    UsageStat.create(session=session.id, input_tokens=input_tokens, output_tokens=output_tokens,
                     cache_read=1, cache_write=2, cost_usd=cost, model=model, timestamp=stamp)


def day(days_ago: int) -> str:
    return (utcnow() - timedelta(days=days_ago)).date().isoformat()


@pytest.fixture
def users(make_user):
    admin, admin_key = make_user("admin")
    bob, bob_key = make_user("user")
    carol, _ = make_user("user")
    run_at(bob.id, 0, "claude-haiku-4-5", 100, 10, 0.5)
    run_at(bob.id, 0, "gpt-4o", 200, 20, 1.0)
    run_at(bob.id, 3, "claude-haiku-4-5", 300, 30, 0.25)
    run_at(carol.id, 1, "claude-haiku-4-5", 1000, 100, 2.0)
    run_at(carol.id, 40, "claude-haiku-4-5", 9999, 999, 9.0)  # outside the default window
    return {"admin": {"X-API-Key": admin_key}, "bob": {"X-API-Key": bob_key}, "bob_id": bob.id, "carol_id": carol.id}


def get(client, headers, **params):
    return client.get("/api/usage", query_string=params, headers=headers)


def test_admin_sees_every_user_per_day_and_model(client, users):
    r = get(client, users["admin"])
    assert r.status_code == 200
    body = r.get_json()
    assert (body["days"], body["user_id"], body["until"], body["since"]) == (30, None, day(0), day(29))
    assert [d["date"] for d in body["daily"]] == [day(n) for n in range(29, -1, -1)]
    assert body["totals"] == {"input_tokens": 1600, "output_tokens": 160, "cache_read_tokens": 4,
                              "cache_write_tokens": 8, "cost_usd": pytest.approx(3.75), "runs": 4}
    today = body["daily"][-1]
    assert (today["input_tokens"], today["cost_usd"], today["runs"]) == (300, pytest.approx(1.5), 2)
    assert [(m["model"], m["input_tokens"], m["runs"]) for m in today["models"]] == \
        [("claude-haiku-4-5", 100, 1), ("gpt-4o", 200, 1)]
    assert body["daily"][-2]["input_tokens"] == 1000 and body["daily"][-4]["input_tokens"] == 300
    assert body["daily"][0] == {"date": day(29), "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                                "cache_write_tokens": 0, "cost_usd": 0.0, "runs": 0, "models": []}
    assert [(u["user_id"], u["runs"]) for u in body["users"]] == [(users["carol_id"], 1), (users["bob_id"], 3)]


def test_admin_filters_by_user_and_window(client, users):
    body = get(client, users["admin"], user_id=users["carol_id"], days=60).get_json()
    assert body["user_id"] == users["carol_id"] and len(body["daily"]) == 60
    assert body["totals"]["input_tokens"] == 10999 and body["totals"]["runs"] == 2
    assert [u["user_id"] for u in body["users"]] == [users["carol_id"]]
    only_today = get(client, users["admin"], days=1).get_json()
    assert [d["date"] for d in only_today["daily"]] == [day(0)] and only_today["totals"]["runs"] == 2
    assert get(client, users["admin"], user_id="nobody").get_json()["totals"]["runs"] == 0


def test_user_sees_only_their_own(client, users):
    body = get(client, users["bob"]).get_json()
    assert body["user_id"] == users["bob_id"]
    assert body["totals"]["input_tokens"] == 600 and body["totals"]["runs"] == 3
    assert [u["user_id"] for u in body["users"]] == [users["bob_id"]]
    assert get(client, users["bob"], user_id=users["bob_id"]).status_code == 200
    other = get(client, users["bob"], user_id=users["carol_id"])
    assert other.status_code == 403 and "error" in other.get_json()


@pytest.mark.parametrize("params,status,field", [({"days": 0}, 400, "days"), ({"days": 367}, 400, "days"),
                                                 ({"days": -5}, 400, "days"), ({"days": "abc"}, 422, "days"),
                                                 ({"days": "1.5"}, 422, "days"), ({"user_id": ""}, 400, "user_id")])
def test_bad_params_name_the_field(client, users, params, status, field):
    r = get(client, users["admin"], **params)
    assert r.status_code == status
    body = r.get_json()
    assert field in body["fields"] and field in body["error"]


def test_auth_comes_first(client, users):
    assert get(client, {}, days="abc").status_code == 401
    assert get(client, {"X-API-Key": "sp_live_" + "0" * 40}).status_code == 401


def test_a_real_chat_run_is_counted(client, fake_provider):
    fake_provider.script(Reply("hi", input_tokens=1234, output_tokens=56))
    assert client.post("/api/chat", json={"text": "hello"}).status_code == 200
    body = client.get("/api/usage?days=7").get_json()  # auth disabled: the anonymous caller is admin
    assert body["totals"]["input_tokens"] == 1234 and body["totals"]["output_tokens"] == 56
    assert body["daily"][-1]["models"][0]["model"] == "claude-haiku-4-5"
    assert body["users"][0]["user_id"] == "admin" and body["totals"]["cost_usd"] > 0


def test_usage_is_in_openapi(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    responses = paths["/api/usage"]["get"]["responses"]
    assert {"200", "400", "401", "403", "422", "429"} <= set(responses)
