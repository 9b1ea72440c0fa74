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
