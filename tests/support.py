"""Test helpers: free ports, a real gunicorn server on loopback, small HTTP helpers."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from . import pgtest

REPO = Path(__file__).resolve().parent.parent
GENERATED_KEY_RE = re.compile(r"save this! (sp_live_[0-9a-f]{40})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, what: str = "condition", timeout: float = 60.0, interval: float = 0.05):
    """Poll `condition` until it returns something truthy (returned) or `timeout` seconds pass
    (AssertionError naming `what`): the one way tests wait for a live system."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_health(base_url: str, process: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(f"{base_url}/api/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} did not become healthy")


class LiveServer:
    """A gunicorn process running the Procfile's web command against a data directory."""

    def __init__(self, home: Path, workers: int = 1, env: dict | None = None, command: list[str] | None = None,
                 tree: Path = REPO):
        """`tree`: the checkout whose code the server runs (another worktree, for a benchmark's
        comparison); this one by default."""
        self.home = Path(home)
        self.tree = Path(tree)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log_path = self.home.parent / f"server-{self.port}.log"
        environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        environ.update({"PORT": str(self.port), "WEB_CONCURRENCY": str(workers),
                        "STARPOD_HOME": str(self.home), "PYTHONUNBUFFERED": "1"})
        environ.pop("DATABASE_URL", None)  # the test run's engine, never the developer's database
        database_url = pgtest.database_url_for(self.home)
        if database_url:
            environ["DATABASE_URL"] = database_url
        environ.update(env or {})
        if self.tree != REPO:
            environ["PYTHONPATH"] = str(self.tree)
        bin_dir = Path(sys.executable).parent
        environ["PATH"] = f"{bin_dir}{os.pathsep}{environ.get('PATH', '')}"
        self.command = command or [str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
        self.env = environ
        self.process: subprocess.Popen | None = None

    def start(self) -> "LiveServer":
        self.spawn()
        wait_for_health(self.base_url, self.process)
        return self

    def spawn(self) -> "LiveServer":
        """Start the server process without waiting for it to answer."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, cwd=self.tree, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def generated_admin_key(self) -> str | None:
        match = GENERATED_KEY_RE.search(self.log_text())
        return match.group(1) if match else None

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def create_user(self, admin_key: str, role: str = "user", label: str = "test", **fields) -> tuple[dict, dict]:
        """(user JSON, created-key JSON with `key` and `meta`): a new user with one key, through the admin API."""
        response = self.request("POST", "/api/settings/auth/users", admin_key, json={"role": role, **fields})
        assert response.status_code == 201, response.text
        user = response.json()
        created = self.request("POST", f"/api/settings/auth/users/{user['id']}/api-keys", admin_key,
                               json={"label": label})
        assert created.status_code == 201, created.text
        return user, created.json()

    def get(self, path: str, key: str | None = None, **kwargs) -> requests.Response:
        return self.request("GET", path, key, **kwargs)

    def request(self, method: str, path: str, key: str | None = None, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if key is not None:
            headers["X-API-Key"] = key
        return requests.request(method, f"{self.base_url}{path}", headers=headers, timeout=30, **kwargs)


@contextmanager
def live_server(home: Path, workers: int = 1, env: dict | None = None):
    server = LiveServer(home, workers, env).start()
    try:
        yield server
    finally:
        server.stop()
