"""The remote instance backend: a thin proxy to an external HTTP API (spec §2.3–2.4).

Used when `STARPOD_INSTANCE_BACKEND_URL` is set.  Ids are percent-encoded into the backend URL.
A backend 404 on an instance becomes our 404; any other failure (transport error, timeout,
non-2xx status, a body that is not a valid Instance/HealthInfo) becomes a 502 whose message keeps
the reference wording `<Op> error: Channel error: <detail>`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

import requests

from ..errors import NotFound, UpstreamFailed
from .base import InstanceBackend, parse_health, parse_instance

TIMEOUT_SECS = 30
MAX_DETAIL_CHARS = 500


@dataclass(frozen=True)
class Operation:
    prefix: str       # "<Op> error: ..."
    failed: str       # "<...> failed (<code> <reason>): <body>"
    transport: str    # "Failed to ...: <cause>"


LIST = Operation("List instances", "List instances failed", "Failed to list instances")
CREATE = Operation("Create instance", "Create instance failed", "Failed to create instance")
GET = Operation("Get instance", "Get instance failed", "Failed to get instance")
KILL = Operation("Kill instance", "Kill instance failed", "Failed to kill instance")
PAUSE = Operation("Pause instance", "Pause instance failed", "Failed to pause instance")
RESTART = Operation("Restart instance", "Restart instance failed", "Failed to restart instance")
HEALTH = Operation("Instance health", "Get health failed", "Failed to get health")


def _failure(op: Operation, detail: str) -> UpstreamFailed:
    return UpstreamFailed(f"{op.prefix} error: Channel error: {detail}")


def _not_found_message(response: requests.Response, instance_id: str) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return f"Instance not found: {instance_id}"


class RemoteBackend(InstanceBackend):
    def __init__(self, base_url: str, credential: str | None = None, timeout: float = TIMEOUT_SECS):
        self.base_url = base_url.strip().rstrip("/")
        self.credential = credential
        self.timeout = timeout

    def _call(self, op: Operation, method: str, path: str, instance_id: str | None = None,
              body: dict | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.credential}"} if self.credential else {}
        try:
            response = requests.request(method, f"{self.base_url}{path}", json=body, headers=headers,
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise _failure(op, f"{op.transport}: {exc}") from None
        if response.status_code == 404 and instance_id is not None:
            raise NotFound(_not_found_message(response, instance_id))
        if not response.ok:
            text = response.text[:MAX_DETAIL_CHARS]
            raise _failure(op, f"{op.failed} ({response.status_code} {response.reason}): {text}")
        return response

    def _decode(self, op: Operation, response: requests.Response, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(response.json())
        except ValueError as exc:  # undecodable JSON, or a shape §2.2 does not allow
            raise _failure(op, f"Invalid response: {exc}") from None

    @staticmethod
    def _path(instance_id: str, action: str = "") -> str:
        return f"/instances/{quote(instance_id, safe='')}{action}"

    def list(self) -> list[dict]:
        def parse_all(data: Any) -> list[dict]:
            if not isinstance(data, list):
                raise ValueError("expected an array of instances")
            return [parse_instance(item) for item in data]
        return self._decode(LIST, self._call(LIST, "GET", "/instances"), parse_all)

    def create(self, name: str | None, region: str | None) -> dict:
        response = self._call(CREATE, "POST", "/instances", body={"name": name, "region": region})
        return self._decode(CREATE, response, parse_instance)

    def get(self, instance_id: str) -> dict:
        return self._decode(GET, self._call(GET, "GET", self._path(instance_id), instance_id), parse_instance)

    def delete(self, instance_id: str) -> None:
        self._call(KILL, "DELETE", self._path(instance_id), instance_id)

    def pause(self, instance_id: str) -> None:
        self._call(PAUSE, "POST", self._path(instance_id, "/pause"), instance_id)

    def restart(self, instance_id: str) -> None:
        self._call(RESTART, "POST", self._path(instance_id, "/restart"), instance_id)

    def health(self, instance_id: str) -> dict:
        response = self._call(HEALTH, "GET", self._path(instance_id, "/health"), instance_id)
        return self._decode(HEALTH, response, parse_health)
