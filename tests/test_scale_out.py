"""Two servers as one: separate gunicorn masters (own ports) on one data directory and one
database (PostgreSQL under STARPOD_TEST_DATABASE=postgresql, else the shared SQLite file)."""
from __future__ import annotations

import pytest
import requests

from .fake_provider import Reply
from .support import LiveServer
from .test_ws_live import connect, deltas, recv, send, until_end

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ADMIN_KEY = "sp_live_" + "ab" * 20


@pytest.fixture(scope="module")
def servers(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("scale") / "home"
    env = fake.environ(STARPOD_API_KEY=ADMIN_KEY)
    first = LiveServer(home, env=env).start()
    second = LiveServer(home, env=env)
    try:
        second.start()
    except Exception:
        first.stop()
        raise
    for live in (first, second):
        live.admin_key = ADMIN_KEY
    yield first, second
    first.stop()
    second.stop()


def test_a_run_started_on_one_server_resumes_on_the_other_without_a_gap(servers, fake):
    server_a, server_b = servers
    text = "".join(f"<{i:03d}>" for i in range(40))
    fake.script(Reply(text, chunks=40, chunk_delay=0.03))
    first = connect(server_a)
    send(first, type="message", text="long story")
    seen = [recv(first) for _ in range(5)]
    first.close()  # the client leaves server A mid-run
    other = connect(server_b)
    send(other, type="resume", session_id=seen[0]["session_id"], after_seq=seen[-1]["seq"])
    rest = until_end(other)
    other.close()
    assert deltas(seen + rest) == text
    assert [frame["seq"] for frame in seen + rest] == list(range(seen[0]["seq"], seen[0]["seq"] + len(seen + rest)))


def test_a_key_revoked_on_one_server_is_refused_by_the_other(servers):
    server_a, server_b = servers
    user = server_a.request("POST", "/api/settings/auth/users", ADMIN_KEY, json={"display_name": "Bo"}).json()
    issued = server_a.request("POST", f"/api/settings/auth/users/{user['id']}/api-keys", ADMIN_KEY, json={}).json()
    assert requests.get(server_b.base_url + "/api/auth/verify", headers={"X-API-Key": issued["key"]},
                        timeout=30).json()["authenticated"]  # B has verified (and cached) the key
    server_a.request("POST", f"/api/settings/auth/api-keys/{issued['meta']['id']}/revoke", ADMIN_KEY)
    refused = requests.get(server_b.base_url + f"/api/settings/auth/users/{user['id']}",
                           headers={"X-API-Key": issued["key"]}, timeout=30)
    assert refused.status_code == 401
