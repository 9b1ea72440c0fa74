"""Memory tools: MemorySearch, MemoryWrite and MemoryAppendDaily over the caller's memory space.

Search covers the shared agent files plus the caller's own `users/<id>/` space; writes of
USER.md / MEMORY.md / memory/… and the daily log go to the caller's space (the store routes them);
shared files can be written by admin callers only.
"""
from __future__ import annotations

import json

from ...memory import get_store
from ...memory.paths import SHARED
from .registry import ToolContext, ToolError, optional_int, require_str, tool


def _memory_call(prefix: str, action):
    try:
        return action()
    except Exception as exc:  # the store's validation errors are shown to the model as-is
        raise ToolError(f"{prefix}: {exc}") from exc


@tool("MemorySearch", "Full-text search over memory files (shared knowledge and your user's notes).",
      {"query": {"type": "string"}, "limit": {"type": "integer", "description": "Max results (default 5)"}},
      ("query",))
def memory_search(ctx: ToolContext, args: dict) -> str:
    query = require_str(args, "query")
    limit = optional_int(args, "limit", 5, low=1, high=50)
    hits = _memory_call("Memory search error", lambda: get_store(ctx.config).search(query, ctx.user_id, limit))
    return json.dumps([{"source": h.path, "text": h.text, "lines": f"{h.line_start}-{h.line_end}"} for h in hits],
                      indent=2, ensure_ascii=False)


@tool("MemoryWrite", "Write a markdown memory file (e.g. USER.md, MEMORY.md, knowledge/topic.md).",
      {"file": {"type": "string"}, "content": {"type": "string"}}, ("file", "content"))
def memory_write(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "file")
    content = require_str(args, "content")
    store = get_store(ctx.config)
    location = _memory_call("Memory write error", lambda: store.locate(name, ctx.user_id))
    # Shared files (SOUL.md, knowledge/...) shape the agent for everyone: only admins change them.
    if location.owner == SHARED and not ctx.is_admin:
        raise ToolError(f"Memory write error: {name} is shared memory, which only an admin can change; "
                        "write USER.md, MEMORY.md or memory/<name>.md for notes about this user")
    _memory_call("Memory write error", lambda: store.write(name, content, ctx.user_id))
    return f"Successfully wrote {name}"


@tool("MemoryAppendDaily", "Append a note to today's daily log.", {"text": {"type": "string"}}, ("text",))
def memory_append_daily(ctx: ToolContext, args: dict) -> str:
    text = require_str(args, "text")
    _memory_call("Daily append error", lambda: get_store(ctx.config).append_daily(text, ctx.user_id))
    return "Appended to daily log."
