"""OS-level handling of instance server processes: spawning, identity, signals, metrics.

An instance process is a gunicorn master started in its own session, so its pid is also the id of
a process group holding the master and its workers; signals go to the whole group.  A pid alone
can be reused by the OS after the process is gone, so a process is identified by its pid *and*
its start time (psutil `create_time`).
"""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

# Environment of the managing server that must not reach an instance: its own identity (data dir,
# admin key, port, worker count, backend) and gunicorn/systemd hand-over variables.
# TELEGRAM_*: an instance is another agent; polling the parent's bot from it would steal its updates.
PRIVATE_ENV_PREFIXES = ("STARPOD_", "GUNICORN_", "LISTEN_", "TELEGRAM_")
PRIVATE_ENV_NAMES = {"HOST", "PORT", "WEB_CONCURRENCY"}

# Two create_time readings of one process agree well within this (they derive from boot time + ticks).
START_TIME_TOLERANCE = 1.0


@dataclass(frozen=True)
class Handle:
    """A running process known by pid and start time."""
    pid: int
    started: float


def server_environment(base: dict, overrides: dict) -> dict:
    env = {k: v for k, v in base.items()
           if not k.startswith(PRIVATE_ENV_PREFIXES) and k not in PRIVATE_ENV_NAMES}
    env.update(overrides)
    return env


def spawn(command: list[str], cwd: Path, env: dict, log_path: Path) -> Handle:
    """Start `command` detached: own session (outlives the caller), output appended to `log_path`."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return Handle(process.pid, psutil.Process(process.pid).create_time())
    except psutil.Error:  # died at once: still report it so the caller records and checks it
        return Handle(process.pid, time.time())


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (so it does not stay a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def find(pid: int | None, started: float | None) -> psutil.Process | None:
    """The live process `pid` if it is the one started at `started`; None when gone or a zombie."""
    if not pid or started is None:
        return None
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > START_TIME_TOLERANCE:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
        return process
    except psutil.Error:
        return None


def find_by_pidfile(pidfile: Path) -> psutil.Process | None:
    """The live gunicorn master that wrote `pidfile` (its command line names that file)."""
    try:
        pid = int(pidfile.read_text().strip() or 0)
        process = psutil.Process(pid)
        if str(pidfile) not in process.cmdline() or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (OSError, ValueError, psutil.Error):
        return None


def handle_of(process: psutil.Process) -> Handle:
    return Handle(process.pid, process.create_time())


def signal_group(pid: int, signum: int) -> bool:
    """Send `signum` to the process group led by `pid`; False when the group no longer exists."""
    try:
        os.killpg(pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _wait_gone(pid: int, started: float, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while find(pid, started) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(handle: Handle, grace: float) -> None:
    """SIGTERM the group (continuing it if it was paused), SIGKILL it after `grace` seconds."""
    if find(handle.pid, handle.started) is None:
        return
    signal_group(handle.pid, signal.SIGTERM)
    signal_group(handle.pid, signal.SIGCONT)  # a stopped process only acts on SIGTERM once continued
    if not _wait_gone(handle.pid, handle.started, grace):
        signal_group(handle.pid, signal.SIGKILL)
        _wait_gone(handle.pid, handle.started, 5.0)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def cpu_percent(process: psutil.Process, interval: float) -> float:
    """CPU use of the process tree in percent of one core, measured over `interval` seconds;
    an interval of 0 gives the average since the process started (no waiting)."""
    tree = _tree(process)
    before = _cpu_seconds(tree)
    if interval <= 0:
        try:
            elapsed = time.time() - process.create_time()
        except psutil.Error:
            return 0.0
        return round(before / elapsed * 100.0, 1) if elapsed > 0 else 0.0
    start = time.monotonic()
    time.sleep(interval)
    elapsed = time.monotonic() - start
    return round(max(0.0, (_cpu_seconds(tree) - before) / elapsed * 100.0), 1)


def memory_mb(process: psutil.Process) -> int:
    total = 0
    for proc in _tree(process):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total // (1024 * 1024)


def disk_mb(directory: Path) -> int:
    """Size of every file under `directory`, in MiB rounded up (a non-empty directory is ≥ 1)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return math.ceil(total / (1024 * 1024))
