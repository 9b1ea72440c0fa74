"""Drafting a skill with the configured model: `draft_skill(config, name, description, prompt)`.

The model is asked for one JSON object `{"description", "body"}`; an answer wrapped in a ```json
fence is accepted.  Nothing is saved: the admin reviews the draft and saves it like any skill.
Failures map like chat: no provider key → NotConfigured (503), provider or unusable answer →
UpstreamFailed (502).
"""
from __future__ import annotations

import json
import re

from ..config import Config
from ..errors import UpstreamFailed
from .providers import ModelTurn, ProviderError, make_provider
from .skills import validate_name

MAX_DRAFT_TOKENS = 4096
FENCE_RE = re.compile(r"\A```[A-Za-z]*\s*\n?(.*?)\n?```\Z", re.DOTALL)

SYSTEM_PROMPT = """You write skills for an AI agent. A skill is a reusable set of markdown instructions \
the agent loads when a task matches its description.
Answer with exactly one JSON object and nothing else:
{"description": "<one sentence saying when to use the skill>", "body": "<the markdown instructions>"}
The body should be concrete: goal, steps, checks and pitfalls. Do not include front matter."""


def _request_text(name: str, description: str | None, prompt: str | None) -> str:
    lines = [f"Skill name: {name}"]
    if description:
        lines.append(f"Intended description: {description}")
    if prompt:
        lines.append(f"What the skill should do:\n{prompt}")
    return "\n".join(lines)


def strip_json_fence(text: str) -> str:
    """The bare JSON of a model answer, with surrounding whitespace and a ``` fence removed."""
    stripped = text.strip()
    match = FENCE_RE.match(stripped)
    return match.group(1).strip() if match else stripped


def parse_draft(text: str, fallback_description: str | None) -> dict:
    """`{description, body}` from the model's answer; UpstreamFailed when it is not usable."""
    try:
        data = json.loads(strip_json_fence(text))
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("body"), str) or not data["body"].strip():
        raise UpstreamFailed("Skill generation failed: the model did not answer with a JSON skill draft")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        description = fallback_description or ""
    return {"description": " ".join(description.split()), "body": data["body"].strip()}


def draft_skill(config: Config, name: str, description: str | None = None, prompt: str | None = None) -> dict:
    """Ask the configured model for a skill draft `{description, body}`."""
    validate_name(name)
    provider = make_provider(config)
    messages = [{"role": "user", "content": [{"type": "text", "text": _request_text(name, description, prompt)}]}]
    turn = None
    try:
        for item in provider.stream(system=SYSTEM_PROMPT, messages=messages, tools=[],
                                    max_tokens=min(config.agent.max_tokens, MAX_DRAFT_TOKENS)):
            if isinstance(item, ModelTurn):
                turn = item
    except ProviderError as exc:
        raise UpstreamFailed(f"Skill generation failed: API error: {exc}") from exc
    return parse_draft(turn.text if turn else "", description)
