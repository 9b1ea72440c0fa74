"""The instance-backend interface and the wire shapes of spec §2.2 (Instance, HealthInfo).

Every backend answers with plain dicts in exactly these shapes; `parse_instance`/`parse_health`
check data received from elsewhere (a remote backend) and drop unknown fields.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

STATUSES = ("creating", "running", "paused", "stopped", "error")


class InstanceBackend(ABC):
    """What `/api/instances` needs from a backend.  Errors are `starpod.errors` exceptions."""

    @abstractmethod
    def list(self) -> list[dict]:
        """Every instance (§2.2 Instance objects)."""

    @abstractmethod
    def create(self, name: str | None, region: str | None) -> dict:
        """A new instance; the dict may add `api_key`/`url` for reaching it (shown only here)."""

    @abstractmethod
    def get(self, instance_id: str) -> dict:
        """One instance, NotFound when unknown."""

    @abstractmethod
    def delete(self, instance_id: str) -> None:
        """Stop (kill) the instance."""

    @abstractmethod
    def pause(self, instance_id: str) -> None: ...

    @abstractmethod
    def restart(self, instance_id: str) -> None: ...

    @abstractmethod
    def health(self, instance_id: str) -> dict:
        """A §2.2 HealthInfo object."""


def _field(obj: dict, key: str, kind: type | tuple, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing field `{key}`")
        return None
    # bool is an int subclass; a JSON true is never a number here.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"field `{key}` has the wrong type")
    return value


def _unsigned(obj: dict, key: str) -> int:
    value = _field(obj, key, int)
    if value < 0:
        raise ValueError(f"field `{key}` is negative")
    return value


def parse_health(obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise ValueError("health info is not an object")
    return {"cpu_percent": float(_field(obj, "cpu_percent", (int, float))),
            "memory_mb": _unsigned(obj, "memory_mb"),
            "disk_mb": _unsigned(obj, "disk_mb"),
            "last_heartbeat": _field(obj, "last_heartbeat", int),
            "uptime_secs": _unsigned(obj, "uptime_secs")}


def parse_instance(obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise ValueError("instance is not an object")
    status = _field(obj, "status", str)
    if status not in STATUSES:
        raise ValueError(f"unknown status `{status}`")
    health = obj.get("health")
    return {"id": _field(obj, "id", str),
            "name": _field(obj, "name", str, required=False),
            "status": status,
            "region": _field(obj, "region", str, required=False),
            "created_at": _field(obj, "created_at", int),
            "updated_at": _field(obj, "updated_at", int),
            "health": None if health is None else parse_health(health)}
