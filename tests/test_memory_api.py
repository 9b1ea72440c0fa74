"""`GET /api/memory/search` and `POST /api/memory/reindex`: in-process app and real gunicorn workers,
with the memory index on the run's engine (`memory_engine`)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from starpod.memory import get_store

from . import pgtest
from .memory_engines import memory_engine  # noqa: F401  (the engine fixture)
from .support import live_server


def store_of(app):
    return get_store(app.config["STARPOD"])


def search(client, q, key=None, **params):
    headers = {"X-API-Key": key} if key else {}
    return client.get("/api/memory/search", query_string={"q": q, **params}, headers=headers)


def test_search_returns_items_in_order(client, app):
    store_of(app).write("knowledge/rust.md", "ownership and borrowing in rust\nsecond line")
    response = search(client, "rust borrowing")
    assert response.status_code == 200
    assert response.json == [{"source": "knowledge/rust.md", "text": "ownership and borrowing in rust\nsecond line",
                              "line_start": 1, "line_end": 2}]
    assert search(client, "Aster").json[0]["source"] == "SOUL.md"


@pytest.mark.parametrize("q", ["user's", "foo-bar", "a.md", "hello!", "AND", "NOT", '"', "(x", "col:x", "*", "a\x00b",
                               "NEAR(a b)", "x" * 5000])
def test_search_never_fails_on_syntax(client, q):
    response = search(client, q)
    assert response.status_code == 200 and isinstance(response.json, list)


@pytest.mark.parametrize("params, status", [
    ({}, 400), ({"q": ""}, 400), ({"q": "   "}, 400), ({"q": "x", "limit": "0"}, 400),
    ({"q": "x", "limit": "101"}, 400), ({"q": "x", "limit": "-1"}, 400), ({"q": "x", "limit": "abc"}, 422),
    ({"q": "x", "limit": "100"}, 200), ({"q": "x", "limit": "1"}, 200),
])
def test_search_validation(client, params, status):
    response = client.get("/api/memory/search", query_string=params)
    assert response.status_code == status
    if status != 200:
        assert "error" in response.json


def test_limit_caps_results(client, app):
    for i in range(15):
        store_of(app).write(f"n/{i}.md", f"gecko number {i}")
    assert len(search(client, "gecko").json) == 10
    assert len(search(client, "gecko", limit=3).json) == 3
    assert len(search(client, "gecko", limit=100).json) == 15


def test_auth_required_and_private_spaces(client, app, make_user, admin):
    alice, alice_key = make_user(display_name="Alice")
    bob, bob_key = make_user(display_name="Bob")
    store = store_of(app)
    store.write("MEMORY.md", "alice likes quokkas", alice.id)
    store.write("knowledge/animals.md", "quokkas live in Australia")
    assert search(client, "quokkas").status_code == 401
    assert client.post("/api/memory/reindex").status_code == 401
    assert {h["source"] for h in search(client, "quokkas", alice_key).json} == {
        f"users/{alice.id}/MEMORY.md", "knowledge/animals.md"}
    assert [h["source"] for h in search(client, "quokkas", bob_key).json] == ["knowledge/animals.md"]
    # Admins search the shared space and their own, not other users' spaces.
    assert [h["source"] for h in search(client, "quokkas", admin[1]).json] == ["knowledge/animals.md"]


def test_reindex_endpoint_picks_up_hand_edits(client, app, admin_headers):
    home = app.config["STARPOD"].home
    (home / "knowledge" / "hand.md").write_text("tapir written by hand")
    assert search(client, "tapir", admin_headers["X-API-Key"]).json == []
    response = client.post("/api/memory/reindex", headers=admin_headers)
    assert response.status_code == 200
    assert response.json["status"] == "ok" and response.json["indexed"] >= 1
    assert [h["source"] for h in search(client, "tapir", admin_headers["X-API-Key"]).json] == ["knowledge/hand.md"]


def test_openapi_documents_memory_routes(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert "get" in paths["/api/memory/search"] and "post" in paths["/api/memory/reindex"]


# --- real gunicorn, two workers --------------------------------------------------------------

ADMIN_KEY = "sp_live_" + "ab" * 20


def test_two_workers_start_reindex_concurrently_and_restart(tmp_path):
    home = tmp_path / ".starpod"
    (home / "knowledge").mkdir(parents=True)
    (home / "knowledge" / "before.md").write_text("okapi placed before the first start")
    env = {"STARPOD_API_KEY": ADMIN_KEY}
    key = ADMIN_KEY
    with live_server(home, workers=2, env=env) as server:
        get = lambda q: server.get("/api/memory/search", key, params={"q": q, "limit": 100})  # noqa: E731
        assert [h["source"] for h in get("okapi").json()] == ["knowledge/before.md"]
        for i in range(40):
            (home / "knowledge" / f"bulk{i}.md").write_text(f"bulk ibex number {i}")

        def hit(i):
            return server.request("POST", "/api/memory/reindex", key).status_code if i % 2 else get("ibex").status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(hit, range(16))) == {200}
        assert len(get("ibex").json()) == 40
        (home / "knowledge" / "bulk0.md").unlink()
        assert server.request("POST", "/api/memory/reindex", key).json()["removed"] == 1
        assert len(get("ibex").json()) == 39
    with live_server(home, workers=2, env=env) as server:
        assert len(server.get("/api/memory/search", key, params={"q": "ibex", "limit": 100}).json()) == 39
        assert "memory reindex done" in server.log_text()


def test_cli_reindex(app, capsys, monkeypatch):
    from starpod.cli import main

    home = app.config["STARPOD"].home
    monkeypatch.setenv("DATABASE_URL", app.config["STARPOD"].database_url or "")
    (home / "knowledge" / "cli.md").write_text("cassowary from the command line")
    assert main(["--home", str(home), "memory", "reindex"]) == 0
    assert "1 indexed" in capsys.readouterr().out
    assert main(["--home", str(home), "memory", "reindex", "--full"]) == 0
    assert " 0 removed" in capsys.readouterr().out
    assert [h.path for h in store_of(app).search("cassowary", None)] == ["knowledge/cli.md"]


def test_doctor_checks_the_index_on_its_engine(app, capsys, monkeypatch, memory_engine):
    import json

    from starpod.cli import main

    home = app.config["STARPOD"].home
    store_of(app).write("knowledge/doc.md", "checked by the doctor")

    def memory_check() -> dict:
        main(["--home", str(home), "doctor", "--json", "--port", "0"])
        return next(c for c in json.loads(capsys.readouterr().out) if c["check"] == "memory index")

    monkeypatch.setenv("DATABASE_URL", app.config["STARPOD"].database_url or "")
    check = memory_check()
    assert check["status"] == "ok"
    on_postgresql = bool(app.config["STARPOD"].database_url)  # the PostgreSQL test run puts both here
    assert check["detail"] == (f"PostgreSQL: {store_of(app).index.chunk_count()} chunks" if on_postgresql
                               else "memory.db: integrity ok")
    if memory_engine.name == "postgresql":
        monkeypatch.setenv("DATABASE_URL", pgtest.absent_database_url())
        check = memory_check()
        assert check["status"] == "FAIL" and "does not exist" in check["detail"]
