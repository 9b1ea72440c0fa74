"""Where the agent may touch files: the workspace (project root) under the data directory.

Uploaded attachments live in `<workspace>/downloads/`.  Every file tool resolves paths through
`resolve_inside`, which follows symlinks before checking, so a link cannot lead outside.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config


def workspace_root(config: Config) -> Path:
    """The project root the agent works in (created on demand)."""
    root = config.home / "workspace"
    root.mkdir(parents=True, exist_ok=True)
    return root


def downloads_dir(config: Config) -> Path:
    return workspace_root(config) / "downloads"


def resolve_inside(root: Path, path: str) -> Path | None:
    """`path` (absolute, or relative to `root`) resolved; None when it leaves `root`."""
    base = root.resolve()
    candidate = Path(path)
    target = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if target == base or base in target.parents:
        return target
    return None
