"""Lifecycle prompts: the `__heartbeat__` job (HEARTBEAT.md), BOOTSTRAP.md once ever and BOOT.md
once per deployment start.

A deployment start is named by `STARPOD_BOOT_ID` (set by the gunicorn master before it forks, so
all workers of one start share it); the leader that first claims a new id runs the start prompts.
"""
from __future__ import annotations

import logging
import os
import uuid

from ..config import Config
from ..db import database, write_transaction
from ..models import CronJob, CronState
from ..errors import Conflict
from ..settings import read_agent_file, write_agent_file
from . import store
from .schedule import Schedule, default_timezone

log = logging.getLogger(__name__)

HEARTBEAT_SCHEDULE = Schedule("cron", "0 */30 * * * *")
BOOT_ID_ENV = "STARPOD_BOOT_ID"
BOOT_STATE_KEY = "boot_id"


def ensure_heartbeat(config: Config, now: float) -> None:
    """Create `__heartbeat__` (every 30 minutes, agent-level, main session) once HEARTBEAT.md has
    content; an existing job, enabled or not, is left alone."""
    if not read_agent_file(config, "HEARTBEAT.md").strip():
        return
    with database.connection_context():
        if CronJob.select().where((CronJob.name == store.HEARTBEAT) & CronJob.user_id.is_null()).exists():
            return
        try:
            store.create_job(store.HEARTBEAT, "Instructions are read from HEARTBEAT.md at each run",
                             HEARTBEAT_SCHEDULE, user_id=None, tz_name=default_timezone(config.agent.timezone),
                             now=now, max_retries=3, timeout_secs=7200, session_mode="main", reserved_ok=True)
            log.info("created the heartbeat job")
        except Conflict:
            pass  # another scheduler created it first


def boot_id() -> str:
    """This deployment start's id (one per process when not started by the gunicorn master)."""
    return os.environ.setdefault(BOOT_ID_ENV, uuid.uuid4().hex)


def claim_boot(start_id: str) -> bool:
    """True for exactly one caller per deployment start."""
    with database.connection_context(), write_transaction(BOOT_STATE_KEY):
        changed = (CronState.update(value=start_id)
                   .where((CronState.key == BOOT_STATE_KEY) & (CronState.value != start_id)).execute())
        if changed:
            return True
        if CronState.get_or_none(CronState.key == BOOT_STATE_KEY) is None:
            CronState.create(key=BOOT_STATE_KEY, value=start_id)
            return True
        return False


def run_start_prompts(config: Config, start_id: str) -> None:
    """BOOTSTRAP.md (then emptied, on success) and BOOT.md, as the agent on its main session."""
    from .execute import run_prompt  # the pipeline is only needed by the leader, at start

    if not claim_boot(start_id):
        return
    for name, user in (("BOOTSTRAP.md", "bootstrap"), ("BOOT.md", "boot")):
        text = read_agent_file(config, name)
        if not text.strip():
            continue
        try:
            run_prompt(config, text, user, True, True)
        except Exception:
            log.exception("%s failed", name)
            continue
        log.info("ran %s", name)
        if name == "BOOTSTRAP.md":
            write_agent_file(config, name, "")
