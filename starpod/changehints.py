"""Cross-server hints that agent.toml or the auth generation changed (PostgreSQL only).

On one machine every process notices those changes by itself: agent.toml by its stat signature
on each access (config.LiveAgentConfig), the auth generation through its hint file (authcache).
Across servers sharing a volume, a stat may be answered from the client's attribute cache (NFS
keeps one for up to a minute), so the process that made a change also NOTIFYs `TOPIC` with what
changed, and every worker of every server subscribes to it (on its one LISTEN connection,
pgnotify) and forgets what it cached: agent.toml is read again on its next access, the auth
counter on the next key lookup.

Like every notification these are hints on top of the truth (the file, the counter row): a lost
one costs at most the fallback poll, config.REREAD_SECS for agent.toml and
authcache.REFRESH_SECS for the auth generation.
"""
from __future__ import annotations

import logging

from . import accounts, pgnotify
from .config import Config
from .db import is_postgresql

log = logging.getLogger(__name__)

TOPIC = "changes"
SETTINGS = "settings"
AUTH = "auth"


def announce(topic: str) -> None:
    """Tell every server that `topic` changed; inside a transaction, sent when it commits."""
    pgnotify.notify(TOPIC, topic)


def forget_cached(config: Config, topic: str) -> None:
    """Drop what this process cached about `topic`, so its next use reads the truth."""
    if topic == SETTINGS:
        config.live_agent.expire()
    elif topic == AUTH:
        accounts.cache.generation.forget()
    else:
        log.warning("ignoring a change hint about unknown topic %r", topic)


def start_change_hints(config: Config) -> None:
    """In a gevent worker on PostgreSQL: act on every hint from now on (nothing on SQLite)."""
    if is_postgresql():
        pgnotify.subscribe(TOPIC, lambda topic: forget_cached(config, topic))
