"""`/api/settings/skills[/<name>]` and `/api/settings/skills/generate`, admin only.

Skills are `skills/<name>/SKILL.md` files handled by `starpod.agent.skills`, the module behind the
agent's skill tools, so what the REST API and the agent see is always the same.
"""
from __future__ import annotations

from dataclasses import asdict

from flask import current_app

from ...agent import skills
from ...agent.skillgen import draft_skill
from ...agent.skills import Skill
from ...errors import NotFound
from ..guards import require_admin
from ..parsing import Blueprint
from .schemas import SkillCreateSchema, SkillDraftSchema, SkillGenerateSchema, SkillSchema, SkillUpdateSchema

blp = Blueprint("skills", __name__, url_prefix="/api/settings/skills", description="Agent skills (admin)")

INVALID_NAME = "Invalid skill name"
NOT_FOUND = "Skill not found"


def _home():
    return current_app.config["STARPOD"].home


def _skill_json(skill: Skill) -> dict:
    return asdict(skill)


@blp.route("", methods=["GET"])
@require_admin
@blp.response(200, SkillSchema(many=True))
def list_skills():
    """Every skill, by name (agent.toml's `skills` filter does not hide any here)."""
    return [_skill_json(s) for s in skills.list_skills(_home())]


@blp.route("", methods=["POST"])
@require_admin
@blp.arguments(SkillCreateSchema)
@blp.response(201, SkillSchema)
@blp.alt_response(409, description="A skill with this name exists")
@blp.alt_response(413, description="Skill larger than 256 KiB")
def create_skill(body):
    """Write `skills/<name>/SKILL.md`; the agent can activate it at once."""
    return _skill_json(skills.save_skill(_home(), body["name"], body["description"], body["body"], True,
                                         body["version"]))


@blp.route("/generate", methods=["POST"])
@require_admin
@blp.arguments(SkillGenerateSchema)
@blp.response(200, SkillDraftSchema)
@blp.alt_response(502, description="The LLM provider failed or gave no usable draft")
@blp.alt_response(503, description="No API key configured for the provider")
def generate_skill(body):
    """Draft a description and body with the configured model; nothing is saved."""
    return draft_skill(current_app.config["STARPOD"], body["name"], body["description"], body["prompt"])


def _get(name: str) -> Skill:
    skill = skills.get_skill(_home(), name)
    if skill is None:
        raise NotFound(f"Skill '{name}' not found.")
    return skill


@blp.route("/<name>", methods=["GET"])
@require_admin
@blp.response(200, SkillSchema)
@blp.alt_response(400, description=INVALID_NAME)
@blp.alt_response(404, description=NOT_FOUND)
def get_skill(name):
    return _skill_json(_get(name))


@blp.route("/<name>", methods=["PUT"])
@require_admin
@blp.arguments(SkillUpdateSchema)
@blp.response(200, SkillSchema)
@blp.alt_response(404, description=NOT_FOUND)
@blp.alt_response(413, description="Skill larger than 256 KiB")
def update_skill(body, name):
    """Replace the description and body (created_at is kept; version as documented)."""
    return _skill_json(skills.save_skill(_home(), name, body["description"], body["body"], False, body["version"]))


@blp.route("/<name>", methods=["DELETE"])
@require_admin
@blp.response(204)
@blp.alt_response(400, description=INVALID_NAME)
@blp.alt_response(404, description=NOT_FOUND)
def delete_skill(name):
    """Remove the skill's directory."""
    skills.delete_skill(_home(), name)
