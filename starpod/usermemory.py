"""Each user's private memory files as an admin manages them: `users/<id>/USER.md`, `MEMORY.md` and
the daily logs under `users/<id>/memory/`.

A user is known when it is an account or already has a space on disk (chats of an auth-disabled
server, for instance, file memory under ids that are not accounts).  Reads never create anything;
writes go through the memory store, so they are atomic and the search index has the new text
before the call returns.  No Flask here.
"""
from __future__ import annotations

from pathlib import Path

from . import accounts
from .errors import BadRequest, NotFound
from .memory import MemoryStore
from .memory.paths import MemoryPathError, locate, validate_content, validate_user_id

FILES = {"user_md": "USER.md", "memory_md": "MEMORY.md"}
USER_NOT_FOUND = "User not found"


def _space(store: MemoryStore, user_id: str) -> Path:
    return store.home / "users" / user_id


def _space_ids(store: MemoryStore) -> list[str]:
    """Ids of the spaces on disk (directories under users/ whose names are valid ids)."""
    root = store.home / "users"
    if not root.is_dir():
        return []
    ids = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        try:
            if entry.is_dir() and not entry.is_symlink():
                ids.append(validate_user_id(entry.name))
        except MemoryPathError:
            continue
    return ids


def _is_known(store: MemoryStore, user_id: str) -> bool:
    try:
        validate_user_id(user_id)
    except MemoryPathError:
        return False
    space = _space(store, user_id)
    if space.is_dir() and not space.is_symlink():
        return True
    try:
        accounts.get_user(user_id)
    except NotFound:
        return False
    return True


def _check_known(store: MemoryStore, user_id: str) -> None:
    if not _is_known(store, user_id):
        raise NotFound(USER_NOT_FOUND)


def _file(store: MemoryStore, user_id: str, name: str) -> Path:
    return locate(store.home, name, user_id).path


def _is_plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _daily_log_count(store: MemoryStore, user_id: str) -> int:
    directory = _space(store, user_id) / "memory"
    if not directory.is_dir():
        return 0
    return sum(1 for entry in directory.iterdir() if entry.name.endswith(".md") and entry.is_file())


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return ""


def list_user_memory(store: MemoryStore) -> list[dict]:
    """Every account (in creation order), then every other space on disk: which files exist."""
    ids = [user.id for user in accounts.list_users()]
    account_ids = set(ids)
    ids += [user_id for user_id in _space_ids(store) if user_id not in account_ids]
    return [{"id": user_id,
             **{f"has_{key}": _is_plain_file(_space(store, user_id) / name) for key, name in FILES.items()},
             "daily_log_count": _daily_log_count(store, user_id)}
            for user_id in ids]


def get_user_memory(store: MemoryStore, user_id: str) -> dict:
    """The user's USER.md and MEMORY.md texts ("" when missing) and daily log count; NotFound if unknown."""
    _check_known(store, user_id)
    return {"id": user_id, **{key: _read(_file(store, user_id, name)) for key, name in FILES.items()},
            "daily_log_count": _daily_log_count(store, user_id)}


def update_user_memory(store: MemoryStore, user_id: str, texts: dict[str, str | None]) -> dict:
    """Replace the given files (`user_md`, `memory_md`; None = leave as is) and re-index them."""
    _check_known(store, user_id)
    changes = {key: text for key, text in texts.items() if key in FILES and text is not None}
    if not changes:
        raise BadRequest("Nothing to update: give user_md and/or memory_md",
                         fields={key: ["give user_md and/or memory_md"] for key in FILES})
    for text in changes.values():  # refuse oversized content before writing either file
        validate_content(text)
    for key, text in changes.items():
        store.write(FILES[key], text, user_id)
    return get_user_memory(store, user_id)
