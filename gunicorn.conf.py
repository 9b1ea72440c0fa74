"""gunicorn settings (used by the Procfile): gevent workers, address, port and worker count from the env."""
import os

_host = os.environ.get("HOST") or "0.0.0.0"  # HOST=127.0.0.1 behind a TLS proxy on the same machine
_port = os.environ.get("PORT") or "3000"
bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"  # IPv6 addresses in brackets
workers = int(os.environ.get("WEB_CONCURRENCY") or 1)
worker_class = "gevent"
worker_connections = int(os.environ.get("STARPOD_WORKER_CONNECTIONS") or 4000)
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("STARPOD_ACCESS_LOG") or None
errorlog = "-"
loglevel = "info"
# gunicorn's runtime control socket is one fixed path per machine user; several Starpod servers
# (instances, tests) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server):
    """Prepare the data directory and bootstrap the first admin once, in the master, before forking."""
    from starpod import configure_logging, prepare_storage
    from starpod.config import Config
    from starpod.db import database

    configure_logging()
    prepare_storage(Config())
    database.close_all()


def post_worker_init(worker):
    """On SIGTERM, also close every WebSocket of this worker ("going away") so it can drain; warm the
    configured provider SDK in the background once the worker serves."""
    from starpod.realtime.hub import install_shutdown

    install_shutdown(worker)
    from starpod.startup import warm_up_in_background

    warm_up_in_background(worker.wsgi.config["STARPOD"])


def worker_exit(server, worker):
    """Let WebSocket chat runs of this worker finish (within the graceful timeout) before exit."""
    from starpod.realtime.hub import drain

    drain(max(1.0, worker.cfg.graceful_timeout - 5))
