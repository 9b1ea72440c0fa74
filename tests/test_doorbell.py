"""Doorbell.peer_gone: which workers certainly stopped (their runs can be closed at once)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from starpod.realtime.doorbell import HOST, SUFFIX, Doorbell


def test_peer_gone_tells_dead_workers_from_live_ones(tmp_path):
    own, live = Doorbell(tmp_path), Doorbell(tmp_path)
    killed_id = f"{os.getpid():x}-killed-{HOST}"
    killed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    killed.bind(str(tmp_path / f"{killed_id}{SUFFIX}"))
    killed.close()  # a SIGKILLed worker leaves its doorbell file behind, bound by nobody
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    try:
        assert not own.peer_gone(live.worker_id)
        assert own.peer_gone(killed_id)
        assert not (tmp_path / f"{killed_id}{SUFFIX}").exists()
        assert not own.peer_gone(f"{os.getpid():x}-nobell-{HOST}")  # no doorbell, but its process runs
        assert own.peer_gone(f"{int(exited.stdout):x}-nobell-{HOST}")
        # A worker of another machine: its doorbell is not in this machine's directory, its pid
        # means nothing here, and it may well be alive.
        assert not own.peer_gone(f"{int(exited.stdout):x}-nobell-xxxxxx")
    finally:
        own.close()
        live.close()
