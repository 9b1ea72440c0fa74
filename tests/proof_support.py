"""Pieces shared by the whole-system proofs (tests/test_proof_*.py): a live server with its
bootstrap admin key, users with keys made over the API, and the app's routes read from its URL map
and OpenAPI document."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from starpod import create_app
from starpod.api.guards import access_of
from starpod.db import database

from .conftest import make_config
from .support import LiveServer

SKIPPED_METHODS = {"OPTIONS"}  # CORS preflight: answered before auth by design, carries no data
FLASK_PARAM_RE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def start_proof_server(tmp_path_factory, name: str, env: dict | None = None, workers: int = 1) -> LiveServer:
    """A started gunicorn server with `admin_key` set to the first admin's bootstrap key."""
    home = tmp_path_factory.mktemp(name) / "home"
    server = LiveServer(home, workers=workers, env=env).start()
    server.admin_key = server.generated_admin_key()
    assert server.admin_key, "the server did not log a bootstrap admin key"
    return server


@dataclass(frozen=True)
class Route:
    """One URL rule and method of the app, with what the code and the document say about it."""
    rule: str
    method: str
    endpoint: str
    access: str | None      # the view's access marker (starpod.api.guards), None if unmarked
    is_websocket: bool

    @property
    def openapi_path(self) -> str:
        return FLASK_PARAM_RE.sub(r"{\1}", self.rule)

    def concrete_path(self, value: str) -> str:
        return FLASK_PARAM_RE.sub(value, self.rule)


def app_routes(tmp_path: Path) -> list[Route]:
    """Every (rule, method) of an app built from the same code as the live server."""
    app = create_app(make_config(tmp_path / "home"))
    try:
        routes = []
        for rule in app.url_map.iter_rules():
            view = app.view_functions[rule.endpoint]
            is_websocket = rule.websocket
            for method in sorted(rule.methods - SKIPPED_METHODS):
                routes.append(Route(rule.rule, method, rule.endpoint, access_of(view), is_websocket))
        return routes
    finally:
        database.close_all()


def documented_statuses(openapi: dict, route: Route) -> set[int] | None:
    """The statuses the document lists for the route (HEAD as GET); None if it is not documented."""
    method = "get" if route.method == "HEAD" else route.method.lower()
    operation = openapi.get("paths", {}).get(route.openapi_path, {}).get(method)
    if operation is None:
        return None
    return {int(code) for code in operation.get("responses", {}) if code.isdigit()}


def requires_api_key(openapi: dict, route: Route) -> bool:
    method = "get" if route.method == "HEAD" else route.method.lower()
    operation = openapi["paths"][route.openapi_path][method]
    return bool(operation.get("security", openapi.get("security")))
