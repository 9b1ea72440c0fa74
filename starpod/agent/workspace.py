"""Where the agent may touch files: the workspace (project root) under the data directory.

Every user has a private workspace `<workspace>/users/<user_id>/`; their uploads are saved in its
`downloads/`.  A caller's file tools are confined to their *sandbox*: their own workspace, or the
whole workspace for admins.  Every file tool resolves paths through `resolve_inside`, which
follows symlinks before checking, so a link cannot lead outside.  The workspace is not memory:
it is never indexed for memory search.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from ..memory.paths import validate_user_id
from .filescan import resolve_inside

__all__ = ["resolve_inside", "sandbox_root", "user_downloads_dir", "user_workspace", "workspace_root"]


def _existing_dir(path: Path) -> Path:
    """`path`, created with its parents when missing (a stat when it exists: every chat asks)."""
    if not os.path.isdir(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def workspace_root(config: Config) -> Path:
    """The whole workspace (created on demand)."""
    return _existing_dir(config.home / "workspace")


def _user_dir(config: Config, user_id: str) -> Path:
    return workspace_root(config) / "users" / validate_user_id(user_id)


def user_workspace(config: Config, user_id: str) -> Path:
    """The private workspace of `user_id` (created on demand)."""
    return _existing_dir(_user_dir(config, user_id))


def user_downloads_dir(config: Config, user_id: str) -> Path:
    """Where uploads of `user_id` (WebSocket attachments, Telegram files) are saved; the saver
    creates it (`mkdir(parents=True)`) when it first writes there."""
    return _user_dir(config, user_id) / "downloads"


def sandbox_root(config: Config, user_id: str, is_admin: bool) -> Path:
    """The directory a caller's file tools may see: the whole workspace for admins."""
    return workspace_root(config) if is_admin else user_workspace(config, user_id)
