"""gunicorn settings (used by the Procfile): gevent workers, address (HOST, PORT) and worker count
from the env.

gevent patches the standard library here, first, before anything imports starpod or peewee:
peewee keeps each connection's state in a `threading.local` subclass it defines at import time,
which must be gevent's greenlet-local one, or every greenlet of a worker shares one connection
state.  The worker's own `monkey.patch_all()` is then a no-op (and warns about nothing).
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402  (after patching, on purpose)

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
    # One id per deployment start, shared by every worker: BOOT.md runs once per start.
    os.environ["STARPOD_BOOT_ID"] = os.urandom(8).hex()


def post_worker_init(worker):
    """Refuse to serve with connection state shared by greenlets; answer gunicorn's own protocol
    errors (414, 431, 400) in JSON like the app's; on SIGTERM, also close every
    WebSocket of this worker ("going away") so it can drain; start this worker's cron scheduler
    candidate (one leader across all workers fires jobs) and Telegram poller candidate (one poller
    runs across workers); on PostgreSQL, listen for other servers' settings and auth changes; warm
    the configured provider SDK in the background once the worker serves."""
    from starpod import protocolerrors
    from starpod.changehints import start_change_hints
    from starpod.channels.telegram import start_telegram
    from starpod.db import require_greenlet_local_state
    from starpod.realtime.hub import install_shutdown
    from starpod.scheduler import start_scheduler
    from starpod.startup import warm_up_in_background

    require_greenlet_local_state()
    protocolerrors.install()
    config = worker.wsgi.config["STARPOD"]
    install_shutdown(worker)
    start_scheduler(config)
    start_telegram(config)
    start_change_hints(config)
    warm_up_in_background(config)


def worker_exit(server, worker):
    """Let WebSocket chat runs and Telegram updates of this worker finish (within the graceful
    timeout) before exit."""
    from starpod.channels.telegram import stop_telegram
    from starpod.realtime.hub import drain
    from starpod.scheduler import stop_scheduler

    stop_scheduler()
    stop_telegram(max(1.0, worker.cfg.graceful_timeout - 5) / 2)
    drain(max(1.0, worker.cfg.graceful_timeout - 5))
