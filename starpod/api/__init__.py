"""The HTTP API: one blueprint package per resource group, plus the pieces they share.

`api` is the flask-smorest object that collects every blueprint's marshmallow schemas into the
OpenAPI document served at `/api/openapi.json`.
"""
from __future__ import annotations

from apispec import BasePlugin
from flask_smorest import Api

from .schemas import ErrorSchema


class ErrorBodiesPlugin(BasePlugin):
    """Give every documented 4xx/5xx response without a body schema the app's error body, and
    document on every operation the 414 that the HTTP server itself answers to a request line
    (path and query) longer than it accepts."""

    CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    URI_TOO_LONG = {"description": "Request line (path and query) longer than the server accepts"}

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for operation in (operations or {}).values():
            operation.setdefault("responses", {}).setdefault("414", dict(self.URI_TOO_LONG))
            for status, response in operation.get("responses", {}).items():
                is_error = str(status)[:1] in ("4", "5")
                if is_error and isinstance(response, dict) and "content" not in response and "$ref" not in response:
                    response["content"] = self.CONTENT


class StarpodApi(Api):
    """flask-smorest's Api documenting the error bodies the app really sends.

    No catch-all `default` response: each route lists every status it really returns.
    """
    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None

    def __init__(self, app=None, **kwargs):
        super().__init__(app, spec_kwargs={"extra_plugins": [ErrorBodiesPlugin()]}, **kwargs)


api = StarpodApi()

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
    from .usage import blp as usage_blp
    from .render import blp as render_blp
    from .skills import blp as skills_blp
    from .usermemory import blp as user_memory_blp
    from .cron import blp as cron_blp
    from .telegram import blp as telegram_blp
    return [system_blp, auth_blp, memory_blp, settings_blp, instances_blp, chat_blp, sessions_blp, usage_blp,
            render_blp, skills_blp, user_memory_blp, cron_blp,
            telegram_blp]
