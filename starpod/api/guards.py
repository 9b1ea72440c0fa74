"""Request authentication for every protected route: `@require_user` and `@require_admin`.

Order (decisions): route → authentication (401) → rate limit (429) → role (403) → body.  The
guards run before flask-smorest parses the body, so a request without a valid key never learns
anything about its body.  The caller is available as `current_principal()` (None when auth is
disabled because no users exist yet).

Every view says who may call it with an access marker: the guards mark theirs `user`/`admin`, and a
deliberately open view is decorated `@public`.  `access_of(view)` reads it (None = unclassified),
so tests can prove from the URL map that no route was left open by accident.
"""
from __future__ import annotations

import functools
from typing import Callable

from flask import current_app, g, request

from .. import accounts, ratelimit
from ..accounts import Principal
from ..errors import StarpodError

MISSING_KEY = "Missing API key \u2014 set X-API-Key header"
SECURITY_DOC = {"security": [{"ApiKey": []}],
                "responses": {"401": {"description": "Missing or invalid API key"},
                              "429": {"description": "Rate limit exceeded"}}}


ACCESS_ATTR = "starpod_access"
PUBLIC, USER, ADMIN = "public", "user", "admin"


def public(view: Callable) -> Callable:
    """Mark a view as open to everyone, on purpose (no key needed, none checked)."""
    setattr(view, ACCESS_ATTR, PUBLIC)
    return view


def access_of(view: Callable) -> str | None:
    """`public`, `user` or `admin` as marked on the view; None when it carries no marker."""
    return getattr(view, ACCESS_ATTR, None)


class AuthFailed(StarpodError):
    status = 401


class Forbidden(StarpodError):
    status = 403


class RateLimited(StarpodError):
    status = 429


def read_api_key_header() -> str | None:
    """The X-API-Key value verbatim, or None when missing or not visible ASCII."""
    raw = request.headers.get("X-API-Key")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isprintable()):  # for ASCII: exactly 0x20-0x7E
        return None
    return raw


def client_ip() -> str | None:
    return request.remote_addr


def authenticate_request(admin: bool) -> Principal | None:
    if not accounts.has_users():
        return None
    key = read_api_key_header()
    if key is None:
        raise AuthFailed(MISSING_KEY)
    principal = accounts.authenticate(key, client_ip())
    if principal is None:
        accounts.audit_failed_login(client_ip(), "invalid API key")
        raise AuthFailed("Invalid API key")
    limits = current_app.config["STARPOD"].agent.auth
    verdict = ratelimit.check(principal.user_id, limits.rate_limit_requests, limits.rate_limit_window_secs)
    if not verdict.allowed:
        raise RateLimited("Rate limit exceeded", headers={"Retry-After": str(verdict.retry_after)})
    if admin and not principal.is_admin:
        raise Forbidden("Admin access required")
    return principal


def _guard(admin: bool) -> Callable:
    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            g.principal = authenticate_request(admin)
            return view(*args, **kwargs)
        doc = dict(getattr(view, "_apidoc", {}))
        manual = dict(doc.get("manual_doc", {}))
        manual.update(SECURITY_DOC)
        if admin:
            manual["responses"] = {**SECURITY_DOC["responses"], "403": {"description": "Admin access required"}}
        doc["manual_doc"] = manual
        wrapper._apidoc = doc
        setattr(wrapper, ACCESS_ATTR, ADMIN if admin else USER)
        return wrapper
    return decorator


require_user = _guard(admin=False)
require_admin = _guard(admin=True)


def current_principal() -> Principal | None:
    return g.get("principal")


def current_user_id(fallback: str | None = None) -> str | None:
    """The authenticated user's id; only when auth is disabled does a client-sent id count."""
    principal = current_principal()
    return principal.user_id if principal else fallback


def caller_is_admin() -> bool:
    """Admins and anonymous callers of an auth-disabled server may use admin-only features."""
    principal = current_principal()
    return principal is None or principal.is_admin
