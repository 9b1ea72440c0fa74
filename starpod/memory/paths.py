"""Memory file names: validation (spec §1.2), routing to config/shared/user space, index identity.

A memory *name* is what the agent and the API use (`notes.md`, `knowledge/rust.md`, `SOUL.md`,
`users/<id>/USER.md`).  The four lifecycle files are routed to `config/`; `USER.md`, `MEMORY.md`
and `memory/...` go to the caller's private space `users/<id>/` when there is a caller; a name
under `users/` is only reachable by the user it belongs to.  The index keys every file by the name
that reads it back (its *source*) and records its *owner*: `""` for shared files, the user id for
files under `users/<id>/`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import BadRequest, PayloadTooLarge

CONFIG_FILES = ("SOUL.md", "HEARTBEAT.md", "BOOT.md", "BOOTSTRAP.md")
USER_FILES = ("USER.md", "MEMORY.md")
MAX_NAME_BYTES = 255
MAX_CONTENT_BYTES = 1_048_576
SHARED = ""
# Top-level directories that are not memory: the databases, other agents' data directories, and
# the workspace (users' projects and private uploads, which must not reach anyone's memory search).
EXCLUDED_DIRS = ("db", "instances", "workspace")
_USER_ID_RE = re.compile(r"^[A-Za-z0-9_@.+-]{1,128}$")


class MemoryPathError(BadRequest):
    """A memory file name or user id that fails validation."""


@dataclass(frozen=True)
class Location:
    """Where a memory name lives: absolute path, index source key and owner (`""` = shared)."""
    path: Path
    source: str
    owner: str


def validate_name(name: str) -> None:
    """Rules 1–5 of §1.2, in order; rule 6 needs the file system (see `resolve_inside`)."""
    if not name:
        raise MemoryPathError("File name cannot be empty")
    if not _is_text(name) or "\x00" in name:
        raise MemoryPathError("File name contains invalid characters")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise MemoryPathError(f"File name exceeds {MAX_NAME_BYTES} characters")
    if ".." in name:
        raise MemoryPathError("File name must not contain '..'")
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise MemoryPathError("File name must be a relative path")
    if not name.endswith(".md"):
        raise MemoryPathError("Only .md files are allowed")


def validate_content(content: str) -> None:
    if not _is_text(content):
        raise MemoryPathError("Content is not valid UTF-8 text")
    size = len(content.encode("utf-8"))
    if size > MAX_CONTENT_BYTES:
        raise PayloadTooLarge(f"Content size ({size} bytes) exceeds maximum ({MAX_CONTENT_BYTES} bytes)")


def _is_text(value: str) -> bool:
    """False for strings with unpaired surrogates, which cannot be written as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_user_id(user_id: str) -> str:
    if not _USER_ID_RE.match(user_id) or user_id in (".", ".."):
        raise MemoryPathError("Invalid user id")
    return user_id


def resolve_inside(base: Path, path: Path) -> Path:
    """Rule 6: the canonical path (symlinks of existing parts followed) must stay inside `base`."""
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise MemoryPathError("File path escapes the data directory")
    return resolved


def is_user_file(name: str) -> bool:
    return name in USER_FILES or name.startswith("memory/")


def locate(home: Path, name: str, user_id: str | None) -> Location:
    """Validate `name` and route it for the caller `user_id` (None = no private space)."""
    validate_name(name)
    clean = PurePosixPath(name)
    if str(clean) in CONFIG_FILES:
        return _checked(home, home / "config" / str(clean), str(clean), SHARED, user_id)
    if user_id is not None and is_user_file(str(clean)):
        clean = PurePosixPath("users", validate_user_id(user_id), clean)
    return _checked(home, home / clean, str(clean), owner_of(clean.parts), user_id)


def _checked(home: Path, path: Path, source: str, owner: str | None, user_id: str | None) -> Location:
    if owner is None or (owner and owner != user_id):
        raise MemoryPathError("File is in another user's private space")
    if source.split("/", 1)[0] in EXCLUDED_DIRS:
        raise MemoryPathError("File path is outside the memory directories")
    resolved = resolve_inside(home, path)
    # A symlink must not lead into an excluded directory or someone else's space either.
    real = resolved.relative_to(home).parts
    if (real and real[0] in EXCLUDED_DIRS) or owner_of(real) not in (SHARED, owner):
        raise MemoryPathError("File path escapes the data directory")
    return Location(path, source, owner)


def owner_of(parts: tuple[str, ...]) -> str | None:
    """Owner of a path relative to home: user id under `users/<id>/`, `""` elsewhere, None for `users/x.md`."""
    if parts and parts[0] == "users":
        return parts[1] if len(parts) >= 3 else None
    return SHARED


def index_identity(home: Path, path: Path) -> tuple[str, str] | None:
    """(source, owner) of a file found on disk under `home`, or None when it is not indexed."""
    try:
        parts = path.relative_to(home).parts
    except ValueError:
        return None
    if not parts or not parts[-1].endswith(".md") or parts[0] in EXCLUDED_DIRS:
        return None
    if len(parts) == 2 and parts[0] == "config" and parts[1] in CONFIG_FILES:
        return parts[1], SHARED
    if len(parts) == 1 and parts[0] in CONFIG_FILES:
        return None  # unreachable by name: those names are routed to config/
    owner = owner_of(parts)
    if owner is None:
        return None
    return "/".join(parts), owner


def source_path(home: Path, source: str) -> Path:
    """The file an index source key stands for."""
    return home / "config" / source if source in CONFIG_FILES else home / source


def space_relative(source: str) -> str:
    """The name inside its space: `users/<id>/memory/x.md` → `memory/x.md`; shared names unchanged."""
    parts = source.split("/")
    return "/".join(parts[2:]) if parts[0] == "users" and len(parts) >= 3 else source
