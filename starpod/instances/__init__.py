"""Instances: other Starpod agents managed by this server (spec memory-instances-cron.md §2).

Two backends behind one interface: `RemoteBackend` proxies an external instance API when
`STARPOD_INSTANCE_BACKEND_URL` is set; otherwise `LocalBackend` runs each instance as a separate
Starpod server process on this machine.
"""
from __future__ import annotations

from ..config import Config
from ..db import database
from .base import STATUSES, InstanceBackend
from .local import LocalBackend
from .remote import RemoteBackend


def backend_for(config: Config) -> InstanceBackend:
    if config.instance_backend_url:
        return RemoteBackend(config.instance_backend_url, config.provider_api_key("anthropic"))
    return LocalBackend(config.home)


def reconcile_at_start(config: Config) -> None:
    """Match the recorded local instances with what actually runs (see `local` for the policy)."""
    if config.instance_backend_url:
        return
    with database.connection_context():
        LocalBackend(config.home).reconcile_all(at_start=True)


__all__ = ["InstanceBackend", "LocalBackend", "RemoteBackend", "STATUSES", "backend_for", "reconcile_at_start"]
