"""Running a tool's work in a child process with bounded CPU time, memory and wall time.

The child runs in its own session and is waited for through `subprocess`, which gevent's
monkey-patching makes cooperative: while a tool works, the worker's other greenlets (other
requests, `/api/health`) keep being served.  At the wall-clock deadline the child's whole process
group is killed, so nothing it started outlives the tool call; so it is when the wait for it is cut
short (the run was stopped, the worker is shutting down).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .registry import ToolError

log = logging.getLogger(__name__)

# The child gets no secrets and no Python settings from the server's environment.
CHILD_ENV = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}
OUT_OF_CPU = (-signal.SIGXCPU, -signal.SIGKILL)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the session the child leads (the child and everything it started)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def killed_unless_waited(process: subprocess.Popen) -> Iterator[None]:
    """Wait for `process` inside this block: if the wait ends with an exception (its deadline,
    or the caller cut short by a stop or a greenlet kill), the child's whole group is killed and
    the child reaped."""
    try:
        yield
    except BaseException:
        kill_group(process)
        process.wait()
        raise


def run_isolated_python(script: Path, request: bytes, timeout_secs: float, what: str) -> bytes:
    """Run `python -I script` with `request` on stdin; its stdout, or ToolError naming `what`
    when it times out, is killed for CPU time or fails."""
    process = subprocess.Popen([sys.executable, "-I", str(script)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CHILD_ENV, cwd="/",
                               start_new_session=True)
    try:
        with killed_unless_waited(process):
            output, errors = process.communicate(request, timeout=timeout_secs)
    except subprocess.TimeoutExpired:
        process.communicate()
        raise ToolError(f"{what} timed out after {timeout_secs:g}s and was stopped") from None
    if process.returncode in OUT_OF_CPU:
        raise ToolError(f"{what} used more CPU time than a tool may ({timeout_secs:g}s) and was stopped")
    if process.returncode != 0:
        log.warning("%s child exited with %s: %s", what, process.returncode, errors.decode(errors="replace")[-2000:])
        raise ToolError(f"{what} failed (exit code {process.returncode})")
    return output
