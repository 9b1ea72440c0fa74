"""The local instance backend: real Starpod child servers, reconciliation, permissions."""
from __future__ import annotations

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from starpod import create_app
from starpod.db import database
from starpod.instances import processes
from starpod.models import Instance
from tests.conftest import make_config
from tests.support import wait_until as wait_for

INSTANCE_KEYS = {"id", "name", "status", "region", "created_at", "updated_at", "health"}
HEALTH_KEYS = {"cpu_percent", "memory_mb", "disk_mb", "last_heartbeat", "uptime_secs"}


def servers_of(home) -> list[psutil.Process]:
    """Every process started from this test's data directory (its command line names it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(home) in " ".join(proc.info["cmdline"] or ()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


@pytest.fixture(autouse=True)
def kill_children(home):
    """Whatever happens in a test, no instance server outlives it."""
    yield
    for proc in servers_of(home):
        processes.signal_group(proc.pid, signal.SIGKILL)
    wait_for(lambda: not servers_of(home), timeout=10)


def record(instance_id: str) -> Instance:
    return Instance.get_by_id(instance_id)


def alive(instance_id: str) -> psutil.Process | None:
    rec = record(instance_id)
    return processes.find(rec.pid, rec.pid_started)


def create(client, headers, **body) -> dict:
    response = client.post("/api/instances", json=body, headers=headers)
    assert response.status_code == 201, response.json
    return response.json


def files_containing(root, secret: str) -> list[str]:
    hits = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                if secret.encode() in handle.read():
                    hits.append(path)
    return hits


def assert_key_not_in_environment(pid: int, key: str) -> None:
    """Neither the instance's gunicorn master nor its workers carry the admin key in their
    environment (/proc/<pid>/environ is readable by every process of the same user)."""
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert len(tree) >= 2
    for proc in tree:
        environ = open(f"/proc/{proc.pid}/environ", "rb").read()
        assert key.encode() not in environ and b"STARPOD_API_KEY=" not in environ


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {(c.laddr.ip, c.laddr.port) for proc in tree for c in proc.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def test_local_lifecycle_end_to_end(client, admin_headers, home):
    created = create(client, admin_headers, name="alpha", region="home-lab")
    iid, key = created["id"], created["api_key"]
    assert set(created) == INSTANCE_KEYS | {"api_key", "url"}
    assert created["status"] == "running" and created["name"] == "alpha" and created["region"] == "home-lab"
    assert re.fullmatch(r"sp_live_[0-9a-f]{40}", key)
    assert (home / "instances" / iid / ".starpod" / "db" / "starpod.db").exists()

    # The instance is a real Starpod server whose admin key is the one handed out.
    port = record(iid).port
    assert created["url"].endswith(f":{port}")
    verify = requests.get(f"http://127.0.0.1:{port}/api/auth/verify", headers={"X-API-Key": key}, timeout=5).json()
    assert verify["authenticated"] is True and verify["user"]["role"] == "admin"
    assert files_containing(home, key) == []  # only its hash is stored, in the instance's own db
    assert_key_not_in_environment(record(iid).pid, key)
    assert listening_addresses(record(iid).pid) == {("127.0.0.1", port)}

    got = client.get(f"/api/instances/{iid}", headers=admin_headers).json
    assert set(got) == INSTANCE_KEYS and set(got["health"]) == HEALTH_KEYS
    assert [i["id"] for i in client.get("/api/instances", headers=admin_headers).json] == [iid]
    health = client.get(f"/api/instances/{iid}/health", headers=admin_headers).json
    assert set(health) == HEALTH_KEYS
    assert health["memory_mb"] > 0 and health["disk_mb"] >= 1 and health["last_heartbeat"] >= created["created_at"]

    # Pause freezes the whole process group; concurrent pauses agree.
    pid = record(iid).pid
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post(f"/api/instances/{iid}/pause", headers=admin_headers), range(4)))
    assert {(a.status_code, a.json["status"]) for a in answers} == {(200, "paused")}
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
    assert client.get(f"/api/instances/{iid}", headers=admin_headers).json["status"] == "paused"

    restarted = client.post(f"/api/instances/{iid}/restart", headers=admin_headers)
    assert restarted.status_code == 200 and restarted.json == {"status": "restarted"}
    assert record(iid).pid == pid and record(iid).status == "running"
    assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200

    # Delete (from paused) really ends the server and frees its port.
    assert client.post(f"/api/instances/{iid}/pause", headers=admin_headers).status_code == 200
    started = record(iid).pid_started
    deleted = client.delete(f"/api/instances/{iid}", headers=admin_headers)
    assert deleted.status_code == 204 and deleted.data == b""
    assert processes.find(pid, started) is None
    assert servers_of(home) == [] and processes.port_is_free(port)
    stopped = client.get(f"/api/instances/{iid}", headers=admin_headers).json
    assert stopped["status"] == "stopped" and stopped["health"] is None
    assert client.get(f"/api/instances/{iid}/health", headers=admin_headers).status_code == 409
    assert client.post(f"/api/instances/{iid}/pause", headers=admin_headers).status_code == 409
    assert client.delete(f"/api/instances/{iid}", headers=admin_headers).status_code == 204

    # Restart from stopped brings it back on its port with its data (the same key works).
    assert client.post(f"/api/instances/{iid}/restart", headers=admin_headers).status_code == 200
    assert record(iid).status == "running" and record(iid).port == port
    verify = requests.get(f"http://127.0.0.1:{port}/api/auth/verify", headers={"X-API-Key": key}, timeout=5).json()
    assert verify["authenticated"] is True

    # A server that dies behind our back is reported as `error` on the next read.
    os.killpg(record(iid).pid, signal.SIGKILL)
    wait_for(lambda: alive(iid) is None)
    assert client.get(f"/api/instances/{iid}", headers=admin_headers).json["status"] == "error"
    assert client.delete(f"/api/instances/{iid}", headers=admin_headers).status_code == 204
    assert record(iid).status == "stopped"


def test_reconcile_after_server_restart(client, admin_headers, home):
    with ThreadPoolExecutor(3) as pool:
        survivor, leftover, unknown = pool.map(lambda name: create(client, admin_headers, name=name)["id"],
                                               ["survivor", "leftover", "unknown"])
    survivor_pid, leftover_pid, unknown_pid = record(survivor).pid, record(leftover).pid, record(unknown).pid

    # While the server is down: a running and a paused instance lose their servers (a reboot), a
    # record says stopped though its server runs, and a record is lost.
    crashed = Instance.create(id="crashed", status="running", port=processes.pick_free_port(), pid=survivor_pid,
                              pid_started=1.0, created_at=1, updated_at=1).id
    Instance.create(id="paused-one", status="paused", port=processes.pick_free_port(), created_at=1, updated_at=1)
    Instance.update(status="stopped").where(Instance.id == leftover).execute()
    Instance.delete().where(Instance.id == unknown).execute()
    database.close_all()

    app = create_app(make_config(home))  # server restart
    client = app.test_client()

    assert record(survivor).pid == survivor_pid and record(survivor).status == "running"
    for pid in (leftover_pid, unknown_pid):
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    assert record(leftover).status == "stopped" and record(leftover).pid is None
    assert record("paused-one").status == "stopped"

    new_pid = record(crashed).pid
    assert new_pid and alive(crashed) is not None
    wait_for(lambda: client.get(f"/api/instances/{crashed}", headers=admin_headers).json["status"] == "running")
    assert client.get(f"/api/instances/{crashed}/health", headers=admin_headers).status_code == 200
    servers = servers_of(home)
    masters = {p.pid for p in servers if p.ppid() not in {s.pid for s in servers}}
    assert masters == {new_pid, survivor_pid}  # nothing orphaned, nothing doubled


def test_permissions_and_unknown_ids(client, admin_headers, make_user):
    _, user_key = make_user()
    user = {"X-API-Key": user_key}
    assert client.get("/api/instances").status_code == 401
    assert client.get("/api/instances", headers=user).json == []
    for method, path in [("POST", ""), ("DELETE", "/x"), ("POST", "/x/pause"), ("POST", "/x/restart")]:
        assert client.open(f"/api/instances{path}", method=method, headers=user).status_code == 403
    for method, path in [("GET", "/x"), ("GET", "/x/health")]:
        response = client.open(f"/api/instances{path}", method=method, headers=user)
        assert response.status_code == 404 and response.json == {"error": "Instance not found: x"}
    for method, path in [("DELETE", "/x"), ("POST", "/x/pause"), ("POST", "/x/restart")]:
        assert client.open(f"/api/instances{path}", method=method, headers=admin_headers).status_code == 404
