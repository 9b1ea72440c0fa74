"""Cross-process wake-ups on one machine: a UNIX datagram "doorbell" per worker in `<home>/run/`.

A process that stored something other workers must see (run events, a notification) rings every
doorbell; each worker drains its socket and re-reads the database.  A ring carries no data, so a
lost or coalesced ring costs nothing: readers always ask the database what is new.  Doorbells of
processes that died are removed by the first ring that finds them refused.  Other servers on the
same PostgreSQL database are reached through `pgbell` (LISTEN/NOTIFY).

Doorbells are per machine even when `<home>` is a volume shared by several servers: each machine
rings in a directory of its own (`run_dir`), and a worker id names its machine, so a worker on
another machine is never taken for a dead one here (a run it executes is closed only once its
heartbeat goes stale).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import socket
import time
from pathlib import Path

from .pgbell import announce

log = logging.getLogger(__name__)

SUFFIX = ".bell"
PEER_LIST_TTL = 1.0  # seconds a directory listing of the peers is reused
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]  # this machine, in short


def run_dir(home: Path) -> Path:
    """This machine's directory of doorbells under data directory `home`."""
    return home / "run" / HOST


def ring_everyone(home: Path) -> None:
    """Wake every worker serving data directory `home`: the doorbells of this machine (the
    caller's own too) and, on PostgreSQL, the workers of the other servers; never raises."""
    ring(run_dir(home))
    announce()


class Doorbell:
    """This process's doorbell plus the means to ring everyone else's."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.worker_id = f"{os.getpid():x}-{secrets.token_hex(3)}-{HOST}"
        self.path = directory / f"{self.worker_id}{SUFFIX}"
        self._peers: list[Path] = []
        self._peers_read_at = 0.0
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(str(self.path))
        except OSError as exc:  # e.g. a data directory path longer than AF_UNIX allows
            log.warning("no doorbell for this worker (%s); other workers reach it by polling", exc)
            self._sock.close()
            self._sock = None

    def wait(self, timeout: float) -> bool:
        """Block (cooperatively under gevent) until rung or `timeout`; True when rung."""
        if self._sock is None:
            time.sleep(timeout)
            return False
        self._sock.settimeout(timeout)
        try:
            self._sock.recv(16)
        except (socket.timeout, TimeoutError):
            return False
        self._sock.setblocking(False)
        try:  # coalesce every ring that queued up meanwhile
            while self._sock.recv(16):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        return True

    def ring_others(self) -> None:
        ring(self.directory, exclude=self.path, sender=self._sender, peers=self._peer_paths())
        announce(self.worker_id)  # the workers of other servers (PostgreSQL only)

    def ring_self(self) -> None:
        """Wake this process's own waiter (for wake-ups that arrive by other means)."""
        if self._sock is not None:
            ring(self.directory, sender=self._sender, peers=[self.path])

    def _peer_paths(self) -> list[Path]:
        now = time.monotonic()
        if now - self._peers_read_at > PEER_LIST_TTL:
            self._peers = [p for p in _bells(self.directory) if p != self.path]
            self._peers_read_at = now
        return self._peers

    def peer_gone(self, worker_id: str) -> bool:
        """True when the process behind `worker_id` certainly stopped: its doorbell refuses rings
        (killed without cleaning up), or it has none and no process has its pid.  False when it is
        alive or that cannot be told (a reused pid, no doorbells in this directory, another machine)."""
        if worker_id.rsplit("-", 1)[-1] != HOST:
            return False
        path = self.directory / f"{worker_id}{SUFFIX}"
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(str(path))  # succeeds while someone is bound to it; sends nothing
            return False
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                path.unlink(missing_ok=True)
                return True
            return exc.errno == errno.ENOENT and not _pid_alive(worker_id.split("-", 1)[0])
        finally:
            probe.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.path.unlink(missing_ok=True)
        self._sender.close()


def _pid_alive(pid_hex: str) -> bool:
    try:
        os.kill(int(pid_hex, 16), 0)
    except ProcessLookupError:
        return False
    except (ValueError, OSError):  # not a pid, or someone else's process
        return True
    return True


def _bells(directory: Path) -> list[Path]:
    try:
        return [directory / name for name in os.listdir(directory) if name.endswith(SUFFIX)]
    except FileNotFoundError:
        return []


def ring(directory: Path, exclude: Path | None = None, sender: socket.socket | None = None,
         peers: list[Path] | None = None) -> None:
    """Ring every doorbell in `directory` (except `exclude`); never blocks, never raises."""
    own = sender is None
    if own:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
    try:
        for path in (peers if peers is not None else _bells(directory)):
            if path == exclude:
                continue
            try:
                sender.sendto(b"\x01", str(path))
            except (BlockingIOError, InterruptedError):
                pass  # its queue is full: it has rings pending and will read the database anyway
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    path.unlink(missing_ok=True)  # the process behind it is gone
    finally:
        if own:
            sender.close()
