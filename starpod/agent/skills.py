"""Skills: reusable instructions under `<home>/skills/<name>/SKILL.md`.

A SKILL.md starts with a small front-matter block (`name`, `description`, `created_at`) followed
by the body the model receives on `SkillActivate`.  `agent.toml`'s `skills` list, when not
empty, restricts which skills are offered.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..memory.filecache import FileCache
from ..timeutil import now_iso

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FRONT_MATTER_RE = re.compile(r"\A---\n(.*?)\n---\n?", re.DOTALL)


# Every chat lists the skills for its system prompt; unchanged SKILL.md files are not parsed again.
_parsed = FileCache(errors="strict")


class SkillError(ValueError):
    pass


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    body: str
    created_at: str


def skills_dir(home: Path) -> Path:
    return home / "skills"


def _skill_file(home: Path, name: str) -> Path:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SkillError(f"Invalid skill name '{name}': use letters, digits, '-' and '_' (max 64)")
    return skills_dir(home) / name / "SKILL.md"


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
                 meta.get("created_at") or fallback_created)


def _render(skill: Skill) -> str:
    description = " ".join(skill.description.split())
    return (f"---\nname: {skill.name}\ndescription: {description}\ncreated_at: {skill.created_at}\n---\n\n"
            f"{skill.body.rstrip()}\n")


def get_skill(home: Path, name: str) -> Skill | None:
    path = _skill_file(home, name)
    try:
        return _parsed.read(path, path, lambda text: _parse(name, text, ""))
    except FileNotFoundError:
        return None


def list_skills(home: Path, only: tuple[str, ...] = ()) -> list[Skill]:
    """Every readable skill, by name; `only` (agent.toml `skills`) filters when non-empty."""
    found = []
    root = skills_dir(home)
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not NAME_RE.match(entry.name) or (only and entry.name not in only):
            continue
        skill = get_skill(home, entry.name)
        if skill is not None:
            found.append(skill)
    return found


def save_skill(home: Path, name: str, description: str, body: str, create: bool) -> Skill:
    """Create (fails when it exists) or update (fails when missing) a skill."""
    path = _skill_file(home, name)
    existing = get_skill(home, name)
    if create and existing is not None:
        raise SkillError(f"Skill '{name}' already exists.")
    if not create and existing is None:
        raise SkillError(f"Skill '{name}' not found.")
    skill = Skill(name, description, body, existing.created_at if existing and existing.created_at else now_iso())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_render(skill), encoding="utf-8")
    tmp.replace(path)
    return skill


def delete_skill(home: Path, name: str) -> None:
    path = _skill_file(home, name)
    if not path.is_file():
        raise SkillError(f"Skill '{name}' not found.")
    shutil.rmtree(path.parent)
