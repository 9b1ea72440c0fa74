"""The realtime hub of one worker process: its doorbell, its runs, its WebSocket clients.

`get_hub(config)` creates it lazily inside the worker (never in the gunicorn master).  Its listener
greenlet wakes on every doorbell ring (and at least once a second): it releases followers of runs
executing in other workers, fans new notifications out to every local client and stops the local
runs' replies whose stop was requested (stops.py).  A second
greenlet keeps the heartbeats of local runs fresh, closes runs whose worker died and prunes old
runs and notifications.
On SIGTERM, clients are closed with "going away" so gunicorn can stop, and running runs get until
the graceful timeout to finish (`drain`).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import timedelta
from typing import Protocol

import gevent
from gevent.event import Event
from peewee import PeeweeException, fn

from ..accounts import Principal
from ..config import Config
from ..db import database, fetch_all, is_postgresql
from ..models import Notification
from ..timeutil import to_rfc3339, utcnow
from . import pgbell, stops
from .doorbell import Doorbell, run_dir
from .runs import POLL_SECS, RunManager

log = logging.getLogger(__name__)

HEARTBEAT_SECS = 10.0
PRUNE_SECS = 300.0
NOTIFICATION_RETENTION = timedelta(hours=1)
# Read on every ring (each batch of run events another worker stores rings): plain SQL, no query
# building, which would cost more than the query.
NEW_NOTIFICATIONS = f"SELECT id, frame, user_id FROM {Notification._meta.table_name} WHERE id > ? ORDER BY id"


class Client(Protocol):
    caller: Principal | None  # None when auth is disabled

    def notify(self, frame: str) -> None: ...
    def close_going_away(self) -> None: ...


def may_receive(caller: Principal | None, owner: str | None) -> bool:
    """A notification goes to its owner's sockets; agent-level ones (owner None) to admins.  With
    auth disabled (no caller) there is only one operator, who gets everything."""
    if caller is None:
        return True
    if owner is None:
        return caller.is_admin
    return caller.user_id == owner


class Hub:
    def __init__(self, config: Config):
        self.config = config
        self.doorbell = Doorbell(run_dir(config.home))
        self.runs = RunManager(config, self.doorbell, lambda: self._changed)
        self.clients: set[Client] = set()
        self.draining = False
        self._changed = Event()
        with database.connection_context():
            self._notified_up_to = Notification.select(fn.MAX(Notification.id)).scalar() or 0
        self._greenlets = [gevent.spawn(self._listen), gevent.spawn(self._upkeep)]
        self._unsubscribe = None
        if is_postgresql():  # other servers' rings arrive as notifications
            self._unsubscribe = pgbell.subscribe(self.doorbell.worker_id, self.doorbell.ring_self)

    def _listen(self) -> None:
        while True:
            self.doorbell.wait(POLL_SECS)
            changed, self._changed = self._changed, Event()
            changed.set()
            try:
                self._deliver_notifications()
            except PeeweeException:
                log.warning("could not read notifications", exc_info=True)
            try:
                stops.apply_requests(self.doorbell.worker_id, self.runs.local)
            except PeeweeException:
                log.warning("could not read stop requests", exc_info=True)

    def _deliver_notifications(self) -> None:
        with database.connection_context():
            rows = fetch_all(NEW_NOTIFICATIONS, (self._notified_up_to,))
        for row_id, frame, owner in rows:
            self._notified_up_to = row_id
            for client in list(self.clients):
                if may_receive(client.caller, owner):
                    client.notify(frame)

    def _upkeep(self) -> None:
        last_prune = 0.0
        while True:
            try:
                self.runs.heartbeat()
                self.runs.close_orphans()  # at start too: runs a crashed server left open
                if time.monotonic() - last_prune > PRUNE_SECS:
                    last_prune = time.monotonic()
                    self.runs.prune()
                    cutoff = to_rfc3339(utcnow() - NOTIFICATION_RETENTION)
                    with database.connection_context():
                        Notification.delete().where(Notification.created_at < cutoff).execute()
            except PeeweeException:
                log.warning("realtime upkeep failed", exc_info=True)
            gevent.sleep(HEARTBEAT_SECS)

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.doorbell.close()

    def close_clients(self) -> None:
        self.draining = True
        for client in list(self.clients):
            client.close_going_away()


_hubs: dict = {}
_hubs_lock = threading.Lock()


def get_hub(config: Config) -> Hub:
    """This process's hub for the data directory of `config` (created on first use)."""
    with _hubs_lock:
        hub = _hubs.get(config.home)
        if hub is None:
            hub = _hubs[config.home] = Hub(config)
        return hub


def install_shutdown(worker) -> None:
    """gunicorn `post_worker_init`: on SIGTERM also close every WebSocket with "going away"."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        if callable(previous):
            previous(signum, frame)
        for hub in list(_hubs.values()):
            gevent.spawn(hub.close_clients)

    signal.signal(signal.SIGTERM, on_sigterm)


def drain(timeout: float) -> None:
    """gunicorn `worker_exit`: give this worker's running runs up to `timeout` s to finish."""
    for hub in list(_hubs.values()):
        hub.draining = True
        hub.runs.drain(timeout)
        hub.stop()
