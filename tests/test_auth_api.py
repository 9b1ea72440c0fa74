"""The auth pipeline and auth routes through the real app: verify, users, keys, Telegram links,
error format, CORS, rate limiting, the OpenAPI document."""
from __future__ import annotations

import pytest

from starpod import accounts

MISSING = "Missing API key \u2014 set X-API-Key header"


def write_agent_toml(app, text: str) -> None:
    config = app.config["STARPOD"]
    config.agent_toml_path.write_text(text)
    config.live_agent.reload()


# --- verify and health ---------------------------------------------------------------------

def test_health_is_public(client, admin):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "version": "0.1.0"}


def test_verify_before_bootstrap_reports_auth_disabled(client):
    body = client.get("/api/auth/verify", headers={"X-API-Key": "whatever"}).json
    assert body == {"authenticated": True, "auth_disabled": True}


def test_verify_without_or_with_bad_key(client, admin):
    for headers in ({}, {"X-API-Key": "sp_live_" + "0" * 40}, {"X-API-Key": ""}):
        response = client.get("/api/auth/verify", headers=headers)
        assert response.status_code == 200
        assert response.json == {"authenticated": False, "auth_disabled": False}


def test_verify_valid_key_returns_user(client, admin):
    user, key = admin
    body = client.get("/api/auth/verify", headers={"X-API-Key": key}).json
    assert body == {"authenticated": True, "auth_disabled": False,
                    "user": {"id": user.id, "display_name": "Alice", "role": "admin"}}


# --- the pipeline --------------------------------------------------------------------------

def test_no_users_means_open_access(client):
    assert client.get("/api/settings/auth/users").status_code == 200


def test_missing_and_invalid_keys(client, admin):
    missing = client.get("/api/settings/auth/users")
    assert (missing.status_code, missing.json) == (401, {"error": MISSING})
    invalid = client.get("/api/settings/auth/users", headers={"X-API-Key": "sp_live_" + "1" * 40})
    assert (invalid.status_code, invalid.json) == (401, {"error": "Invalid API key"})


def test_bearer_and_query_tokens_are_not_accepted(client, admin):
    _, key = admin
    assert client.get("/api/settings/auth/users", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert client.get(f"/api/settings/auth/users?token={key}").status_code == 401


def test_non_admin_gets_403(client, admin, make_user):
    _, key = make_user("user")
    response = client.get("/api/settings/auth/users", headers={"X-API-Key": key})
    assert (response.status_code, response.json) == (403, {"error": "Admin access required"})


def test_auth_is_checked_before_the_body(client, admin):
    response = client.post("/api/settings/auth/users", data="{not json", content_type="application/json")
    assert response.status_code == 401
    response = client.put("/api/settings/auth/users/x/telegram", json={"telegram_id": "nope"})
    assert response.status_code == 401


def test_deactivated_user_and_revoked_key_are_refused(client, admin, admin_headers, make_user):
    user, key = make_user("user")
    assert client.get("/api/auth/verify", headers={"X-API-Key": key}).json["authenticated"]
    client.post(f"/api/settings/auth/users/{user.id}/deactivate", headers=admin_headers)
    assert not client.get("/api/auth/verify", headers={"X-API-Key": key}).json["authenticated"]
    client.post(f"/api/settings/auth/users/{user.id}/activate", headers=admin_headers)
    assert client.get("/api/auth/verify", headers={"X-API-Key": key}).json["authenticated"]
    key_id = accounts.list_api_keys(user.id)[0].id
    assert client.post(f"/api/settings/auth/api-keys/{key_id}/revoke", headers=admin_headers).json == {"status": "ok"}
    assert not client.get("/api/auth/verify", headers={"X-API-Key": key}).json["authenticated"]


def test_rate_limit_returns_429_with_retry_after(app, client, admin_headers):
    write_agent_toml(app, "[auth]\nrate_limit_requests = 1\nrate_limit_window_secs = 60\n")
    assert client.get("/api/settings/auth/users", headers=admin_headers).status_code == 200
    response = client.get("/api/settings/auth/users", headers=admin_headers)
    assert (response.status_code, response.json) == (429, {"error": "Rate limit exceeded"})
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # verify and health are never rate-limited
    assert client.get("/api/auth/verify", headers=admin_headers).json["authenticated"]
    assert client.get("/api/health").status_code == 200


def test_rate_limit_counts_forbidden_requests(app, client, admin, make_user):
    write_agent_toml(app, "[auth]\nrate_limit_requests = 1\n")
    _, key = make_user("user")
    assert client.get("/api/settings/auth/users", headers={"X-API-Key": key}).status_code == 403
    assert client.get("/api/settings/auth/users", headers={"X-API-Key": key}).status_code == 429


# --- users ---------------------------------------------------------------------------------

def test_user_crud(client, admin, admin_headers):
    created = client.post("/api/settings/auth/users", json={"email": "bob@x", "display_name": "Bob"},
                          headers=admin_headers)
    assert created.status_code == 201
    bob = created.json
    assert set(bob) == {"id", "email", "display_name", "role", "is_active", "created_at", "updated_at"}
    assert (bob["role"], bob["is_active"], bob["created_at"] == bob["updated_at"]) == ("user", True, True)
    assert bob["created_at"].endswith("Z")
    listed = client.get("/api/settings/auth/users", headers=admin_headers).json
    assert [u["id"] for u in listed] == [admin[0].id, bob["id"]]
    updated = client.put(f"/api/settings/auth/users/{bob['id']}", json={"role": "admin", "email": None},
                         headers=admin_headers).json
    assert (updated["role"], updated["email"], updated["display_name"]) == ("admin", "bob@x", "Bob")
    assert updated["updated_at"] > bob["updated_at"]
    assert client.get(f"/api/settings/auth/users/{bob['id']}", headers=admin_headers).json == updated


def test_user_errors(client, admin, admin_headers):
    client.post("/api/settings/auth/users", json={"email": "dup@x"}, headers=admin_headers)
    dup = client.post("/api/settings/auth/users", json={"email": "dup@x"}, headers=admin_headers)
    assert (dup.status_code, dup.json) == (409, {"error": "Email already in use"})
    bad_role = client.post("/api/settings/auth/users", json={"role": "superuser"}, headers=admin_headers)
    assert bad_role.status_code == 422 and "role" in bad_role.json["fields"]
    malformed = client.post("/api/settings/auth/users", data="{oops", content_type="application/json",
                            headers=admin_headers)
    assert malformed.status_code == 400 and "error" in malformed.json
    for method in ("get", "put"):
        response = getattr(client, method)("/api/settings/auth/users/unknown", json={}, headers=admin_headers)
        assert (response.status_code, response.json) == (404, {"error": "User not found"})
    for action in ("activate", "deactivate"):
        assert client.post(f"/api/settings/auth/users/unknown/{action}", headers=admin_headers).status_code == 404
    assert client.delete(f"/api/settings/auth/users/{admin[0].id}", headers=admin_headers).status_code == 405


def test_last_admin_guard_and_self_deactivation(client, admin, admin_headers):
    admin_id = admin[0].id
    demote = client.put(f"/api/settings/auth/users/{admin_id}", json={"role": "user"}, headers=admin_headers)
    assert (demote.status_code, demote.json) == (409, {"error": "Cannot remove the last active admin"})
    self_off = client.post(f"/api/settings/auth/users/{admin_id}/deactivate", headers=admin_headers)
    assert (self_off.status_code, self_off.json) == (400, {"error": "Cannot deactivate yourself"})
    other = client.post("/api/settings/auth/users", json={"role": "admin"}, headers=admin_headers).json
    assert client.post(f"/api/settings/auth/users/{other['id']}/deactivate", headers=admin_headers).status_code == 200
    assert client.put(f"/api/settings/auth/users/{admin_id}", json={"role": "user"},
                      headers=admin_headers).status_code == 409


# --- API keys ------------------------------------------------------------------------------

def test_api_key_lifecycle(client, admin, admin_headers):
    user = client.post("/api/settings/auth/users", json={}, headers=admin_headers).json
    created = client.post(f"/api/settings/auth/users/{user['id']}/api-keys", json={"label": "web"},
                          headers=admin_headers)
    assert created.status_code == 201
    meta, key = created.json["meta"], created.json["key"]
    assert key.startswith("sp_live_") and meta["prefix"] == key[8:16] and meta["label"] == "web"
    assert set(meta) == {"id", "user_id", "prefix", "label", "expires_at", "revoked_at", "last_used_at", "created_at"}
    no_body = client.post(f"/api/settings/auth/users/{user['id']}/api-keys", headers=admin_headers)
    assert no_body.status_code == 201 and no_body.json["meta"]["label"] is None
    listed = client.get(f"/api/settings/auth/users/{user['id']}/api-keys", headers=admin_headers).json
    assert [k["id"] for k in listed] == [no_body.json["meta"]["id"], meta["id"]]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert client.get("/api/settings/auth/users/unknown/api-keys", headers=admin_headers).json == []
    missing_user = client.post("/api/settings/auth/users/unknown/api-keys", json={}, headers=admin_headers)
    assert (missing_user.status_code, missing_user.json) == (404, {"error": "User not found"})


def test_revoke_keeps_first_time_and_404s_unknown(client, admin, admin_headers):
    user_id = admin[0].id
    record, _ = accounts.create_api_key(user_id, "spare")
    client.post(f"/api/settings/auth/api-keys/{record.id}/revoke", headers=admin_headers)
    first = accounts.list_api_keys(user_id)[0].revoked_at
    client.post(f"/api/settings/auth/api-keys/{record.id}/revoke", headers=admin_headers)
    assert accounts.list_api_keys(user_id)[0].revoked_at == first
    unknown = client.post("/api/settings/auth/api-keys/nope/revoke", headers=admin_headers)
    assert (unknown.status_code, unknown.json) == (404, {"error": "API key not found"})


# --- Telegram ------------------------------------------------------------------------------

def test_telegram_link_crud(client, admin, admin_headers):
    url = f"/api/settings/auth/users/{admin[0].id}/telegram"
    assert client.get(url, headers=admin_headers).json == {}
    linked = client.put(url, json={"telegram_id": 12345, "username": "alice_tg"}, headers=admin_headers)
    assert linked.status_code == 200
    assert (linked.json["telegram_id"], linked.json["username"]) == (12345, "alice_tg")
    assert linked.json["linked_at"].endswith("+00:00")
    assert client.get(url, headers=admin_headers).json["telegram_id"] == 12345
    assert client.delete(url, headers=admin_headers).json == {"status": "ok"}
    assert client.get(url, headers=admin_headers).json == {}


@pytest.mark.parametrize("body, status", [({}, 422), ({"telegram_id": "12"}, 422), ({"telegram_id": 1.5}, 422),
                                          ({"telegram_id": 0}, 400), ({"telegram_id": -5}, 400)])
def test_telegram_link_validation(client, admin, admin_headers, body, status):
    response = client.put(f"/api/settings/auth/users/{admin[0].id}/telegram", json=body, headers=admin_headers)
    assert response.status_code == status and "error" in response.json


def test_telegram_link_unknown_user_is_404_even_without_auth(client):
    response = client.put("/api/settings/auth/users/nobody/telegram", json={"telegram_id": 1})
    assert response.status_code == 404


# --- framework behaviour -------------------------------------------------------------------

def test_framework_errors_are_json(client, admin_headers):
    assert client.get("/api/does-not-exist").json == {"error": "Not found"}
    not_allowed = client.delete("/api/health")
    assert not_allowed.status_code == 405 and not_allowed.json == {"error": "Method not allowed"}


def test_request_too_large_is_json_413(app, client, admin_headers):
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = client.post("/api/settings/auth/users", data="x" * 1000, content_type="application/json",
                           headers=admin_headers)
    assert response.status_code == 413 and "error" in response.json


def test_uncaught_exception_is_logged_json_500(app, client, monkeypatch, caplog):
    def explode():
        raise RuntimeError("boom")
    monkeypatch.setattr(accounts, "list_users", explode)
    response = client.get("/api/settings/auth/users")
    body = dict(response.json)
    request_id = body.pop("request_id")
    assert (response.status_code, body) == (500, {"error": "Internal server error"})
    assert "boom" in caplog.text and f"request {request_id}" in caplog.text


def test_cors(client, admin):
    preflight = client.options("/api/settings/auth/users", headers={
        "Origin": "http://ui", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "*"
    assert preflight.headers["Access-Control-Allow-Headers"] == "*"
    normal = client.get("/api/health")
    assert normal.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in normal.headers


def test_openapi_document_lists_auth_routes(client):
    spec = client.get("/api/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert "/api/auth/verify" in spec["paths"]
    create = spec["paths"]["/api/settings/auth/users"]["post"]
    assert create["security"] == [{"ApiKey": []}]
    assert "201" in create["responses"] and "403" in create["responses"]
