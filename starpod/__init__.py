"""Starpod: a self-hosted personal AI-agent server.  `create_app` is the application factory.

Flask and the web layer are imported inside `create_app`, so the `starpod` command and the
gunicorn master (which only prepare storage) stay quick to start.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import accounts
from .banner import admin_key_banner
from .config import VERSION, Config, LiveAgentConfig
from .db import close_connection, database, open_database
from .home import ensure_home, take_bootstrap_key
from .migrations import migrate

if TYPE_CHECKING:
    from flask import Flask

__version__ = VERSION
log = logging.getLogger(__name__)


def configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    elif root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def prepare_storage(config: Config, log_new_key: bool = True) -> str | None:
    """Create the data directory, open and migrate the database, bootstrap the first admin.

    Returns the admin key generated now (else None), which is also logged as a framed block
    unless `log_new_key` is false (the caller shows it itself).
    """
    ensure_home(config.home)
    db = open_database(config.db_path, config.database_url)
    migrate(db)
    accounts.reset_process_state(config.db_dir / "auth.generation")
    handed_key = take_bootstrap_key(config.home)  # always taken, so it never stays on disk
    if config.bootstrap_admin:
        with db.connection_context():
            generated = accounts.bootstrap_admin(config.bootstrap_api_key or handed_key)
        if generated and log_new_key:
            log.info(admin_key_banner(generated, config.port, config.home))
        return generated
    return None


def _add_cors_headers(response):
    from flask import request

    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "*"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "*"
        response.headers["Access-Control-Allow-Headers"] = "*"
    return response


def _answer_preflight():
    from flask import request

    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return "", 200
    return None


def _pin_agent_config():
    """One reading of agent.toml per request; a WebSocket's runs read it anew each time."""
    from flask import current_app, g, request

    if request.headers.get("Upgrade", "").lower() != "websocket":
        g.agent_config_pin = current_app.config["STARPOD"].live_agent.pin()


def _unpin_agent_config(_exc):
    from flask import g

    token = g.pop("agent_config_pin", None)
    if token is not None:
        LiveAgentConfig.unpin(token)


def create_app(config: Config | dict | None = None) -> "Flask":
    """Build the WSGI app.  `config` is a Config, or keyword overrides for one built from the env."""
    from flask import Flask

    from .api import OPENAPI_SETTINGS, StarpodApi
    from .api.errors import register_error_handlers
    from .api import blueprints
    from .instances import reconcile_at_start as reconcile_instances
    from .memory import get_store as get_memory_store

    configure_logging()
    config = config if isinstance(config, Config) else Config(**(config or {}))
    prepare_storage(config)
    get_memory_store(config)  # seed memory files and bring the search index up to date
    reconcile_instances(config)  # restart/adopt/terminate local instance servers as recorded

    app = Flask(__name__)
    app.config.update(OPENAPI_SETTINGS, API_VERSION=VERSION, STARPOD=config,
                      MAX_CONTENT_LENGTH=config.max_request_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False
    app.url_map.merge_slashes = False  # `/api//x` is a JSON 404, not Werkzeug's HTML redirect
    api = StarpodApi(app)
    for blueprint in blueprints():
        api.register_blueprint(blueprint)
    from .api.ws import init_app as init_websocket
    init_websocket(app)
    from .web import init_app as init_web_ui
    init_web_ui(app)
    register_error_handlers(app)
    app.before_request(_answer_preflight)
    app.before_request(_pin_agent_config)
    app.teardown_request(_unpin_agent_config)
    app.after_request(_add_cors_headers)
    app.teardown_appcontext(close_connection)
    return app


__all__ = ["create_app", "Config", "database", "__version__"]
