"""Secrets proof, a pytest plugin loaded by conftest.py: no secret a test run creates or configures
may show up where it does not belong.

Recorded during the run:
- API keys made in-process (`accounts.create_api_key`, wrapped) with their stored hashes;
- API keys seen in any HTTP response or WebSocket frame (`sp_live_…`): that response created them;
- secret-looking environment values (`*_API_KEY`, `*_TOKEN`, `*_SECRET`) given to live servers;
- after the run, every key hash stored in the live servers' databases.

Scanned at the end of the session: every response body and header block the tests received
(`requests`, Flask's test client, websocket-client frames) and every log file under the run's
temporary directory.  A key may appear in one response only (the one that created it); the only
log line allowed to hold a key is the first admin's bootstrap line (`… save this! <key>`), once.
Anything else fails the run.
"""
from __future__ import annotations

import functools
import re
import sqlite3
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import pytest

KEY_RE = re.compile(rb"sp_live_[0-9a-f]{40}")
BOOTSTRAP_LINE = b"save this! "
SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET")
MIN_SECRET_LEN = 8
MAX_CAPTURED_BODY = 4 * 1024 * 1024


class SecretsLedger:
    """What the run created (secrets) and what it saw (responses)."""

    def __init__(self):
        self.keys: set[bytes] = set()           # plaintext API keys: one creating response allowed
        self.hidden: dict[bytes, str] = {}      # hashes and configured secrets: never shown at all
        self.responses: list[tuple[str, bytes]] = []
        self.homes: set[Path] = set()

    def record_key(self, key: str, key_hash: str | None = None) -> None:
        self.keys.add(key.encode())
        if key_hash:
            self.hidden[key_hash.encode()] = "API key hash"

    def record_environ(self, environ: dict) -> None:
        for name, value in environ.items():
            if name.endswith(SECRET_ENV_SUFFIXES) and value and len(value) >= MIN_SECRET_LEN:
                self.hidden[value.encode()] = f"${name}"

    def capture(self, origin: str, data: bytes) -> None:
        data = data[:MAX_CAPTURED_BODY]
        self.keys.update(KEY_RE.findall(data))
        self.responses.append((origin, data))

    def record_stored_hashes(self) -> None:
        for home in self.homes:
            database = home / "db" / "starpod.db"
            if not database.exists():
                continue
            try:
                with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
                    rows = conn.execute("SELECT key_hash FROM api_keys").fetchall()
            except sqlite3.Error:  # a server that never finished migrating has no keys to leak
                continue
            for (key_hash,) in rows:
                self.hidden[key_hash.encode()] = "API key hash"

    # --- the verdict --------------------------------------------------------------------

    def response_findings(self) -> list[str]:
        findings = []
        seen_in: dict[bytes, list[str]] = defaultdict(list)
        for origin, data in self.responses:
            for key in set(KEY_RE.findall(data)) & self.keys:
                seen_in[key].append(origin)
            findings += [f"{label} in response {origin}" for secret, label in self.hidden.items() if secret in data]
        for key, origins in seen_in.items():
            if len(origins) > 1:
                findings.append(f"API key {key[:12].decode()}… in {len(origins)} responses: {origins[:3]}")
        return findings

    def log_findings(self, log_files: list[Path]) -> list[str]:
        findings = []
        for path in log_files:
            text = path.read_bytes()
            for key in self.keys:
                total = text.count(key)
                allowed = min(text.count(BOOTSTRAP_LINE + key), 1)
                if total > allowed:
                    findings.append(f"API key {key[:12].decode()}… {total - allowed}× in log {path}")
            findings += [f"{label} in log {path}" for secret, label in self.hidden.items() if secret in text]
        return findings


def _log_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.log") if path.is_file())


def _install_capture(ledger: SecretsLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    import requests
    import websocket
    from flask.testing import FlaskClient

    from starpod import accounts

    from .support import LiveServer

    def response_bytes(response) -> bytes:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
        return headers + b"\n\n" + (response.get_data() if hasattr(response, "get_data") else response.content)

    original_send = requests.Session.send

    @functools.wraps(original_send)
    def send(self, request, **kwargs):
        response = original_send(self, request, **kwargs)
        if not kwargs.get("stream"):
            ledger.capture(f"{request.method} {request.path_url}", response_bytes(response))
        return response

    original_open = FlaskClient.open

    @functools.wraps(original_open)
    def open_(self, *args, **kwargs):
        response = original_open(self, *args, **kwargs)
        ledger.capture(f"test client {response.request.method} {response.request.path}", response_bytes(response))
        return response

    original_recv = websocket.WebSocket.recv

    @functools.wraps(original_recv)
    def recv(self):
        frame = original_recv(self)
        ledger.capture("WebSocket frame", frame.encode() if isinstance(frame, str) else frame)
        return frame

    original_create = accounts.create_api_key

    @functools.wraps(original_create)
    def create_api_key(*args, **kwargs):
        record, key = original_create(*args, **kwargs)
        ledger.record_key(key, record.key_hash)
        return record, key

    original_start = LiveServer.start

    @functools.wraps(original_start)
    def start(self):
        ledger.record_environ(self.env)
        ledger.homes.add(self.home)
        return original_start(self)

    monkeypatch.setattr(requests.Session, "send", send)
    monkeypatch.setattr(FlaskClient, "open", open_)
    monkeypatch.setattr(websocket.WebSocket, "recv", recv)
    monkeypatch.setattr(accounts, "create_api_key", create_api_key)
    monkeypatch.setattr(LiveServer, "start", start)


@pytest.fixture(scope="session", autouse=True)
def secrets_ledger(request, tmp_path_factory):
    """Records secrets and responses for the whole run; the scan runs at session finish."""
    from .fake_provider import FAKE_KEY

    ledger = SecretsLedger()
    ledger.hidden[FAKE_KEY.encode()] = "provider key"
    monkeypatch = pytest.MonkeyPatch()
    _install_capture(ledger, monkeypatch)
    request.config.stash[LEDGER] = (ledger, tmp_path_factory.getbasetemp())
    yield ledger
    monkeypatch.undo()


LEDGER = pytest.StashKey[tuple]()


def findings_of(ledger: SecretsLedger, temp_root: Path) -> list[str]:
    ledger.record_stored_hashes()
    return ledger.response_findings() + ledger.log_findings(_log_files(temp_root))


def pytest_sessionfinish(session, exitstatus):
    stashed = session.config.stash.get(LEDGER, None)
    if stashed is None:
        return
    findings = findings_of(*stashed)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if findings:
        if reporter:
            reporter.write_sep("=", "secrets scan: FAILED", red=True)
            for finding in findings[:50]:
                reporter.write_line(finding)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter:
        reporter.write_line(f"secrets scan: {len(stashed[0].responses)} responses and the logs are clean")
