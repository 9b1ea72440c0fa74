"""The system prompt (spec §6.1): identity, memory bootstrap, time and place, tools, skills and
the execution context of internal callers (cron, heartbeat)."""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..config import Config
from .skills import list_skills
from .workspace import sandbox_root, user_downloads_dir

TOOL_OVERVIEW = """\
## Tools
- Memory: MemorySearch, MemoryWrite, MemoryAppendDaily (your own memory files).
- Workspace files: FileRead, FileList{writes}; Read, Glob, Grep to inspect the workspace.
{shell}- Skills: {skills}.
- Environment: EnvGet.{extra}"""

SKILL_TOOLS = ("SkillActivate", "SkillList", "SkillCreate", "SkillUpdate", "SkillDelete")

DOMAINS = """\
## Two domains
- Your memory (SOUL.md, USER.md, MEMORY.md, memory/, knowledge/) belongs to you: use MemorySearch and \
MemoryWrite for it, never the file tools.
- The workspace ({root}) is the user's project: use the file tools there. Uploads are saved in \
{downloads}/.
- Do not access anything outside the workspace and your memory; create files only inside the workspace, \
never in /tmp."""

HEARTBEAT_CONTEXT = """\
--- EXECUTION CONTEXT ---
This is a heartbeat run triggered from HEARTBEAT.md, not a live conversation. Act on the instructions \
directly and report the outcome. Do not schedule jobs unless the instructions ask for it."""

CRON_CONTEXT = """\
--- EXECUTION CONTEXT ---
A scheduled cron job is executing now; no user is waiting in a live chat. Do the task directly and \
do not re-schedule it. Deliver reminders and results in your reply."""


def _zone(name: str | None):
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return datetime.now().astimezone().tzinfo or timezone.utc


def _zone_name(name: str | None, zone) -> str:
    if name and isinstance(zone, ZoneInfo):
        return name
    return getattr(zone, "key", None) or datetime.now(zone).tzname() or "UTC"


def skills_block(config: Config) -> str:
    skills = list_skills(config.home, config.agent.skills)
    if not skills:
        return ""
    entries = "\n".join(f"<skill><name>{escape(s.name)}</name><description>{escape(s.description)}</description></skill>"
                        for s in skills)
    return ("## Skills\nWhen a task matches one of these skills, call SkillActivate with its name first and "
            f"follow its instructions.\n<available_skills>\n{entries}\n</available_skills>")


def execution_context(user_id: str, channel_id: str) -> str:
    if user_id == "heartbeat":
        return HEARTBEAT_CONTEXT
    if channel_id == "scheduler" or user_id == "cron":
        return CRON_CONTEXT
    return ""


def build_system_prompt(config: Config, bootstrap: str, session_id: str, user_id: str, channel_id: str,
                        tool_names: set[str], is_admin: bool, now: datetime | None = None) -> str:
    """The system prompt; it names only the tools in `tool_names` (those offered to this caller)
    and only the caller's own part of the workspace."""
    agent = config.agent
    zone = _zone(agent.timezone)
    moment = (now or datetime.now(timezone.utc)).astimezone(zone)
    root = sandbox_root(config, user_id, is_admin)
    writes = ", FileWrite, FileDelete" if "FileWrite" in tool_names else ""
    shell = ("- Shell: Bash runs commands in the workspace (use Python there for CSV or PDF files).\n"
             if "Bash" in tool_names else "")
    extra_names = sorted(n for n in tool_names if n.startswith(("Cron", "Heartbeat")))
    extra = f"\n- Scheduling: {', '.join(extra_names)}." if extra_names else ""
    skills = ", ".join(name for name in SKILL_TOOLS if name in tool_names)
    parts = [
        f"You are {agent.agent_name}, a personal AI assistant.",
        bootstrap,
        "---\n"
        f"Current date and time: {moment:%A, %B} {moment.day}, {moment:%Y at %H:%M}\n"
        f"Timezone: {_zone_name(agent.timezone, zone)}\n"
        f"Session ID: {session_id}\n"
        f"Project root: {root}\n"
        f"Working directory: {root}",
        TOOL_OVERVIEW.format(writes=writes, shell=shell, skills=skills, extra=extra),
        DOMAINS.format(root=root, downloads=user_downloads_dir(config, user_id)),
        skills_block(config),
        execution_context(user_id, channel_id),
    ]
    return "\n\n".join(part for part in parts if part)
