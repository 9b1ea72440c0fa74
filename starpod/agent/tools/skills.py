"""Skill tools: SkillActivate, SkillCreate, SkillUpdate, SkillDelete and SkillList.

Skills are shared: every caller's system prompt lists them, so creating, changing and deleting
them is for admins only (like shared memory writes); other callers are refused clearly.
"""
from __future__ import annotations

import json

from ...errors import StarpodError
from ..skills import delete_skill, get_skill, list_skills, save_skill
from .registry import ToolContext, ToolError, require_str, tool

WRITE_REFUSAL = ("Skills are shared by every user of this agent: only an admin can create, update or "
                 "delete them.")
ADMIN_WRITE = {"admin_only": True, "refusal": WRITE_REFUSAL}
SKILL_FIELDS = {"name": {"type": "string"}, "description": {"type": "string"},
                "body": {"type": "string", "description": "Markdown instructions"}}


def _guard(action):
    try:
        return action()
    except StarpodError as exc:
        raise ToolError(str(exc)) from exc


@tool("SkillActivate", "Load a skill's instructions by name.", {"name": {"type": "string"}}, ("name",))
def skill_activate(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    only = ctx.config.agent.skills
    skill = _guard(lambda: get_skill(ctx.home, name))
    if skill is None or (only and name not in only):
        raise ToolError(f"Skill '{name}' not found.")
    return skill.body


@tool("SkillCreate", "Create a new skill.", SKILL_FIELDS, ("name", "description", "body"), **ADMIN_WRITE)
def skill_create(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    _guard(lambda: save_skill(ctx.home, name, require_str(args, "description"), require_str(args, "body"), True))
    return f"Created skill '{name}'."


@tool("SkillUpdate", "Replace an existing skill's description and body.", SKILL_FIELDS,
      ("name", "description", "body"), **ADMIN_WRITE)
def skill_update(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    _guard(lambda: save_skill(ctx.home, name, require_str(args, "description"), require_str(args, "body"), False))
    return f"Updated skill '{name}'."


@tool("SkillDelete", "Delete a skill.", {"name": {"type": "string"}}, ("name",), **ADMIN_WRITE)
def skill_delete(ctx: ToolContext, args: dict) -> str:
    name = require_str(args, "name")
    _guard(lambda: delete_skill(ctx.home, name))
    return f"Deleted skill '{name}'."


@tool("SkillList", "List skills as JSON [{name, description, created_at}].", {})
def skill_list(ctx: ToolContext, args: dict) -> str:
    skills = list_skills(ctx.home, ctx.config.agent.skills)
    return json.dumps([{"name": s.name, "description": s.description, "created_at": s.created_at} for s in skills],
                      indent=2, ensure_ascii=False)
