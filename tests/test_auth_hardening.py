"""Authentication hardening (issue 10): revocation that holds when the generation hint cannot be
written, wrong keys behind a known prefix (failed-key cache, per-source throttle), and the last
active admin's last key."""
from __future__ import annotations

import time

import pytest

from starpod import accounts
from starpod.authcache import FAILURE_LIMIT
from starpod.db import database
from starpod.models import ApiKey

REVOKE = "/api/settings/auth/api-keys/{}/revoke"
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def wrong_key_behind(key: str, n: int) -> str:
    """A key with the same lookup prefix as `key` but another secret."""
    return key[:16] + f"{n:032x}"


def key_id_of(user_id: str) -> str:
    return accounts.list_api_keys(user_id)[0].id


# --- revocation without the hint file ------------------------------------------------------------

def test_revoke_answers_200_when_the_hint_cannot_be_written(client, admin, make_user):
    user, key = make_user("user")
    assert client.get("/api/sessions", headers={"X-API-Key": key}).status_code == 200
    hint = accounts.cache.generation.hint.path
    hint.unlink(missing_ok=True)
    hint.mkdir()  # os.replace onto a directory fails
    (hint / "keep").write_text("")
    response = client.post(REVOKE.format(key_id_of(user.id)), headers={"X-API-Key": admin[1]})
    assert (response.status_code, response.json) == (200, {"status": "ok"})
    assert client.get("/api/sessions", headers={"X-API-Key": key}).status_code == 401
    assert [p.name for p in hint.parent.iterdir() if p.name.startswith(".auth.generation")] == []


def test_a_change_committed_elsewhere_is_seen_without_the_hint(app, make_user):
    """Another worker revoked the key and could not write the hint: the counter alone suffices."""
    user, key = make_user("user")
    assert accounts.authenticate(key).user_id == user.id
    with database.atomic():
        ApiKey.update(revoked_at="2026-01-01T00:00:00.000000Z").where(ApiKey.user == user.id).execute()
        accounts.bump_generation()
    deadline = time.monotonic() + 30
    while accounts.authenticate(key) is not None:
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        time.sleep(0.05)


# --- wrong keys behind a known prefix ---------------------------------------------------------------

def test_a_failed_key_is_not_verified_again(client, admin, count_verifications):
    wrong = wrong_key_behind(admin[1], 1)
    for _ in range(5):
        response = client.get("/api/sessions", headers={"X-API-Key": wrong})
        assert (response.status_code, response.json) == (401, {"error": "Invalid API key"})
    assert count_verifications == [wrong]


def test_failed_verifications_are_throttled_per_source(client, admin, count_verifications):
    attacker = {"REMOTE_ADDR": "10.0.0.66"}
    for n in range(FAILURE_LIMIT):
        response = client.get("/api/sessions", headers={"X-API-Key": wrong_key_behind(admin[1], n)},
                              environ_base=attacker)
        assert response.status_code == 401
    throttled = client.get("/api/sessions", headers={"X-API-Key": wrong_key_behind(admin[1], 999)},
                           environ_base=attacker)
    assert throttled.status_code == 429
    assert "failed authentication attempts" in throttled.json["error"]
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert len(count_verifications) == FAILURE_LIMIT  # the throttled attempt ran no argon2

    handshake = client.get("/ws?token=" + wrong_key_behind(admin[1], 998), environ_base=attacker,
                           headers=UPGRADE)
    assert handshake.status_code == 429 and handshake.headers["Retry-After"]
    other_source = client.get("/api/sessions", headers={"X-API-Key": wrong_key_behind(admin[1], 997)},
                              environ_base={"REMOTE_ADDR": "10.0.0.67"})
    assert other_source.status_code == 401


def test_a_key_verified_before_still_works_from_a_throttled_source(client, admin):
    attacker = {"REMOTE_ADDR": "10.0.0.68"}
    assert client.get("/api/sessions", headers={"X-API-Key": admin[1]}, environ_base=attacker).status_code == 200
    for n in range(FAILURE_LIMIT):
        client.get("/api/sessions", headers={"X-API-Key": wrong_key_behind(admin[1], n)}, environ_base=attacker)
    assert client.get("/api/sessions", headers={"X-API-Key": admin[1]}, environ_base=attacker).status_code == 200


def test_a_failed_key_works_once_its_owner_is_reactivated(client, admin, make_user):
    user, key = make_user("user")
    headers = {"X-API-Key": admin[1]}
    assert client.post(f"/api/settings/auth/users/{user.id}/deactivate", headers=headers).status_code == 200
    assert client.get("/api/sessions", headers={"X-API-Key": key}).status_code == 401
    assert client.post(f"/api/settings/auth/users/{user.id}/activate", headers=headers).status_code == 200
    assert client.get("/api/sessions", headers={"X-API-Key": key}).status_code == 200


# --- the last active admin's last key ---------------------------------------------------------------

LAST_KEY = "Cannot revoke the last active API key of the last active admin"


def test_last_active_admin_cannot_revoke_their_last_key(client, admin):
    user, key = admin
    response = client.post(REVOKE.format(key_id_of(user.id)), headers={"X-API-Key": key})
    assert (response.status_code, response.json) == (409, {"error": LAST_KEY})
    assert client.get("/api/sessions", headers={"X-API-Key": key}).status_code == 200


def test_last_active_admin_may_revoke_a_key_while_another_works(client, admin):
    user, first = admin
    first_id = key_id_of(user.id)
    second = client.post(f"/api/settings/auth/users/{user.id}/api-keys", headers={"X-API-Key": first},
                         json={"label": "spare"}).json
    assert client.post(REVOKE.format(first_id), headers={"X-API-Key": second["key"]}).status_code == 200
    again = client.post(REVOKE.format(second["meta"]["id"]), headers={"X-API-Key": second["key"]})
    assert (again.status_code, again.json) == (409, {"error": LAST_KEY})


@pytest.mark.parametrize("expired", [True, False])
def test_an_expired_spare_key_does_not_count(client, admin, expired):
    user, key = admin
    spare, _ = accounts.create_api_key(user.id, "spare")
    if expired:
        ApiKey.update(expires_at="2020-01-01T00:00:00.000000Z").where(ApiKey.id == spare.id).execute()
    own_id = next(k.id for k in accounts.list_api_keys(user.id) if k.id != spare.id)
    response = client.post(REVOKE.format(own_id), headers={"X-API-Key": key})
    assert response.status_code == (409 if expired else 200)


def test_an_admin_key_may_be_revoked_while_another_admin_is_active(client, admin, make_user):
    other_admin, other_key = make_user("admin")
    response = client.post(REVOKE.format(key_id_of(admin[0].id)), headers={"X-API-Key": other_key})
    assert response.status_code == 200
