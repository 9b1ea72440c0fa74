"""Auth matrix proof: every route of the app's URL map × method × caller gives its documented status.

Callers: no key, a malformed key, an unknown key, a revoked key, a deactivated user's key, a user
and an admin.  Routes are read from `app.url_map` at run time, so a new route is in the matrix the
moment it exists.  Each route is classified by its view's access marker (`starpod.api.guards`:
`@require_user`, `@require_admin`, `@public`); framework routes are listed here; an unmarked route
falls back to its OpenAPI entry (API-key security or none).  A route that is neither classified nor
documented fails the proof, and so does a public route not listed below.
"""
from __future__ import annotations

import json
import secrets

import pytest
import requests
import websocket

from starpod.api.guards import ADMIN, PUBLIC, USER

from .proof_support import Route, app_routes, documented_statuses, requires_api_key, \
    start_proof_server

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

FRAMEWORK_PUBLIC = {"static", "api-docs.openapi_json"}  # Flask's static files, flask-smorest's document
EXPECTED_PUBLIC = {"system.health", "auth.verify", "telegram.webhook"} | FRAMEWORK_PUBLIC
EXPECTED_PUBLIC_BLUEPRINTS = {"web"}  # the browser UI's page and assets hold no data
WEBSOCKET = "websocket"
MISSING_ID = "proof-missing-id"
REFUSED = ("none", "malformed", "unknown", "revoked", "deactivated")
CALLERS = REFUSED + ("user", "admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_proof_server(tmp_path_factory, "auth-matrix")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def keys(server) -> dict[str, str | None]:
    """The key each caller presents (None = no key at all)."""
    _, user_key = server.create_user(server.admin_key)
    _, revoked = server.create_user(server.admin_key, label="to revoke")
    assert server.request("POST", f"/api/settings/auth/api-keys/{revoked['meta']['id']}/revoke",
                          server.admin_key).status_code == 200
    deactivated_user, deactivated = server.create_user(server.admin_key)
    assert server.request("POST", f"/api/settings/auth/users/{deactivated_user['id']}/deactivate",
                          server.admin_key).status_code == 200
    return {"none": None, "malformed": "sp_live_\u00e9\u00e9 not a key", "unknown": f"sp_live_{secrets.token_hex(20)}",
            "revoked": revoked["key"], "deactivated": deactivated["key"], "user": user_key["key"],
            "admin": server.admin_key}


@pytest.fixture(scope="module")
def openapi(server) -> dict:
    response = server.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> list[Route]:
    return app_routes(tmp_path_factory.mktemp("auth-matrix-app"))


def classify(route: Route, openapi: dict) -> str | None:
    """websocket, public, user or admin; None when neither the code nor the document says."""
    if route.is_websocket:
        return WEBSOCKET
    if route.access:
        return route.access
    if route.endpoint in FRAMEWORK_PUBLIC:
        return PUBLIC
    statuses = documented_statuses(openapi, route)
    if statuses is None:
        return None
    if not requires_api_key(openapi, route):
        return PUBLIC
    return ADMIN if 403 in statuses else USER


def is_expected_public(endpoint: str) -> bool:
    return endpoint in EXPECTED_PUBLIC or endpoint.split(".")[0] in EXPECTED_PUBLIC_BLUEPRINTS


def call(server, route: Route, key: str | None) -> requests.Response:
    """The route with placeholder path values and, for methods that take one, a JSON body of the
    wrong shape: whoever passes authentication learns only that the body is invalid."""
    body = {} if route.method in ("GET", "HEAD") else {"json": []}
    headers = {} if key is None else {"X-API-Key": key.encode("latin-1")}
    return requests.request(route.method, f"{server.base_url}{route.concrete_path(MISSING_ID)}",
                            headers=headers, timeout=30, **body)


def problems_of(route: Route, access: str, caller: str, response: requests.Response,
                documented: set[int] | None) -> list[str]:
    status = response.status_code
    where = f"{route.method} {route.rule} as {caller} → {status}"
    problems = []
    if status >= 500:
        problems.append(f"{where}: server error {response.text[:200]}")
    if access in (USER, ADMIN) and caller in REFUSED:
        if status != 401:
            problems.append(f"{where}: expected 401")
    elif access == ADMIN and caller == "user":
        if status != 403:
            problems.append(f"{where}: expected 403")
    elif status in (401, 403) and not (access == PUBLIC and documented and status in documented):
        # a public route may refuse on its own terms (e.g. a webhook secret), whatever the API key
        problems.append(f"{where}: refused a caller the route admits")
    if documented is not None and status not in documented:
        problems.append(f"{where}: status not in the document {sorted(documented)}")
    if status >= 400 and route.method != "HEAD" and "error" not in _json(response):
        problems.append(f"{where}: error body is not JSON {{'error': …}}: {response.text[:100]!r}")
    return problems


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def test_every_route_is_classified_and_public_ones_are_the_listed_ones(routes, openapi):
    unclassified = [f"{r.method} {r.rule} ({r.endpoint})" for r in routes if classify(r, openapi) is None]
    assert not unclassified, ("routes without an access marker (@public/@require_user/@require_admin) "
                              f"and not in the OpenAPI document: {unclassified}")
    unexpected = sorted({r.endpoint for r in routes if classify(r, openapi) == PUBLIC and not is_expected_public(r.endpoint)})
    assert not unexpected, f"public routes not listed in EXPECTED_PUBLIC: {unexpected}"
    undocumented = [f"{r.method} {r.rule}" for r in routes
                    if classify(r, openapi) in (USER, ADMIN) and documented_statuses(openapi, r) is None]
    assert not undocumented, f"protected routes missing from the OpenAPI document: {undocumented}"


def test_every_route_and_caller_gives_its_documented_status(server, keys, routes, openapi):
    problems = []
    for route in routes:
        access = classify(route, openapi)
        if access in (None, WEBSOCKET):
            continue
        documented = documented_statuses(openapi, route)
        statuses = set()
        for caller in CALLERS:
            response = call(server, route, keys[caller])
            statuses.add(response.status_code)
            problems += problems_of(route, access, caller, response, documented)
        if access == PUBLIC and len(statuses) > 1:
            problems.append(f"{route.method} {route.rule}: a public route answered {sorted(statuses)} "
                            "depending on the key")
    assert not problems, "\n".join(problems)


def test_websocket_handshake_refuses_bad_keys_with_json_401_before_the_upgrade(server, keys, routes):
    socket_rules = sorted({r.rule for r in routes if r.is_websocket})
    assert socket_rules, "the app serves no WebSocket route"
    for rule in socket_rules:
        for caller in CALLERS:
            query = "" if keys[caller] is None else f"?token={requests.utils.quote(keys[caller])}"
            url = f"{server.ws_url}{rule}{query}"
            if caller in REFUSED:
                with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                    websocket.create_connection(url, timeout=30)
                assert refused.value.status_code == 401, (rule, caller)
                assert "error" in json.loads(refused.value.resp_body), (rule, caller)
            else:
                ws = websocket.create_connection(url, timeout=30)
                ws.close()


def test_a_new_route_without_marker_or_document_entry_is_caught(openapi):
    stray = Route("/api/new-thing", "GET", "new.thing", access=None, is_websocket=False)
    assert classify(stray, openapi) is None
    assert not is_expected_public("new.thing")
