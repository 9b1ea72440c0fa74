"""Settings and auth change hints across servers (PostgreSQL LISTEN/NOTIFY, `changehints`).

The listening "server" is another process whose fallback polls are switched off, and agent.toml
changes without its stat signature changing (as a stale attribute cache on a shared volume shows
it), so only the hint can make that process see either change.  Without hints, the fallback
re-read of agent.toml alone finds the change.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from starpod import accounts, changehints
from starpod.db import open_database, write_transaction
from starpod.migrations import migrate

from .support import REPO, wait_until

LISTENING_SERVER = """
import sys
from gevent import monkey
monkey.patch_all()
import gevent
from starpod import accounts, authcache, config as config_module
from starpod.changehints import start_change_hints
from starpod.config import Config
from starpod.db import database, open_database

home, url, mode = sys.argv[1:]
config_module.REREAD_SECS = authcache.REFRESH_SECS = 3600  # no fallback: only a hint can tell
config = Config(home=home, environ={}, database_url=url)
open_database(config.db_path, config.database_url)
accounts.reset_process_state(None)  # no hint file either
if mode == "hints":
    start_change_hints(config)
else:  # no hints: the fallback re-read of agent.toml only
    config_module.REREAD_SECS = 0.5
seen = None
while True:
    with database.connection_context():
        now = f"{config.agent.model} {accounts.cache.generation.current()}"
    if now != seen:
        print(now, flush=True)
        seen = now
    gevent.sleep(0.05)
"""

OLD_MTIME_NS = 1_000_000_000 * 10**9  # far outside the racy window: stat alone is believed


def write_behind_stat(path, text: str) -> None:
    """Replace `path`'s content in place (same inode, same size) and keep its old mtime."""
    path.write_text(text)
    os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))


def start_server(postgres, tmp_path, mode: str):
    home = tmp_path / "home"
    agent_toml = home / "config" / "agent.toml"
    agent_toml.parent.mkdir(parents=True)
    write_behind_stat(agent_toml, 'model = "model-a"\n')
    url = postgres.url_for(home)
    migrate(open_database(tmp_path / "unused.db", url))
    process = subprocess.Popen([sys.executable, "-c", LISTENING_SERVER, str(home), url, mode], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(line.strip() for line in process.stdout), daemon=True).start()
    try:
        wait_until(lambda: lines, "the listening server's first report")
    except AssertionError:
        process.kill()
        raise
    return process, agent_toml, lines


@pytest.fixture
def listening_server(postgres, tmp_path):
    process, agent_toml, lines = start_server(postgres, tmp_path, "hints")
    yield agent_toml, lines
    process.kill()
    process.wait()


def test_a_settings_hint_makes_another_server_read_agent_toml_again(listening_server):
    agent_toml, lines = listening_server
    assert lines[-1].startswith("model-a ")
    write_behind_stat(agent_toml, 'model = "model-b"\n')

    def seen_new_model() -> bool:
        changehints.announce(changehints.SETTINGS)  # repeated: the listener may not listen yet
        return lines[-1].startswith("model-b ")
    wait_until(seen_new_model, "the other server to read the new agent.toml")


def test_an_auth_change_makes_another_server_read_the_generation_again(listening_server):
    _, lines = listening_server
    first = int(lines[-1].split()[1])

    def seen_new_generation() -> bool:
        with write_transaction(accounts.USERS_LOCK):
            accounts.bump_generation()  # NOTIFYs as the transaction commits
        return int(lines[-1].split()[1]) > first
    wait_until(seen_new_generation, "the other server to read the new auth generation")


def test_without_hints_the_fallback_re_read_finds_a_settings_change(postgres, tmp_path):
    process, agent_toml, lines = start_server(postgres, tmp_path, "poll")
    try:
        write_behind_stat(agent_toml, 'model = "model-b"\n')
        wait_until(lambda: lines[-1].startswith("model-b "), "the fallback re-read of agent.toml")
    finally:
        process.kill()
        process.wait()
