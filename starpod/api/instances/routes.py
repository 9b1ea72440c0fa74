"""`/api/instances`: reading is open to every user, lifecycle changes are admin-only."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, request

from ...instances import InstanceBackend, backend_for
from ..guards import require_admin, require_user
from ..parsing import Blueprint
from .schemas import HealthInfoSchema, InstanceActionSchema, InstanceCreatedSchema, InstanceCreateSchema, InstanceSchema

blp = Blueprint("instances", __name__, url_prefix="/api/instances",
                description="Other Starpod agents, run locally or by a remote instance backend")


ERRORS = {
    400: "Malformed JSON body",
    404: "Unknown instance (a remote backend's 404 is passed through)",
    409: "Local backend: the instance is not in a state for this, or busy with another operation",
    502: "The remote backend failed or is unreachable, or a local instance failed to start",
}


def _errors(*codes: int):
    """Document the error answers a route can give, next to the guards' 401/403/429."""
    def decorate(view):
        for code in codes:
            view = blp.alt_response(code, description=ERRORS[code])(view)
        return view
    return decorate


def _backend() -> InstanceBackend:
    return backend_for(current_app.config["STARPOD"])


def _reachable_url(port: int) -> str:
    """The instance's address as seen by this caller: the host it used to reach us, the instance's port."""
    host = urlsplit(request.host_url).hostname or "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@blp.route("", methods=["GET"])
@require_user
@blp.response(200, InstanceSchema(many=True))
@_errors(502)
def list_instances():
    """Every instance, stopped ones included (local: oldest first)."""
    return _backend().list()


@blp.route("", methods=["POST"])
@require_admin
@blp.arguments(InstanceCreateSchema)
@blp.response(201, InstanceCreatedSchema)
@_errors(400, 409, 502)
def create_instance(body):
    """Create and start an instance; a local one's admin key (`api_key`) is in this response only."""
    created = _backend().create(body["name"], body["region"])
    port = created.pop("port", None)
    if port is not None:
        created["url"] = _reachable_url(port)
    return created


@blp.route("/<instance_id>", methods=["GET"])
@require_user
@blp.response(200, InstanceSchema)
@_errors(404, 502)
def get_instance(instance_id):
    """One instance; `health` is a snapshot while it has a process (CPU averaged since its start)."""
    return _backend().get(instance_id)


@blp.route("/<instance_id>", methods=["DELETE"])
@require_admin
@blp.response(204)
@_errors(404, 409, 502)
def delete_instance(instance_id):
    """Stop (kill) the instance: SIGTERM, SIGKILL after a grace period; it stays listed as `stopped`."""
    _backend().delete(instance_id)


@blp.route("/<instance_id>/pause", methods=["POST"])
@require_admin
@blp.response(200, InstanceActionSchema)
@_errors(404, 409, 502)
def pause_instance(instance_id):
    """Freeze a running instance (409 when it is not running)."""
    _backend().pause(instance_id)
    return {"status": "paused"}


@blp.route("/<instance_id>/restart", methods=["POST"])
@require_admin
@blp.response(200, InstanceActionSchema)
@_errors(404, 409, 502)
def restart_instance(instance_id):
    """Resume a paused instance, or start a running, stopped or failed one afresh."""
    _backend().restart(instance_id)
    return {"status": "restarted"}


@blp.route("/<instance_id>/health", methods=["GET"])
@require_user
@blp.response(200, HealthInfoSchema)
@_errors(404, 409, 502)
def instance_health(instance_id):
    """Process metrics and the last heartbeat (409 when the instance has no running process)."""
    return _backend().health(instance_id)
