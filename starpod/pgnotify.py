"""PostgreSQL NOTIFY/LISTEN as a hint between the servers of one deployment.

`notify(channel, payload)` never raises and does nothing on SQLite; inside the caller's transaction
the notification is sent when it commits (and not at all if it rolls back).  `listen(channel,
on_payload)` runs forever on a connection of its own, reconnecting after errors.  A notification
only tells a listener to look again: whatever it means is read from the database or the shared
volume, so a lost one costs at most the listener's fallback poll.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Callable

import gevent

from .db import database, dedicated_connection, is_postgresql

log = logging.getLogger(__name__)

RECONNECT_SECS = 5.0


def notify(channel: str, payload: str = "") -> None:
    """NOTIFY `channel` on the shared database (PostgreSQL only); a failure is logged, never raised."""
    if not is_postgresql():
        return
    try:
        with database.connection_context() if database.is_closed() else nullcontext():
            database.execute_sql("SELECT pg_notify(%s, %s)", (channel, payload))
    except Exception:  # a hint: losing it costs one poll interval
        log.warning("could not notify %s to other servers", channel, exc_info=True)


def listen(channel: str, on_payload: Callable[[str], None], db=None) -> None:
    """Forever: call `on_payload` with the payload of every notification on `channel`.

    Meant for its own greenlet (psycopg waits cooperatively under gevent); killing it stops it.
    """
    target = database.obj if db is None else db
    while True:
        try:
            with dedicated_connection(target) as connection:
                connection.execute(f"LISTEN {channel}")
                for notification in connection.notifies():
                    on_payload(notification.payload)
        except Exception:
            log.warning("lost the PostgreSQL listener of %s; reconnecting in %.0f s", channel,
                        RECONNECT_SECS, exc_info=True)
            gevent.sleep(RECONNECT_SECS)
