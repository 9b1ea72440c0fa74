"""File tools over the caller's sandbox: FileRead/FileWrite/FileList/FileDelete and Read/Glob/Grep.

The sandbox is the caller's own workspace, or the whole workspace for admins (see workspace.py).
File* tools take sandbox-relative paths (absolute paths, `..`, the `.starpod` data directory
and symlink escapes are refused).  Read/Glob/Grep also accept absolute paths, as long as they
resolve inside the sandbox; they run in a bounded child process (filescan, `[tools] timeout_secs`)
so a catastrophic regex or a huge tree never stalls the worker.  FileWrite and FileDelete are
admin-only (`[tools] file_write`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from .. import filescan
from ..workspace import resolve_inside
from .bounded import run_isolated_python
from .registry import ToolContext, ToolError, optional_int, require_str, tool

GREP_MODES = ("files_with_matches", "content", "count")
SCAN_MEMORY_BYTES = 1024 * 1024 * 1024


def _sandboxed(ctx: ToolContext, path: str) -> Path:
    """A File* tool path: relative, no `..`, not the data dir, resolving inside the sandbox."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not path.strip() or os.path.isabs(path) or ".." in parts or (parts and parts[0] == ".starpod"):
        raise ToolError(f"Invalid path: {path}")
    target = resolve_inside(ctx.workspace, path)
    if target is None:
        raise ToolError(f"Invalid path: {path} escapes the workspace")
    return target


def _read_text(target: Path, shown: str) -> str:
    try:
        return filescan.read_text(target, shown)
    except filescan.ScanError as exc:
        raise ToolError(str(exc)) from exc


@tool("FileRead", "Read a text file in the workspace (path relative to the workspace root).",
      {"path": {"type": "string", "description": "Relative path inside the workspace"}}, ("path",))
def file_read(ctx: ToolContext, args: dict) -> str:
    path = require_str(args, "path")
    return _read_text(_sandboxed(ctx, path), path)


@tool("FileWrite", "Create or overwrite a file in the workspace; parent directories are created.",
      {"path": {"type": "string"}, "content": {"type": "string"}}, ("path", "content"),
      admin_only=True, switch="file_write")
def file_write(ctx: ToolContext, args: dict) -> str:
    path = require_str(args, "path")
    content = require_str(args, "content")
    target = _sandboxed(ctx, path)
    if target.is_dir():
        raise ToolError(f"Invalid path: {path} is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")
    return f"Successfully wrote {path}"


@tool("FileList", "List a workspace directory as JSON [{name, size, type}], sorted by name.",
      {"path": {"type": "string", "description": "Relative directory, default '.'"}})
def file_list(ctx: ToolContext, args: dict) -> str:
    path = args.get("path") or "."
    if not isinstance(path, str):
        raise ToolError("Field 'path' must be a string")
    target = ctx.workspace.resolve() if path in (".", "./") else _sandboxed(ctx, path)
    if not target.is_dir():
        raise ToolError(f"Directory not found: {path}")
    entries = []
    for child in sorted(target.iterdir(), key=lambda p: p.name):
        if child.name == ".starpod":
            continue
        is_dir = child.is_dir()
        entries.append({"name": child.name + ("/" if is_dir else ""), "size": 0 if is_dir else child.stat().st_size,
                        "type": "directory" if is_dir else "file"})
    return json.dumps(entries, indent=2, ensure_ascii=False)


@tool("FileDelete", "Delete a file in the workspace.", {"path": {"type": "string"}}, ("path",),
      admin_only=True, switch="file_write")
def file_delete(ctx: ToolContext, args: dict) -> str:
    path = require_str(args, "path")
    target = _sandboxed(ctx, path)
    if not target.is_file():
        return f"File not found: {path}"
    target.unlink()
    return f"Deleted {path}"


def _scan(ctx: ToolContext, op: str, args: dict) -> str:
    """One Read/Glob/Grep request, run by filescan in a bounded child process."""
    seconds = ctx.config.agent.tools.timeout_secs
    # One CPU-second per wall second at most: the wall deadline stops a runaway scan first, and the
    # CPU limit (a second later) is only the backstop should the worker fail to kill the child.
    request = {"op": op, "root": str(ctx.workspace.resolve()), "args": args, "cpu_secs": seconds + 1,
               "memory_bytes": SCAN_MEMORY_BYTES}
    answer = json.loads(run_isolated_python(Path(filescan.__file__), json.dumps(request).encode(), seconds, op.title()))
    if "error" in answer:
        raise ToolError(answer["error"])
    return answer["ok"]


@tool("Read", "Read a text file of the workspace with line numbers (cat -n style).",
      {"file_path": {"type": "string", "description": "Absolute or workspace-relative path"},
       "offset": {"type": "integer", "description": "First line (1-based)"},
       "limit": {"type": "integer", "description": "Number of lines (default 2000)"}}, ("file_path",))
def read(ctx: ToolContext, args: dict) -> str:
    return _scan(ctx, "read", {"file_path": require_str(args, "file_path"),
                               "offset": optional_int(args, "offset", 1, low=1),
                               "limit": optional_int(args, "limit", 2000, low=1)})


@tool("Glob", "Find workspace files matching a glob pattern (e.g. '**/*.py'), newest first.",
      {"pattern": {"type": "string"}, "path": {"type": "string", "description": "Directory to search in"}},
      ("pattern",))
def glob_files(ctx: ToolContext, args: dict) -> str:
    return _scan(ctx, "glob", {"pattern": require_str(args, "pattern"), "path": _optional_str(args, "path")})


@tool("Grep", "Search workspace file contents with a regular expression.",
      {"pattern": {"type": "string"}, "path": {"type": "string"},
       "glob": {"type": "string", "description": "Only files whose name matches, e.g. '*.md'"},
       "output_mode": {"type": "string", "enum": list(GREP_MODES)},
       "case_insensitive": {"type": "boolean"},
       "head_limit": {"type": "integer", "description": "Maximum output lines (default 100)"}},
      ("pattern",))
def grep(ctx: ToolContext, args: dict) -> str:
    mode = args.get("output_mode") or "files_with_matches"
    if mode not in GREP_MODES:
        raise ToolError(f"Unknown output_mode: {mode}")
    return _scan(ctx, "grep", {"pattern": require_str(args, "pattern"), "path": _optional_str(args, "path"),
                               "glob": _optional_str(args, "glob"), "output_mode": mode,
                               "case_insensitive": bool(args.get("case_insensitive")),
                               "head_limit": optional_int(args, "head_limit", 100, low=1)})


def _optional_str(args: dict, name: str) -> str | None:
    value = args.get(name)
    if value is not None and not isinstance(value, str):
        raise ToolError(f"Field '{name}' must be a string")
    return value or None
