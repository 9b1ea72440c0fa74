"""The open tool registry: every tool the model can call, and how a call is executed.

A tool is a name, a description, a JSON-schema for its input and a handler
`handler(ctx, input) -> str` that raises `ToolError` for an error result.  Other areas add tools
with `register_tool(...)` (the scheduler registers the cron tools).  Dangerous tools are
`admin_only` and may name a `[tools]` switch in agent.toml; they are neither offered to nor run
for other callers (who get the tool's `refusal`, when it has one, as the error).  Every result is
bounded to `[tools] max_output_bytes`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...config import Config
from ..providers import ToolSpec
from ..workspace import sandbox_root

log = logging.getLogger(__name__)

TRUNCATION_NOTE = "\n... [output truncated: {total} bytes in total]"
NOTE_SLACK = 128


class ToolError(Exception):
    """Raised by a handler: its message becomes an `is_error` tool result."""


@dataclass
class ToolContext:
    """Who is calling and where: handed to every tool handler."""
    config: Config
    user_id: str
    is_admin: bool
    session_id: str

    @property
    def home(self) -> Path:
        return self.config.home

    @property
    def workspace(self) -> Path:
        """The caller's sandbox: their own workspace, or the whole workspace for admins."""
        return sandbox_root(self.config, self.user_id, self.is_admin)


@dataclass
class ToolResult:
    content: str
    is_error: bool = False


@dataclass
class Tool:
    name: str
    description: str
    input_schema: dict
    handler: Callable[[ToolContext, dict], str]
    admin_only: bool = False
    switch: str | None = None  # attribute of `[tools]` in agent.toml that can turn the tool off
    refusal: str | None = None  # what a non-admin caller of an admin-only tool is told

    @property
    def required(self) -> list[str]:
        return list(self.input_schema.get("required", ()))

    def available(self, ctx: ToolContext) -> bool:
        if self.admin_only and not ctx.is_admin:
            return False
        return self.switch is None or bool(getattr(ctx.config.agent.tools, self.switch))

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.input_schema)


_registry: dict[str, Tool] = {}


def register_tool(tool: Tool) -> Tool:
    """Add (or replace) a tool by name."""
    _registry[tool.name] = tool
    return tool


def tool(name: str, description: str, properties: dict, required: tuple[str, ...] = (), **options) -> Callable:
    """Decorator form of `register_tool` for a handler function."""
    schema = {"type": "object", "properties": properties, "required": list(required)}

    def decorator(handler: Callable[[ToolContext, dict], str]) -> Callable:
        register_tool(Tool(name, description, schema, handler, **options))
        return handler
    return decorator


def registered_tools() -> list[Tool]:
    return list(_registry.values())


def available_tools(ctx: ToolContext) -> list[Tool]:
    return [t for t in _registry.values() if t.available(ctx)]


def bound_output(text: str, max_bytes: int, total: int | None = None) -> str:
    """`text` cut to `max_bytes` with a note giving the full size (`total` when the producer knew
    more than it kept).  Text already within the cap plus a note's worth of slack is left alone,
    so a tool that bounded its own output is not cut twice."""
    raw = text.encode("utf-8")
    if total is None and len(raw) <= max_bytes + NOTE_SLACK:
        return text
    kept = raw[:max_bytes].decode("utf-8", errors="ignore")
    return kept + TRUNCATION_NOTE.format(total=max(total or 0, len(raw)))


def run_tool(ctx: ToolContext, name: str, arguments: Any) -> ToolResult:
    """Execute one tool call; never raises."""
    found = _registry.get(name)
    if found is not None and found.refusal and found.admin_only and not ctx.is_admin:
        return ToolResult(found.refusal, True)
    if found is None or not found.available(ctx):
        return ToolResult(f"Tool '{name}' is not available.", True)
    arguments = arguments if isinstance(arguments, dict) else {}
    for field_name in found.required:
        if arguments.get(field_name) is None:
            return ToolResult(f"Missing required field '{field_name}'", True)
    try:
        content, is_error = found.handler(ctx, arguments), False
    except ToolError as exc:
        content, is_error = str(exc), True
    except Exception as exc:  # a tool bug must not end the run
        log.exception("tool %s failed", name)
        content, is_error = f"Tool execution error: {exc}", True
    if not isinstance(content, str):
        content = json.dumps(content, indent=2, ensure_ascii=False)
    return ToolResult(bound_output(content, ctx.config.agent.tools.max_output_bytes), is_error)


def require_str(arguments: dict, name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise ToolError(f"Field '{name}' must be a string")
    return value


def optional_int(arguments: dict, name: str, default: int, low: int = 0, high: int | None = None) -> int:
    value = arguments.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError(f"Field '{name}' must be an integer")
    value = max(int(value), low)
    return min(value, high) if high is not None else value
