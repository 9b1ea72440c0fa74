"""The HTTP API: one blueprint package per resource group, plus the pieces they share.

`api` is the flask-smorest object that collects every blueprint's marshmallow schemas into the
OpenAPI document served at `/api/openapi.json`.
"""
from __future__ import annotations

from flask_smorest import Api

api = Api()

OPENAPI_SETTINGS = {
    "API_TITLE": "Starpod",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "API_SPEC_OPTIONS": {
        "components": {"securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    },
}


def blueprints() -> list:
    """Every blueprint of the API, in registration order."""
    from .auth import blp as auth_blp
    from .chat import blp as chat_blp
    from .sessions import blp as sessions_blp
    from .instances import blp as instances_blp
    from .memory import blp as memory_blp
    from .settings import blp as settings_blp
    from .system import blp as system_blp
    from .telegram import blp as telegram_blp
    return [system_blp, auth_blp, memory_blp, settings_blp, instances_blp, chat_blp, sessions_blp, telegram_blp]
