"""The browser UI at `/`: one HTML page plus plain JavaScript modules and CSS, nothing to build.

Assets are served under `/ui/<version>/...` where the version is a hash of every static file, so a
page always loads the modules it was written for and browsers may cache them for a year.  Relative
`import`s between modules inherit the versioned prefix.  Every UI response carries a strict CSP
(no inline script or style), frame protection and a Referrer-Policy.  The page holds no secret:
it talks to the public API with the key the user types in, so these routes need no key.
"""
from __future__ import annotations

import re

from flask import Blueprint, Flask, abort, render_template, request

from ..api.guards import public
from .assets import AssetStore

blp = Blueprint("web", __name__, template_folder="templates")

ASSET_PREFIX = "/ui"
LONG_CACHE = "public, max-age=31536000, immutable"
CSP_DIRECTIVES = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'{sockets}",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
)
PLAIN_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

assets = AssetStore()


def content_security_policy(host: str) -> str:
    """The CSP; `/ws` of this very host is named too, for browsers whose 'self' leaves out ws:."""
    sockets = f" ws://{host} wss://{host}" if PLAIN_HOST.match(host) else ""
    return "; ".join(CSP_DIRECTIVES).format(sockets=sockets)


@blp.after_request
def add_security_headers(response):
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Security-Policy"] = content_security_policy(request.host)
    response.vary.add("Accept-Encoding")
    return response


@blp.route("/", methods=["GET"])
@public
def index():
    """The single page; the app inside routes by the URL fragment."""
    html = render_template("index.html", asset_base=f"{ASSET_PREFIX}/{assets.version}")
    response = assets.compressible(html.encode(), "text/html; charset=utf-8", request)
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.route(f"{ASSET_PREFIX}/<version>/<path:name>", methods=["GET"])
@public
def asset(version: str, name: str):
    """A static file; cached for a year when `version` is the current one."""
    found = assets.get(name)
    if found is None:
        abort(404)
    response = assets.compressible(found.body, found.mimetype, request, found.gzipped)
    response.headers["Cache-Control"] = LONG_CACHE if version == assets.version else "no-cache"
    gzipped = response.headers.get("Content-Encoding") == "gzip"
    response.set_etag(f"{found.etag}-gz" if gzipped else found.etag)
    return response.make_conditional(request)


def init_app(app: Flask) -> None:
    app.register_blueprint(blp)
