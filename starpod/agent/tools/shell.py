"""Bash (admin-only, `[tools] shell`) and EnvGet.

Bash runs in the workspace in its own process group, killed at `[tools] shell_timeout_secs`; it is
waited for through `subprocess`, which gevent makes cooperative, so the worker keeps serving other
requests meanwhile.  Output goes to a temporary file so a chatty command cannot fill memory, and
only the first `max_output_bytes` are returned.
Credentials never reach the model: EnvGet refuses secret-looking names and Bash children get an
environment without them.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

from .bounded import killed_unless_waited
from .registry import ToolContext, ToolError, bound_output, require_str, tool

RESTRICTED = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)


def _child_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not RESTRICTED.search(name)}


@tool("EnvGet", "Read an environment variable (secrets are refused).", {"key": {"type": "string"}}, ("key",))
def env_get(ctx: ToolContext, args: dict) -> str:
    key = require_str(args, "key")
    if RESTRICTED.search(key):
        raise ToolError(f"Access to environment variable '{key}' is restricted.")
    value = os.environ.get(key)
    return value if value is not None else f"Environment variable '{key}' is not set."


@tool("Bash", "Run a shell command in the workspace and return its combined output.",
      {"command": {"type": "string"},
       "timeout": {"type": "integer", "description": "Milliseconds before the command is killed"},
       "description": {"type": "string", "description": "What the command does, in a few words"}},
      ("command",), admin_only=True, switch="shell")
def bash(ctx: ToolContext, args: dict) -> str:
    command = require_str(args, "command")
    limits = ctx.config.agent.tools
    timeout = limits.shell_timeout_secs
    requested = args.get("timeout")
    if isinstance(requested, (int, float)) and not isinstance(requested, bool) and requested > 0:
        timeout = min(requested / 1000.0, timeout)
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(["/bin/bash", "-c", command], cwd=ctx.workspace, stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, env=_child_env(),
                                   start_new_session=True)
        try:
            with killed_unless_waited(process):
                code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        size = output.tell()
        output.seek(0)
        text = output.read(limits.max_output_bytes).decode("utf-8", errors="replace")
    if size > limits.max_output_bytes:
        text = bound_output(text, limits.max_output_bytes, total=size)
    if code is None:
        raise ToolError(f"{text}\nCommand timed out after {timeout:g}s".lstrip())
    if code != 0:
        raise ToolError(f"{text}\nExit code {code}".lstrip())
    return text
