"""What a fired job does: one turn of the shared chat pipeline as the job's owner.

`isolated` jobs get a fresh session per run, `main` jobs continue the owner's main session (keys:
`sessions.scheduler_key`, which also marks them as the scheduler's); the system prompt carries the
scheduled-job execution context (the heartbeat its own), and the session is left unread for its
owner.  The heartbeat re-reads HEARTBEAT.md each time (blank = skipped).
"""
from __future__ import annotations

from .. import accounts
from ..agent.pipeline import ChatRequest, collect, run_chat
from ..config import Config
from ..db import database
from ..models import User
from ..notify import PREVIEW_MAX_BYTES
from ..sessions import scheduler_key, truncate_utf8
from ..settings import read_agent_file
from .engine import JobContext, JobFailed

AGENT_USER = "cron"  # who agent-level jobs run as


def owner_is_admin(user_id: str) -> bool:
    """Whether the owner may use admin-only tools; a removed or deactivated owner cannot run jobs."""
    user = User.get_or_none(User.id == user_id)
    if user is None:
        if accounts.has_users():
            raise JobFailed(f"The job's owner {user_id} no longer exists")
        return True  # auth disabled: the single operator
    if not user.is_active:
        raise JobFailed("The job's owner is deactivated")
    return user.role == "admin"


def run_prompt(config: Config, text: str, user_id: str, is_admin: bool, main_session: bool) -> tuple[str, str]:
    """Run `text` through the chat pipeline; (session_id, reply truncated) or JobFailed."""
    request = ChatRequest(text=text, user_id=user_id, is_admin=is_admin, channel_id="scheduler",
                          channel_session_key=scheduler_key(main_session), mark_unread=True)
    with database.connection_context():
        try:
            end = collect(run_chat(request, config))
        except Exception as exc:  # refused before it started (no provider key, bad input)
            raise JobFailed(getattr(exc, "message", None) or str(exc)) from exc
    if not end or end.get("is_error"):
        raise JobFailed("; ".join(end.get("errors") or ["The agent run failed"]))
    return end["session_id"], truncate_utf8(end.get("text") or "", PREVIEW_MAX_BYTES)


def with_note(text: str, note: str | None) -> str:
    return f"{note}\n\n{text}" if note else text


def run_job(config: Config, job: JobContext) -> tuple[str, str]:
    """The executor the scheduler uses in the server."""
    if job.is_heartbeat:
        instructions = read_agent_file(config, "HEARTBEAT.md")
        if not instructions.strip():
            return "", "skipped"
        return run_prompt(config, with_note(instructions, job.note), "heartbeat", True, True)
    owner = job.user_id or AGENT_USER
    with database.connection_context():
        is_admin = owner_is_admin(job.user_id) if job.user_id else True
    return run_prompt(config, with_note(job.prompt, job.note), owner, is_admin, job.session_mode == "main")
