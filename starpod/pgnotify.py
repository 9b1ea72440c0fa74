"""PostgreSQL NOTIFY/LISTEN as a hint between the servers of one deployment.

Every hint travels on one PostgreSQL channel, CHANNEL, as `<topic>:<payload>`, so each process
needs a single LISTEN connection however many topics it follows (the doorbell, settings and auth
changes).  `notify(topic, payload)` never raises and does nothing on SQLite; inside the caller's
transaction the notification is sent when it commits (and not at all if it rolls back).
`subscribe(topic, on_payload)` has this process's listener call `on_payload` for each of the
topic's notifications: a greenlet on a connection of its own, started by the first subscription,
reconnecting after errors and stopped when the last subscription is cancelled.  A notification
only tells a listener to look again: whatever it means is read from the database or the shared
volume, so a lost one costs at most the listener's fallback poll.
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from typing import Callable

import gevent

from .db import database, dedicated_connection, is_postgresql

log = logging.getLogger(__name__)

CHANNEL = "starpod"
RECONNECT_SECS = 5.0

Handler = Callable[[str], None]


def notify(topic: str, payload: str = "") -> None:
    """NOTIFY `topic` on the shared database (PostgreSQL only); a failure is logged, never raised."""
    if not is_postgresql():
        return
    try:
        with database.connection_context() if database.is_closed() else nullcontext():
            database.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, f"{topic}:{payload}"))
    except Exception:  # a hint: losing it costs one poll interval
        log.warning("could not notify %s to other servers", topic, exc_info=True)


def subscribe(topic: str, on_payload: Handler) -> Callable[[], None]:
    """Call `on_payload` with the payload of every notification on `topic` (in a gevent worker on
    PostgreSQL); returns the function that cancels this subscription."""
    return _listener().subscribe(topic, on_payload)


class Listener:
    """One LISTEN connection serving every subscription of this process."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._greenlet: gevent.Greenlet | None = None

    def subscribe(self, topic: str, on_payload: Handler) -> Callable[[], None]:
        self._handlers.setdefault(topic, []).append(on_payload)
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._listen)
        return lambda: self._unsubscribe(topic, on_payload)

    def _unsubscribe(self, topic: str, on_payload: Handler) -> None:
        handlers = self._handlers.get(topic, [])
        if on_payload in handlers:
            handlers.remove(on_payload)
        if not handlers:
            self._handlers.pop(topic, None)
        if not self._handlers and self._greenlet is not None:
            self._greenlet.kill(block=False)  # closes the connection
            self._greenlet = None

    def _listen(self) -> None:
        while True:
            try:
                with dedicated_connection() as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    for notification in connection.notifies():
                        self._dispatch(notification.payload)
            except Exception:
                log.warning("lost the PostgreSQL listener; reconnecting in %.0f s", RECONNECT_SECS, exc_info=True)
                gevent.sleep(RECONNECT_SECS)

    def _dispatch(self, message: str) -> None:
        topic, _, payload = message.partition(":")
        for on_payload in list(self._handlers.get(topic, ())):
            try:
                on_payload(payload)
            except Exception:  # one subscriber's failure must not silence the others
                log.warning("a handler of %s notifications failed", topic, exc_info=True)


_listeners: dict[int, Listener] = {}


def _listener() -> Listener:
    """This process's listener (a forked child gets its own)."""
    return _listeners.setdefault(os.getpid(), Listener())
