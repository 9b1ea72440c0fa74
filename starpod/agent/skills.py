"""Skills: reusable instructions under `<home>/skills/<name>/SKILL.md`.

A SKILL.md starts with a small front-matter block (`name`, `description`, optional `version`,
`created_at`) followed by the body the model receives on `SkillActivate`.  `agent.toml`'s `skills`
list, when not empty, restricts which skills are offered.  The agent's skill tools and the admin
REST API both go through this module; writes are atomic and serialised across processes.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..configfile import atomic_write, file_lock
from ..errors import BadRequest, Conflict, NotFound, PayloadTooLarge, StarpodError
from ..memory.filecache import FileCache
from ..timeutil import now_iso

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")
FRONT_MATTER_RE = re.compile(r"\A---\n(.*?)\n---\n?", re.DOTALL)
MAX_SKILL_BYTES = 256 * 1024
NO_FOLDER = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # no skills folder, as `Path.is_dir` tells it

log = logging.getLogger(__name__)


# Every chat lists the skills for its system prompt; unchanged SKILL.md files are not parsed again.
_parsed = FileCache(errors="strict")


class SkillUnreadable(StarpodError):
    """A SKILL.md on disk that is not UTF-8 text (or not a file): the server's problem, not the request's."""
    status = 500


def _invalid(field: str, message: str) -> BadRequest:
    return BadRequest(message, fields={field: [message]})


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    body: str
    created_at: str
    version: str | None = None


def skills_dir(home: Path) -> Path:
    return home / "skills"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _invalid("name", f"Invalid skill name '{name}': use letters, digits, '-' and '_' (max 64)")
    return name


def _skill_file(home: Path, name: str) -> Path:
    return skills_dir(home) / validate_name(name) / "SKILL.md"


def _check_fields(description: str, body: str, version: str | None) -> None:
    if version and not VERSION_RE.match(version):
        raise _invalid("version", "Invalid version: letters, digits, '.', '_', '+' and '-' (max 32)")
    size = len(description.encode("utf-8")) + len(body.encode("utf-8"))
    if size > MAX_SKILL_BYTES:
        raise PayloadTooLarge(f"Skill size ({size} bytes) exceeds maximum ({MAX_SKILL_BYTES} bytes)")


def _parse(name: str, text: str, fallback_created: str) -> Skill:
    meta: dict[str, str] = {}
    body = text
    match = FRONT_MATTER_RE.match(text)
    if match:
        for line in match.group(1).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                meta[key.strip()] = value.strip()
        body = text[match.end():]
    return Skill(meta.get("name") or name, meta.get("description", ""), body.strip("\n"),
                 meta.get("created_at") or fallback_created, meta.get("version") or None)


def _render(skill: Skill) -> str:
    description = " ".join(skill.description.split())
    version = f"version: {skill.version}\n" if skill.version else ""
    return (f"---\nname: {skill.name}\ndescription: {description}\n{version}created_at: {skill.created_at}\n"
            f"---\n\n{skill.body.rstrip()}\n")


def get_skill(home: Path, name: str) -> Skill | None:
    """The skill, None when it does not exist; SkillUnreadable for a damaged file."""
    return _read_skill(name, os.fspath(_skill_file(home, name)))


def _read_skill(name: str, path: str) -> Skill | None:
    """`get_skill` of the valid `name` whose SKILL.md is at `path`."""
    try:
        return _parsed.read(path, path, lambda text: _parse(name, text, ""))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, OSError) as exc:
        raise SkillUnreadable(f"Skill '{name}' cannot be read: {exc.__class__.__name__}") from exc


def list_skills(home: Path, only: tuple[str, ...] = ()) -> list[Skill]:
    """Every readable skill, by name; `only` (agent.toml `skills`) filters when non-empty.
    Every chat lists them for its system prompt: the folder is scanned by plain path strings
    (Path objects per skill cost more than reading its unchanged SKILL.md from the cache)."""
    found = []
    root = os.fspath(skills_dir(home))
    try:
        with os.scandir(root) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError as exc:
        if exc.errno in NO_FOLDER:
            return found
        raise
    for name in names:
        if not NAME_RE.match(name) or (only and name not in only):
            continue
        try:
            skill = _read_skill(name, os.path.join(root, name, "SKILL.md"))
        except SkillUnreadable as exc:
            log.warning("%s", exc)
            continue
        if skill is not None:
            found.append(skill)
    return found


def save_skill(home: Path, name: str, description: str, body: str, create: bool,
               version: str | None = None) -> Skill:
    """Create (Conflict when it exists) or update (NotFound when missing) a skill.

    `version` None keeps an updated skill's version; "" removes it.
    """
    path = _skill_file(home, name)
    _check_fields(description, body, version)
    with file_lock(skills_dir(home), home):
        existing = get_skill(home, name)
        if create and existing is not None:
            raise Conflict(f"Skill '{name}' already exists.")
        if not create and existing is None:
            raise NotFound(f"Skill '{name}' not found.")
        kept_version = existing.version if existing and version is None else version
        created_at = existing.created_at if existing and existing.created_at else now_iso()
        skill = Skill(name, description, body, created_at, kept_version or None)
        atomic_write(path, _render(skill))
    return get_skill(home, name) or skill


def delete_skill(home: Path, name: str) -> None:
    path = _skill_file(home, name)
    with file_lock(skills_dir(home), home):
        if not path.is_file():
            raise NotFound(f"Skill '{name}' not found.")
        shutil.rmtree(path.parent)
