"""The file scanning behind the Read, Glob and Grep tools, and the sandbox path check.

This module imports only the standard library: the tools run it as a script in a child process
(`python -I filescan.py`, see tools/bounded.py), where a catastrophic regular expression or a huge
tree costs only that child's bounded CPU time and memory, never the server worker's.

Protocol: one JSON request on stdin `{"op": "read"|"glob"|"grep", "root": <sandbox root>,
"args": {...}, "cpu_secs": n, "memory_bytes": n}`, one JSON answer on stdout `{"ok": text}` or
`{"error": message}`.  Every path is resolved (symlinks followed) and must stay inside the
sandbox root: a link leading outside is refused (Read) or skipped (Glob, Grep).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from pathlib import Path, PurePosixPath

MAX_READ_BYTES = 10 * 1024 * 1024
MAX_GLOB_RESULTS = 200
MAX_GREP_FILE_BYTES = 5 * 1024 * 1024
SKIPPED_DIRS = {".git", ".starpod", "__pycache__", "node_modules"}


class ScanError(Exception):
    """A request the scan refuses; the message is shown to the model."""


def resolve_inside(root: Path, path: str) -> Path | None:
    """`path` (absolute, or relative to `root`) resolved; None when it leaves `root`."""
    base = root.resolve()
    candidate = Path(path)
    target = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if target == base or base in target.parents:
        return target
    return None


def _inside(root: Path, path: str | None) -> Path:
    target = resolve_inside(root, path or ".")
    if target is None:
        raise ScanError(f"Path is outside the workspace: {path}")
    return target


def _relative(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def read_text(target: Path, shown: str) -> str:
    if not target.is_file():
        raise ScanError(f"File not found: {shown}")
    if target.stat().st_size > MAX_READ_BYTES:
        raise ScanError(f"File too large to read: {shown}")
    data = target.read_bytes()
    if b"\0" in data[:8192]:
        raise ScanError(f"Binary file cannot be shown as text: {shown}")
    return data.decode("utf-8", errors="replace")


def read(root: Path, args: dict) -> str:
    path, offset, limit = args["file_path"], args["offset"], args["limit"]
    lines = read_text(_inside(root, path), path).splitlines()
    chosen = lines[offset - 1: offset - 1 + limit]
    return "\n".join(f"{number:6}\t{line}" for number, line in enumerate(chosen, start=offset))


def _walk_files(root: Path, start: Path):
    """Regular files under `start` whose real location is inside `root` (links out are skipped)."""
    if start.is_file():
        yield start
        return
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            real = resolve_inside(root, os.path.join(dirpath, name))
            if real is not None and real.is_file():
                yield real


def glob(root: Path, args: dict) -> str:
    pattern = args["pattern"]
    if os.path.isabs(pattern) or ".." in PurePosixPath(pattern).parts:
        raise ScanError(f"Invalid pattern: {pattern}")
    base = _inside(root, args.get("path"))
    matches = {real for real in (resolve_inside(root, str(p)) for p in base.glob(pattern))
               if real is not None and real.is_file()}
    if not matches:
        return "No files found"
    ordered = sorted(matches, key=lambda p: p.stat().st_mtime, reverse=True)
    shown = [_relative(root, p) for p in ordered[:MAX_GLOB_RESULTS]]
    if len(ordered) > MAX_GLOB_RESULTS:
        shown.append(f"... and {len(ordered) - MAX_GLOB_RESULTS} more")
    return "\n".join(shown)


def _file_lines(path: Path) -> list[str] | None:
    """The text lines of a greppable file; None for unreadable, oversized or binary files."""
    try:
        if path.stat().st_size > MAX_GREP_FILE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace").splitlines()


def grep(root: Path, args: dict) -> str:
    try:
        regex = re.compile(args["pattern"], re.IGNORECASE if args.get("case_insensitive") else 0)
    except re.error as exc:
        raise ScanError(f"Invalid regular expression: {exc}") from exc
    mode, name_glob, head_limit = args["output_mode"], args.get("glob"), args["head_limit"]
    out: list[str] = []
    for path in _walk_files(root, _inside(root, args.get("path"))):
        if len(out) >= head_limit:
            break
        if name_glob and not fnmatch.fnmatch(path.name, name_glob):
            continue
        lines = _file_lines(path)
        hits = [(n, line) for n, line in enumerate(lines or (), 1) if regex.search(line)]
        if not hits:
            continue
        name = _relative(root, path)
        if mode == "files_with_matches":
            out.append(name)
        elif mode == "count":
            out.append(f"{name}:{len(hits)}")
        else:
            out.extend(f"{name}:{n}:{line}" for n, line in hits[: head_limit - len(out)])
    return "\n".join(out) if out else "No matches found"


OPERATIONS = {"read": read, "glob": glob, "grep": grep}


def _limit_self(cpu_secs: int, memory_bytes: int) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_secs, cpu_secs + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def answer(request: dict) -> dict:
    """Run one request; ScanError and memory exhaustion become an error answer."""
    try:
        return {"ok": OPERATIONS[request["op"]](Path(request["root"]).resolve(), request["args"])}
    except ScanError as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": "The search needed more memory than a tool may use"}


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    _limit_self(request["cpu_secs"], request["memory_bytes"])
    sys.stdout.write(json.dumps(answer(request)))  # ASCII: file names may hold surrogate escapes


if __name__ == "__main__":
    main()
