"""The remote instance backend against a fake backend HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import make_config
from tests.support import free_port

INSTANCE = {"id": "i-1", "name": "alpha", "status": "running", "region": "eu", "created_at": 1700000000,
            "updated_at": 1700000100, "extra": "dropped",
            "health": {"cpu_percent": 1.5, "memory_mb": 64, "disk_mb": 3, "last_heartbeat": 1700000099,
                       "uptime_secs": 99, "extra": 1}}
HEALTH = {"cpu_percent": 2, "memory_mb": 10, "disk_mb": 1, "last_heartbeat": 1700000200, "uptime_secs": 5}


class FakeBackend:
    """Answers `(method, path)` from `routes` with (status, body); records every request."""

    def __init__(self):
        self.routes: dict[tuple[str, str], tuple[int, object]] = {}
        self.requests: list[dict] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                backend.requests.append({"method": self.command, "path": self.path,
                                         "auth": self.headers.get("Authorization"),
                                         "body": json.loads(raw) if raw else None})
                status, body = backend.routes.get((self.command, self.path), (404, {"error": "no such instance"}))
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last(self) -> dict:
        return self.requests[-1]


@pytest.fixture(scope="module")
def backend():
    fake = FakeBackend()
    yield fake
    fake.server.shutdown()


@pytest.fixture(autouse=True)
def _reset(backend):
    backend.routes.clear()
    backend.requests.clear()


@pytest.fixture
def config(home, backend):
    return make_config(home, environ={"STARPOD_INSTANCE_BACKEND_URL": backend.url + "/",
                                      "ANTHROPIC_API_KEY": "sk-ant-test"})


def test_every_endpoint_is_proxied(client, admin_headers, backend):
    backend.routes.update({
        ("GET", "/instances"): (200, [INSTANCE]),
        ("POST", "/instances"): (201, {**INSTANCE, "health": None}),
        ("GET", "/instances/i-1"): (200, INSTANCE),
        ("DELETE", "/instances/i-1"): (200, {"whatever": True}),
        ("POST", "/instances/i-1/pause"): (202, b"not json"),
        ("POST", "/instances/i-1/restart"): (200, {}),
        ("GET", "/instances/i-1/health"): (200, HEALTH),
    })
    expected = {k: v for k, v in INSTANCE.items() if k != "extra"}
    expected["health"] = {k: v for k, v in INSTANCE["health"].items() if k != "extra"}

    listed = client.get("/api/instances", headers=admin_headers)
    assert listed.status_code == 200 and listed.json == [expected]
    assert backend.last()["auth"] == "Bearer sk-ant-test"

    created = client.post("/api/instances", json={"name": "alpha"}, headers=admin_headers)
    assert created.status_code == 201
    assert created.json == {**expected, "health": None}
    assert backend.last()["body"] == {"name": "alpha", "region": None}

    assert client.get("/api/instances/i-1", headers=admin_headers).json == expected
    deleted = client.delete("/api/instances/i-1", headers=admin_headers)
    assert deleted.status_code == 204 and deleted.data == b""
    paused = client.post("/api/instances/i-1/pause", headers=admin_headers)
    assert paused.status_code == 200 and paused.json == {"status": "paused"}
    assert backend.last()["body"] is None
    restarted = client.post("/api/instances/i-1/restart", headers=admin_headers)
    assert restarted.status_code == 200 and restarted.json == {"status": "restarted"}
    health = client.get("/api/instances/i-1/health", headers=admin_headers)
    assert health.status_code == 200 and health.json == {**HEALTH, "cpu_percent": 2.0}
    assert [(r["method"], r["path"]) for r in backend.requests] == list(backend.routes)


@pytest.mark.parametrize("method, path", [
    ("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/restart"), ("GET", "/health")])
def test_backend_404_passes_through_and_ids_are_percent_encoded(client, admin_headers, backend, method, path):
    response = client.open(f"/api/instances/a%20b%3Fc%25{path}", method=method, headers=admin_headers)
    assert response.status_code == 404
    assert response.json == {"error": "no such instance"}
    assert backend.last()["path"] == f"/instances/a%20b%3Fc%25{path}"


def test_backend_failures_are_502(client, admin_headers, backend):
    backend.routes[("GET", "/instances/i-1")] = (500, b"boom")
    response = client.get("/api/instances/i-1", headers=admin_headers)
    assert response.status_code == 502
    assert response.json["error"] == ("Get instance error: Channel error: "
                                      "Get instance failed (500 Internal Server Error): boom")

    backend.routes[("GET", "/instances")] = (404, {"error": "wrong base URL"})
    response = client.get("/api/instances", headers=admin_headers)
    assert response.status_code == 502
    assert response.json["error"].startswith("List instances error: Channel error: List instances failed (404")

    backend.routes[("GET", "/instances/i-1")] = (200, {**INSTANCE, "status": "RUNNING"})
    response = client.get("/api/instances/i-1", headers=admin_headers)
    assert response.status_code == 502
    assert response.json["error"].startswith("Get instance error: Channel error: Invalid response:")

    backend.routes[("GET", "/instances/i-1/health")] = (200, b"{not json")
    response = client.get("/api/instances/i-1/health", headers=admin_headers)
    assert response.status_code == 502
    assert response.json["error"].startswith("Instance health error: Channel error: Invalid response:")


def _app_with(home, environ):
    from starpod import create_app
    return create_app(make_config(home, environ=environ))


def test_backend_down_is_502(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    client = _app_with(tmp_path / "down", {"STARPOD_INSTANCE_BACKEND_URL": down}).test_client()
    response = client.get("/api/instances")
    assert response.status_code == 502
    assert response.json["error"].startswith("List instances error: Channel error: Failed to list instances: ")
    response = client.post("/api/instances/x/restart")
    assert response.status_code == 502
    assert "Failed to restart instance" in response.json["error"]


def test_no_credential_sends_no_authorization(tmp_path, backend):
    app = _app_with(tmp_path / "nocred", {"STARPOD_INSTANCE_BACKEND_URL": backend.url})
    backend.routes[("GET", "/instances")] = (200, [])
    response = app.test_client().get("/api/instances")
    assert response.status_code == 200 and response.json == []
    assert backend.last()["auth"] is None


def test_create_body_is_validated_after_auth(client, admin_headers, make_user, backend):
    _, user_key = make_user()
    assert client.post("/api/instances", json={"name": 5}, headers={"X-API-Key": user_key}).status_code == 403
    response = client.post("/api/instances", json={"name": 5}, headers=admin_headers)
    assert response.status_code == 422 and "name" in response.json["fields"]
    response = client.post("/api/instances", data="{bad", content_type="application/json", headers=admin_headers)
    assert response.status_code == 400
    assert backend.requests == []
