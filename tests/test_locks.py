"""Mutual exclusion on the run's engine (`locks.exclusive`): an flock on SQLite, a session-level
advisory lock on PostgreSQL, with one contract: wait, give up, time out, freed when its holder dies."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from starpod.filelock import LockTimeout
from starpod.locks import exclusive, lock_name

from .support import REPO, wait_until

HOLD_UNTIL_KILLED = """
import sys, time
from pathlib import Path
from starpod.config import Config
from starpod.db import open_database
from starpod.locks import exclusive
config = Config(home=sys.argv[1], environ={}, database_url=sys.argv[2] or None)
open_database(config.db_path, config.database_url)
with exclusive("file:shared", Path(sys.argv[3])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_second_holder_waits_gives_up_or_times_out(app, tmp_path):
    lock = tmp_path / "sub" / ".lock"
    with exclusive("file:x", lock) as held:
        assert held is True
        with exclusive("file:x", lock, wait=False) as other:
            assert other is False
        with pytest.raises(LockTimeout):
            with exclusive("file:x", lock, timeout=0.05):
                pass
    with exclusive("file:x", lock, timeout=0.05) as again:  # released on exit
        assert again is True


def test_holders_exclude_each_other_so_no_update_is_lost(app, tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")

    def bump(times: int) -> None:
        for _ in range(times):
            with exclusive("file:counter", tmp_path / ".counter.lock"):
                value = int(counter.read_text())
                counter.write_text(str(value + 1))
    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert counter.read_text() == "100"


def test_a_lock_whose_holder_died_is_free(app, config, tmp_path):
    lock = tmp_path / ".shared.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_KILLED, str(config.home),
                               config.database_url or "", str(lock)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with exclusive("file:shared", lock, wait=False) as held:
            assert held is False
        holder.kill()  # SIGKILL: no clean-up of its own
        holder.wait(30)

        def free() -> bool:
            with exclusive("file:shared", lock, wait=False) as held:
                return held
        wait_until(free, "the dead holder's lock to be free")
    finally:
        holder.kill()
        holder.stdout.close()


def test_lock_names_do_not_depend_on_where_the_data_directory_is_mounted(tmp_path):
    for mount in (tmp_path / "a", tmp_path / "b" / "c"):
        assert lock_name(mount, mount / "config" / "agent.toml") == "file:config/agent.toml"
