"""File tools over the workspace: FileRead/FileWrite/FileList/FileDelete and Read/Glob/Grep.

File* tools take workspace-relative paths (absolute paths, `..`, the `.starpod` data directory
and symlink escapes are refused).  Read/Glob/Grep also accept absolute paths, as long as they
resolve inside the workspace.  FileWrite and FileDelete are admin-only (`[tools] file_write`).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path, PurePosixPath

from ..workspace import resolve_inside
from .registry import ToolContext, ToolError, optional_int, require_str, tool

MAX_READ_BYTES = 10 * 1024 * 1024
MAX_GLOB_RESULTS = 200
MAX_GREP_FILE_BYTES = 5 * 1024 * 1024
SKIPPED_DIRS = {".git", ".starpod", "__pycache__", "node_modules"}


def _sandboxed(ctx: ToolContext, path: str) -> Path:
    """A File* tool path: relative, no `..`, not the data dir, resolving inside the workspace."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not path.strip() or os.path.isabs(path) or ".." in parts or (parts and parts[0] == ".starpod"):
        raise ToolError(f"Invalid path: {path}")
    target = resolve_inside(ctx.workspace, path)
    if target is None:
        raise ToolError(f"Invalid path: {path} escapes the workspace")
    return target


def _inside(ctx: ToolContext, path: str | None) -> Path:
    """A Read/Glob/Grep path: absolute or workspace-relative, resolving inside the workspace."""
    target = resolve_inside(ctx.workspace, path or ".")
    if target is None:
        raise ToolError(f"Path is outside the workspace: {path}")
    return target


def _read_text(target: Path, shown: str) -> str:
    if not target.is_file():
        raise ToolError(f"File not found: {shown}")
    if target.stat().st_size > MAX_READ_BYTES:
        raise ToolError(f"File too large to read: {shown}")
    data = target.read_bytes()
    if b"\0" in data[:8192]:
        raise ToolError(f"Binary file cannot be shown as text: {shown}")
    return data.decode("utf-8", errors="replace")


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


@tool("Read", "Read a text file of the workspace with line numbers (cat -n style).",
      {"file_path": {"type": "string", "description": "Absolute or workspace-relative path"},
       "offset": {"type": "integer", "description": "First line (1-based)"},
       "limit": {"type": "integer", "description": "Number of lines (default 2000)"}}, ("file_path",))
def read(ctx: ToolContext, args: dict) -> str:
    path = require_str(args, "file_path")
    lines = _read_text(_inside(ctx, path), path).splitlines()
    offset = optional_int(args, "offset", 1, low=1)
    limit = optional_int(args, "limit", 2000, low=1)
    chosen = lines[offset - 1: offset - 1 + limit]
    return "\n".join(f"{number:6}\t{line}" for number, line in enumerate(chosen, start=offset))


def _walk_files(root: Path):
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _relative(ctx: ToolContext, path: Path) -> str:
    return str(path.relative_to(ctx.workspace.resolve()))


@tool("Glob", "Find workspace files matching a glob pattern (e.g. '**/*.py'), newest first.",
      {"pattern": {"type": "string"}, "path": {"type": "string", "description": "Directory to search in"}},
      ("pattern",))
def glob_files(ctx: ToolContext, args: dict) -> str:
    pattern = require_str(args, "pattern")
    if os.path.isabs(pattern) or ".." in PurePosixPath(pattern).parts:
        raise ToolError(f"Invalid pattern: {pattern}")
    base = _inside(ctx, args.get("path"))
    root = ctx.workspace.resolve()
    matches = [p for p in base.glob(pattern) if p.is_file() and resolve_inside(root, str(p)) is not None]
    matches.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    if not matches:
        return "No files found"
    shown = [_relative(ctx, p.resolve()) for p in matches[:MAX_GLOB_RESULTS]]
    if len(matches) > MAX_GLOB_RESULTS:
        shown.append(f"... and {len(matches) - MAX_GLOB_RESULTS} more")
    return "\n".join(shown)


@tool("Grep", "Search workspace file contents with a regular expression.",
      {"pattern": {"type": "string"}, "path": {"type": "string"},
       "glob": {"type": "string", "description": "Only files whose name matches, e.g. '*.md'"},
       "output_mode": {"type": "string", "enum": ["files_with_matches", "content", "count"]},
       "case_insensitive": {"type": "boolean"},
       "head_limit": {"type": "integer", "description": "Maximum output lines (default 100)"}},
      ("pattern",))
def grep(ctx: ToolContext, args: dict) -> str:
    try:
        regex = re.compile(require_str(args, "pattern"), re.IGNORECASE if args.get("case_insensitive") else 0)
    except re.error as exc:
        raise ToolError(f"Invalid regular expression: {exc}") from exc
    mode = args.get("output_mode") or "files_with_matches"
    if mode not in ("files_with_matches", "content", "count"):
        raise ToolError(f"Unknown output_mode: {mode}")
    name_glob = args.get("glob")
    head_limit = optional_int(args, "head_limit", 100, low=1)
    out: list[str] = []
    for path in _walk_files(_inside(ctx, args.get("path"))):
        if len(out) >= head_limit:
            break
        if name_glob and not fnmatch.fnmatch(path.name, name_glob):
            continue
        try:
            if path.stat().st_size > MAX_GREP_FILE_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue
        hits = [(n, line) for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1)
                if regex.search(line)]
        if not hits:
            continue
        name = _relative(ctx, path.resolve())
        if mode == "files_with_matches":
            out.append(name)
        elif mode == "count":
            out.append(f"{name}:{len(hits)}")
        else:
            out.extend(f"{name}:{n}:{line}" for n, line in hits[: head_limit - len(out)])
    return "\n".join(out) if out else "No matches found"
