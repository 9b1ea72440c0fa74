"""The agent's tools.  Importing this package registers the built-in tools; other areas add
theirs with `register_tool` (see registry)."""
from . import cron, files, memory, shell, skills  # noqa: F401  (registration side effects)
from .registry import (Tool, ToolContext, ToolError, ToolResult, available_tools, register_tool,
                       registered_tools, run_tool, tool)

__all__ = ["Tool", "ToolContext", "ToolError", "ToolResult", "available_tools", "register_tool",
           "registered_tools", "run_tool", "tool"]
