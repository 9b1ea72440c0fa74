"""Per-user memory files over /api/settings/users in-process: listing, reading, atomic writes that
memory search sees at once, unknown users, validation and admin-only access."""
from __future__ import annotations

import pytest

from starpod.memory.paths import MAX_CONTENT_BYTES

USERS = "/api/settings/users"


@pytest.fixture
def people(make_user, admin_headers, home):
    bob, bob_key = make_user("user", display_name="Bob")
    carol, _ = make_user("user", display_name="Carol")
    logs = home / "users" / bob.id / "memory"
    logs.mkdir(parents=True)
    for name in ("2026-01-01.md", "2026-01-02.md", "notes.txt"):
        (logs / name).write_text("x")
    (home / "users" / bob.id / "USER.md").write_text("# Bob\nLikes tea.\n")
    (home / "users" / "telegram-42" / "memory").mkdir(parents=True)  # a space without an account
    return {"admin": admin_headers, "bob": bob, "bob_key": bob_key, "carol": carol}


def test_list_shows_accounts_then_other_spaces(client, people, admin):
    r = client.get(USERS, headers=people["admin"])
    assert r.status_code == 200
    rows = {row["id"]: row for row in r.get_json()}
    assert [row["id"] for row in r.get_json()] == [admin[0].id, people["bob"].id, people["carol"].id, "telegram-42"]
    assert rows[people["bob"].id] == {"id": people["bob"].id, "has_user_md": True, "has_memory_md": False,
                                      "daily_log_count": 2}
    assert rows[people["carol"].id] == {"id": people["carol"].id, "has_user_md": False, "has_memory_md": False,
                                        "daily_log_count": 0}
    assert rows["telegram-42"]["daily_log_count"] == 0


def test_get_reads_without_creating(client, people, home):
    bob = client.get(f"{USERS}/{people['bob'].id}", headers=people["admin"]).get_json()
    assert bob == {"id": people["bob"].id, "user_md": "# Bob\nLikes tea.\n", "memory_md": "", "daily_log_count": 2}
    carol = client.get(f"{USERS}/{people['carol'].id}", headers=people["admin"]).get_json()
    assert (carol["user_md"], carol["memory_md"]) == ("", "")
    assert not (home / "users" / people["carol"].id).exists()


def test_put_writes_and_reindexes_at_once(client, people, home):
    bob_id = people["bob"].id
    r = client.put(f"{USERS}/{bob_id}", json={"memory_md": "# Memory\nBob's cat is named Zanzibarquux.\n"},
                   headers=people["admin"])
    assert r.status_code == 200
    assert r.get_json()["memory_md"] == "# Memory\nBob's cat is named Zanzibarquux.\n"
    assert r.get_json()["user_md"] == "# Bob\nLikes tea.\n"  # untouched
    assert (home / "users" / bob_id / "MEMORY.md").read_text().endswith("Zanzibarquux.\n")
    assert not list((home / "users" / bob_id).glob(".*.tmp"))
    hits = client.get("/api/memory/search?q=Zanzibarquux", headers={"X-API-Key": people["bob_key"]}).get_json()
    assert [h["source"] for h in hits] == [f"users/{bob_id}/MEMORY.md"]
    # Replaced text is gone from the index too.
    client.put(f"{USERS}/{bob_id}", json={"memory_md": "Nothing here", "user_md": "# Bob\nPrefers coffee now.\n"},
               headers=people["admin"])
    bob_search = {"X-API-Key": people["bob_key"]}
    assert client.get("/api/memory/search?q=Zanzibarquux", headers=bob_search).get_json() == []
    assert client.get("/api/memory/search?q=coffee", headers=bob_search).get_json()[0]["source"] == \
        f"users/{bob_id}/USER.md"


def test_put_creates_the_space_of_an_account_without_one(client, people, home):
    carol_id = people["carol"].id
    r = client.put(f"{USERS}/{carol_id}", json={"user_md": "# Carol\n"}, headers=people["admin"])
    assert r.status_code == 200 and r.get_json()["user_md"] == "# Carol\n"
    assert (home / "users" / carol_id / "USER.md").read_text() == "# Carol\n"


@pytest.mark.parametrize("method,body", [("get", None), ("put", {"user_md": "x"})])
@pytest.mark.parametrize("user_id", ["nobody", "..", "a%2Fb", "bad%20id"])
def test_unknown_user_is_404(client, people, method, body, user_id, home):
    r = getattr(client, method)(f"{USERS}/{user_id}", json=body, headers=people["admin"])
    assert r.status_code == 404 and r.get_json()["error"]
    assert not (home / "users" / "nobody").exists()


@pytest.mark.parametrize("body,status,field", [({}, 400, "user_md"), ({"user_md": None, "memory_md": None}, 400, "memory_md"),
                                               ({"user_md": 5}, 422, "user_md"), ({"memory_md": ["x"]}, 422, "memory_md"),
                                               ({"user_md": "\ud800"}, 422, "user_md")])
def test_bad_bodies(client, people, body, status, field):
    r = client.put(f"{USERS}/{people['bob'].id}", json=body, headers=people["admin"])
    assert r.status_code == status and field in r.get_json()["fields"]


def test_oversized_file_is_413_and_writes_nothing(client, people, home):
    r = client.put(f"{USERS}/{people['bob'].id}", json={"user_md": "new", "memory_md": "m" * (MAX_CONTENT_BYTES + 1)},
                   headers=people["admin"])
    assert r.status_code == 413
    assert (home / "users" / people["bob"].id / "USER.md").read_text() == "# Bob\nLikes tea.\n"


def test_admin_only_auth_first_and_json_only(client, people):
    user = {"X-API-Key": people["bob_key"]}
    assert client.get(USERS, headers=user).status_code == 403
    assert client.get(f"{USERS}/{people['bob'].id}", headers=user).status_code == 403
    assert client.put(f"{USERS}/{people['bob'].id}", json={"user_md": "x"}, headers=user).status_code == 403
    assert client.put(f"{USERS}/{people['bob'].id}", data="{bad", content_type="application/json").status_code == 401
    assert client.put(f"{USERS}/{people['bob'].id}", data="{bad", content_type="application/json",
                      headers=people["admin"]).status_code == 400
    assert client.put(f"{USERS}/{people['bob'].id}", data="x", content_type="text/plain",
                      headers=people["admin"]).status_code == 415


def test_user_memory_in_openapi(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert {"200", "401", "403"} <= set(paths[USERS]["get"]["responses"])
    item = paths[f"{USERS}/{{user_id}}"]
    assert {"200", "404"} <= set(item["get"]["responses"])
    assert {"200", "400", "404", "413", "415", "422"} <= set(item["put"]["responses"])
