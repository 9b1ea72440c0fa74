"""The `starpod` command, run as a real subprocess (`python -m starpod.cli`), plus start-up behaviour:
HOST binding (live server started by `starpod serve`) and no provider SDK imported at app load."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil
import pytest
import requests

from starpod import accounts, prepare_storage
from starpod.config import VERSION, Config
from starpod.db import database
from . import pgtest
from .support import GENERATED_KEY_RE, REPO, LiveServer

CLI_TIMEOUT = 120
KEY_RE = r"sp_live_[0-9a-f]{40}"


def cli_env(**extra: str) -> dict:
    """The caller's environment without anything that would pick a data directory, database, port or key."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and k not in ("STARPOD_HOME", "DATABASE_URL", "HOST", "PORT")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def starpod(*args, cwd, **env) -> subprocess.CompletedProcess:
    args = [str(arg) for arg in args]
    env = {**database_env(args, cwd, env), **env}
    return subprocess.run([sys.executable, "-m", "starpod.cli", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def database_env(args: list[str], cwd, env: dict) -> dict:
    """DATABASE_URL of the data directory the command uses, when the test run is on PostgreSQL."""
    home = args[args.index("--home") + 1] if "--home" in args else env.get("STARPOD_HOME", Path(cwd) / ".starpod")
    url = pgtest.database_url_for(home)
    return {"DATABASE_URL": url} if url else {}


def on_postgresql(home) -> bool:
    return pgtest.database_url_for(home) is not None


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An initialized data directory and the admin key `starpod init` printed for it."""
    workdir = tmp_path_factory.mktemp("cli")
    home = workdir / "data"
    result = ok(starpod("init", "--home", home, cwd=workdir))
    return home, GENERATED_KEY_RE.search(result.stdout).group(1)


# --- the command itself ------------------------------------------------------------------------

def test_help_and_version_are_starpods(tmp_path):
    version = ok(starpod("--version", cwd=tmp_path))
    assert version.stdout.strip() == f"starpod {VERSION}"
    usage = ok(starpod("--help", cwd=tmp_path)).stdout
    for command in ("init", "serve", "users", "keys", "memory", "doctor", "backup", "--home", "--json"):
        assert command in usage
    assert "routes" not in usage and "FLASK" not in usage


def test_refuses_to_create_a_data_directory_outside_init(tmp_path):
    for args in (["users", "list"], ["keys", "create", "someone"], ["memory", "reindex"], ["serve"],
                 ["backup", tmp_path / "b.tar.gz"]):
        result = starpod(*args, cwd=tmp_path)
        assert result.returncode == 1, args
        assert "starpod init" in result.stderr and "Traceback" not in result.stderr
    elsewhere = tmp_path / "elsewhere"
    result = starpod("--home", elsewhere, "users", "list", cwd=tmp_path)
    assert result.returncode == 1 and str(elsewhere) in result.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_init_prints_the_framed_key_once_and_says_where(tmp_path):
    result = ok(starpod("init", cwd=tmp_path))
    home = tmp_path / ".starpod"
    assert f"data directory {home}" in result.stderr
    key = GENERATED_KEY_RE.search(result.stdout).group(1)
    assert f'curl -H "X-API-Key: {key}" http://localhost:3000/api/auth/verify' in result.stdout
    assert "shown only this once" in result.stdout and "http://localhost:3000/" in result.stdout
    assert (home / "db" / "starpod.db").is_file() != on_postgresql(home)  # DATABASE_URL: no SQLite file
    assert (home / "config" / "SOUL.md").is_file()
    again = ok(starpod("init", cwd=tmp_path))
    assert "already initialized" in again.stdout and "sp_live_" not in again.stdout


def test_init_imports_starpod_api_key_and_logs_it(tmp_path):
    key = "sp_live_" + "ab" * 20
    result = ok(starpod("-v", "init", "--home", tmp_path / "h", cwd=tmp_path, STARPOD_API_KEY=key))
    assert "imported from STARPOD_API_KEY" in result.stderr
    assert key not in result.stdout + result.stderr
    keys = json.loads(ok(starpod("keys", "list", "--json", "--home", tmp_path / "h", cwd=tmp_path)).stdout)
    assert [k["prefix"] for k in keys] == [key[8:16]]


def test_users_and_keys_tables_json_and_recovery(store, tmp_path):
    home, admin_key = store
    listed = ok(starpod("users", "list", cwd=tmp_path, STARPOD_HOME=home))
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "ROLE", "ACTIVE", "EMAIL", "NAME", "CREATED"]
    assert any("admin" in row.split() for row in rows)
    assert listed.stderr.strip() == f"starpod: data directory {home}"  # quiet: no log lines

    created = json.loads(ok(starpod("users", "create", "--role", "admin", "--name", "Ops", "--json",
                                    "--home", home, cwd=tmp_path)).stdout)
    assert created["role"] == "admin" and created["api_key"].startswith("sp_live_")
    user_id = created["id"]
    users = json.loads(ok(starpod("--json", "--home", home, "users", "list", cwd=tmp_path)).stdout)
    assert {u["display_name"] for u in users} >= {"Admin", "Ops"}

    laptop = ok(starpod("keys", "create", user_id, "--label", "laptop", "--home", home, cwd=tmp_path))
    assert "shown once" in laptop.stdout
    keys_table = ok(starpod("keys", "list", "--user", user_id, "--home", home, cwd=tmp_path)).stdout
    assert keys_table.splitlines()[0].split()[:4] == ["ID", "USER", "PREFIX", "STATE"]
    keys = json.loads(ok(starpod("keys", "list", "--user", user_id, "--json", "--home", home, cwd=tmp_path)).stdout)
    laptop_id = next(k["id"] for k in keys if k["label"] == "laptop")
    assert {k["state"] for k in keys} == {"active"}
    ok(starpod("keys", "revoke", laptop_id, "--home", home, cwd=tmp_path))
    every_key = json.loads(ok(starpod("keys", "list", "--json", "--home", home, cwd=tmp_path)).stdout)
    assert {k["id"]: k["state"] for k in every_key}[laptop_id] == "revoked"
    assert {k["user_id"] for k in every_key} >= {user_id, users[0]["id"]}  # every user's keys without --user


def test_errors_are_one_line_messages(store, tmp_path):
    home, _ = store
    for args, message in ((["keys", "create", "no-such-user"], "User not found"),
                          (["keys", "revoke", "no-such-key"], "API key not found"),
                          (["keys", "list", "--user", "no-such-user"], "User not found")):
        result = starpod(*args, "--home", home, cwd=tmp_path)
        assert result.returncode == 1 and f"starpod: error: {message}" in result.stderr
        assert "Traceback" not in result.stderr


def test_memory_reindex_once_and_search(store, tmp_path):
    home, _ = store
    (home / "knowledge").mkdir(exist_ok=True)
    (home / "knowledge" / "plants.md").write_text("# Plants\n\nThe quokkaflower blooms in winter.\n")
    result = ok(starpod("-v", "memory", "reindex", "--home", home, cwd=tmp_path))
    assert result.stderr.count("memory reindex done") == 1
    assert "1 indexed" in result.stdout
    hits = ok(starpod("memory", "search", "quokkaflower", "--home", home, cwd=tmp_path)).stdout.splitlines()
    assert hits[0].split() == ["PATH", "LINES", "SCORE", "TEXT"]
    assert hits[1].startswith("knowledge/plants.md")


def test_cron_add_list_run_remove(store, tmp_path):
    home, _ = store
    added = json.loads(ok(starpod("cron", "add", "standup", "0 9 * * MON-FRI", "Plan the day",
                                  "--timezone", "Europe/Rome", "--json", "--home", home, cwd=tmp_path)).stdout)
    assert added["schedule"] == {"kind": "cron", "expr": "0 9 * * MON-FRI"} and added["user_id"] is None
    table = ok(starpod("cron", "list", "--home", home, cwd=tmp_path)).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "USER", "SCHEDULE"]
    assert any(line.startswith("standup") and "Europe/Rome" in line for line in table[1:])
    assert "Queued run" in ok(starpod("cron", "run", "standup", "--home", home, cwd=tmp_path)).stdout
    bad = starpod("cron", "add", "broken", "not a schedule", "x", "--home", home, cwd=tmp_path)
    assert bad.returncode == 1 and "starpod: error: schedule.expr" in bad.stderr
    ok(starpod("cron", "remove", "standup", "--home", home, cwd=tmp_path))
    names = [job["name"] for job in json.loads(ok(starpod("cron", "list", "--json", "--home", home,
                                                          cwd=tmp_path)).stdout)]
    assert "standup" not in names and "broken" not in names


def test_telegram_set_and_delete_webhook(store, tmp_path):
    from .fake_telegram import FakeTelegram

    home, _ = store
    hook = "https://agent.example/api/telegram/webhook"
    assert "TELEGRAM_BOT_TOKEN is not set" in starpod("telegram", "set-webhook", hook, "--home", home,
                                                     cwd=tmp_path).stderr
    fake = FakeTelegram().start()
    try:
        env = fake.environ(TELEGRAM_WEBHOOK_SECRET="s3cret-hook")
        ok(starpod("telegram", "set-webhook", hook, "--home", home, cwd=tmp_path, **env))
        assert fake.webhook == {"url": hook, "secret_token": "s3cret-hook"}
        ok(starpod("telegram", "delete-webhook", "--home", home, cwd=tmp_path, **env))
        assert fake.webhook is None
        refused = starpod("telegram", "set-webhook", "http://plain", "--home", home, cwd=tmp_path, **env)
        assert refused.returncode == 1 and "https://" in refused.stderr
    finally:
        fake.stop()


def test_doctor_reports_each_check(store, tmp_path):
    home, _ = store
    healthy = ok(starpod("doctor", "--json", "--port", 0, "--home", home, cwd=tmp_path, ANTHROPIC_API_KEY="x"))
    checks = {c["check"]: c for c in json.loads(healthy.stdout)}
    database = "PostgreSQL reachable" if on_postgresql(home) else "starpod.db: integrity ok"
    assert checks["database"]["detail"] == database
    assert {checks[name]["status"] for name in ("data directory", "database", "provider key", "port")} == {"ok"}

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        table = starpod("doctor", "--host", "127.0.0.1", "--port", port, "--home", home, cwd=tmp_path)
        result = starpod("doctor", "--json", "--host", "127.0.0.1", "--port", port, "--home", home, cwd=tmp_path)
    assert table.returncode == 1 and table.stdout.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert result.returncode == 1
    failed = {c["check"]: c["detail"] for c in json.loads(result.stdout) if c["status"] == "FAIL"}
    assert set(failed) == {"provider key", "port"}
    assert "ANTHROPIC_API_KEY is not set" in failed["provider key"]
    assert "in use by another program" in failed["port"]

    broken = tmp_path / "broken"
    ok(starpod("init", "--home", broken, cwd=tmp_path))
    if on_postgresql(broken):
        database = {"DATABASE_URL": pgtest.absent_database_url()}
    else:
        (broken / "db" / "starpod.db").write_bytes(b"this is not a database" * 100)
        database = {}
    (broken / "config").chmod(0o777)
    result = starpod("doctor", "--json", "--home", broken, cwd=tmp_path, ANTHROPIC_API_KEY="x", **database)
    assert result.returncode == 1
    statuses = {c["check"]: c["status"] for c in json.loads(result.stdout)}
    assert statuses["database"] == statuses["permissions"] == "FAIL"


# --- gunicorn config ---------------------------------------------------------------------------

@pytest.mark.parametrize("host, bind", [("", "0.0.0.0:4321"), ("127.0.0.1", "127.0.0.1:4321"),
                                        ("::1", "[::1]:4321")])
def test_host_sets_the_listen_address(host, bind):
    # In a child process: gunicorn.conf.py may patch the process for gevent when loaded.
    probe = "import runpy; print(runpy.run_path('gunicorn.conf.py')['bind'])"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                            env=cli_env(HOST=host, PORT="4321"), timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == bind


def test_app_load_imports_no_provider_sdk(tmp_path):
    probe = ("import sys, wsgi\n"
             "print(sorted(m for m in ('anthropic', 'openai', 'httpx2') if m in sys.modules))\n"
             "from starpod.startup import warm_up\n"
             "warm_up(wsgi.app.config['STARPOD'])\n"
             "print(sorted(m for m in ('anthropic', 'openai', 'httpx2') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                            env=cli_env(STARPOD_HOME=str(tmp_path / "h")), timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    at_load, after_warm_up = result.stdout.splitlines()
    assert at_load == "[]"
    assert after_warm_up == "['anthropic', 'httpx2']"  # the configured provider's SDK (and its HTTP library) only


def test_background_warm_up_lets_other_greenlets_run(tmp_path):
    """The SDK import in a worker yields to the event loop between modules instead of holding it;
    what is loaded then is frozen out of the garbage collector."""
    probe = ("from gevent import monkey; monkey.patch_all()\n"
             "import gc, sys, gevent\n"
             "from starpod.config import Config\n"
             "from starpod.startup import _warm_up_cooperatively\n"
             "ticks = 0\n"
             "def ticker():\n"
             "    global ticks\n"
             "    while True:\n"
             "        ticks += 1\n"
             "        gevent.sleep(0)\n"
             "gevent.spawn(ticker)\n"
             "finders = len(sys.meta_path)\n"
             "gevent.spawn(_warm_up_cooperatively, Config(environ={})).join()\n"
             "print(ticks, 'anthropic' in sys.modules, len(sys.meta_path) - finders, gc.get_freeze_count() > 0)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                            env=cli_env(STARPOD_HOME=str(tmp_path / "h")), timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    ticks, imported, finders_left, frozen = result.stdout.split()
    assert int(ticks) > 100 and imported == "True"  # one turn of the loop per module, not one in all
    assert finders_left == "0"  # the yielding finder is gone again
    assert frozen == "True"  # the warm objects are out of the garbage collector's way


# --- serve, HOST and backup against a running server ------------------------------------------

def _local_non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a UDP "connect" sends nothing; it only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_serve_with_host_loopback_and_backup_while_running(store, tmp_path):
    home, admin_key = store
    (home / "knowledge").mkdir(exist_ok=True)
    (home / "knowledge" / "backup-marker.md").write_text("The zebrafinch sings at dawn.\n")
    serve = [sys.executable, "-m", "starpod.cli", "serve"]
    server = LiveServer(home, env={"HOST": "127.0.0.1", "PYTHONPATH": str(REPO)}, command=serve).start()
    try:
        assert server.get("/api/auth/verify", admin_key).json()["authenticated"] is True
        listening = {tuple(c.laddr) for c in psutil.Process(server.process.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {("127.0.0.1", server.port)}
        outside = _local_non_loopback_ip()
        if outside is not None:
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://{outside}:{server.port}/api/health", timeout=10)

        created = server.request("POST", "/api/settings/auth/users", admin_key,
                                 json={"display_name": "Written while running", "role": "user"})
        assert created.status_code == 201, created.text
        archive = tmp_path / "backup.tar.gz"
        if on_postgresql(home):
            refused = starpod("backup", archive, "--home", home, cwd=tmp_path)
            assert refused.returncode == 1 and "pg_dump" in refused.stderr and not archive.exists()
            return  # the database is PostgreSQL's to back up: nothing to restore from the archive
        ok(starpod("backup", archive, "--home", home, cwd=tmp_path))
        assert archive.stat().st_mode & 0o077 == 0  # chats and key hashes: owner only
        assert starpod("backup", archive, "--home", home, cwd=tmp_path).returncode == 1  # never overwrites
    finally:
        server.stop()

    restored = tmp_path / "restored"
    restored.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(restored, filter="data")
    users = json.loads(ok(starpod("users", "list", "--json", "--home", restored, cwd=tmp_path)).stdout)
    assert "Written while running" in {u["display_name"] for u in users}
    ok(starpod("memory", "reindex", "--home", restored, cwd=tmp_path))
    hits = ok(starpod("memory", "search", "zebrafinch", "--home", restored, cwd=tmp_path)).stdout
    assert "knowledge/backup-marker.md" in hits
    doctor = json.loads(starpod("doctor", "--json", "--port", 0, "--home", restored, cwd=tmp_path,
                                ANTHROPIC_API_KEY="x").stdout)
    assert {c["check"]: c["status"] for c in doctor}["database"] == "ok"
    prepare_storage(Config(home=restored, environ={}))
    try:
        with database.connection_context():
            assert accounts.authenticate(admin_key) is not None
    finally:
        database.close_all()
