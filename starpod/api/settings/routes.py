"""`/api/settings/{general,models,memory,cron,channels,frontend,files/<name>}`, admin only
(except reading `frontend`, which every authenticated user may do).

GETs of agent.toml groups show this worker's live config; a PUT edits the file and returns once the
new values are in force (other workers pick the new file up on their next request).
"""
from __future__ import annotations

from flask import current_app

from ... import settings
from ...config import Config
from ..guards import require_admin, require_user
from ..parsing import Blueprint
from ..schemas import StatusSchema
from .schemas import (ChannelsSettingsSchema, CronSettingsSchema, FileContentSchema, FrontendSettingsSchema,
                      GeneralSchema, GeneralUpdatedSchema, GeneralUpdateSchema, MemorySettingsSchema, ModelsSchema)

blp = Blueprint("settings", __name__, url_prefix="/api/settings", description="Agent settings and files")

OK = {"status": "ok"}


def _config() -> Config:
    return current_app.config["STARPOD"]


@blp.route("/general", methods=["GET"])
@require_admin
@blp.response(200, GeneralSchema)
def get_general():
    """Model, provider and agent-loop settings (all 11 keys; unset ones as null)."""
    return settings.general(_config().agent)


@blp.route("/general", methods=["PUT"])
@require_admin
@blp.arguments(GeneralUpdateSchema)
@blp.response(200, GeneralUpdatedSchema)
def put_general(body):
    """Replace the group; absent optional keys are removed (followup_mode falls back to inject).

    400 names the field for an unknown provider, a non-IANA timezone or a number out of range;
    a model missing from its provider's catalogue is saved with a `warnings` entry.
    """
    warnings = settings.update_general(_config(), body)
    return {**OK, "warnings": warnings} if warnings else OK


@blp.route("/models", methods=["GET"])
@require_admin
@blp.response(200, ModelsSchema)
def get_models():
    """The static catalogue of well-known models per provider."""
    return {"models": settings.MODELS}


@blp.route("/memory", methods=["GET"])
@require_admin
@blp.response(200, MemorySettingsSchema)
def get_memory():
    return settings.memory(_config().agent)


@blp.route("/memory", methods=["PUT"])
@require_admin
@blp.arguments(MemorySettingsSchema)
@blp.response(200, StatusSchema)
def put_memory(body):
    """Replace the `[memory]` keys shown here; other keys of the section are kept."""
    settings.update_memory(_config(), body)
    return OK


@blp.route("/cron", methods=["GET"])
@require_admin
@blp.response(200, CronSettingsSchema)
def get_cron():
    return settings.cron(_config().agent)


@blp.route("/cron", methods=["PUT"])
@require_admin
@blp.arguments(CronSettingsSchema)
@blp.response(200, StatusSchema)
def put_cron(body):
    settings.update_cron(_config(), body)
    return OK


@blp.route("/channels", methods=["GET"])
@require_admin
@blp.response(200, ChannelsSettingsSchema)
def get_channels():
    return settings.channels(_config().agent)


@blp.route("/channels", methods=["PUT"])
@require_admin
@blp.arguments(ChannelsSettingsSchema)
@blp.response(200, StatusSchema)
def put_channels(body):
    """`[channels.telegram]`: enabled always written, gap_minutes null removes it, stream_mode null keeps it."""
    settings.update_channels(_config(), body)
    return OK


@blp.route("/frontend", methods=["GET"])
@require_user
@blp.response(200, FrontendSettingsSchema)
def get_frontend():
    """Read from frontend.toml on every call; a missing or malformed file gives the defaults.
    Any authenticated user may read it: the web UI's welcome screen shows it to everyone."""
    return settings.frontend(_config())


@blp.route("/frontend", methods=["PUT"])
@require_admin
@blp.arguments(FrontendSettingsSchema)
@blp.response(200, StatusSchema)
def put_frontend(body):
    """Replace frontend.toml entirely."""
    settings.update_frontend(_config(), body["greeting"], body["prompts"])
    return OK


@blp.route("/files/<path:name>", methods=["GET"])
@require_admin
@blp.response(200, FileContentSchema)
@blp.alt_response(400, description="Not one of the agent files")
def get_file(name):
    """SOUL.md, HEARTBEAT.md, BOOT.md or BOOTSTRAP.md; a missing file reads as empty."""
    return {"content": settings.read_agent_file(_config(), name)}


@blp.route("/files/<path:name>", methods=["PUT"])
@require_admin
@blp.arguments(FileContentSchema)
@blp.alt_response(413, description="Content larger than 1 MiB")
@blp.response(200, StatusSchema)
def put_file(body, name):
    """Atomically replace the file (at most 1 MiB of UTF-8) and re-index it for memory search."""
    settings.write_agent_file(_config(), name, body["content"])
    return OK
