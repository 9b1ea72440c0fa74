"""gunicorn settings (used by the Procfile): gevent workers, port and worker count from the env."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT') or '3000'}"
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
    """On SIGTERM, also close every WebSocket of this worker ("going away") so it can drain; start
    the worker's Telegram poller candidate (one poller runs across workers)."""
    from starpod.channels.telegram import start_telegram
    from starpod.realtime.hub import install_shutdown

    install_shutdown(worker)
    start_telegram(worker.wsgi.config["STARPOD"])  # this worker's Telegram poller candidate


def worker_exit(server, worker):
    """Let WebSocket chat runs and Telegram updates of this worker finish (within the graceful
    timeout) before exit."""
    from starpod.channels.telegram import stop_telegram
    from starpod.realtime.hub import drain

    stop_telegram(max(1.0, worker.cfg.graceful_timeout - 5) / 2)
    drain(max(1.0, worker.cfg.graceful_timeout - 5))
