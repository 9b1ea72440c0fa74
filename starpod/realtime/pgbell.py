"""Cross-server wake-ups on PostgreSQL: LISTEN/NOTIFY on top of the per-machine doorbell.

The UNIX-datagram doorbell reaches the workers of one machine only.  With `DATABASE_URL` on
PostgreSQL, whoever rings also NOTIFYs one channel, and every worker of every server LISTENs on
its own connection and rings its own doorbell for each notification from someone else.  Like a
ring, a notification carries nothing but the sender's id: a lost one costs at most the fallback
poll, since readers always ask the database what is new.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Callable

import gevent
import psycopg

from ..db import database, dedicated_connection, is_postgresql

log = logging.getLogger(__name__)

CHANNEL = "starpod_doorbell"
RECONNECT_SECS = 5.0


def announce(sender: str = "") -> None:
    """NOTIFY every listening worker of every server (PostgreSQL only); never raises.

    Inside the caller's transaction the notification is sent when it commits.
    """
    if not is_postgresql():
        return
    try:
        with database.connection_context() if database.is_closed() else nullcontext():
            database.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, sender))
    except Exception:  # a hint: losing it costs one poll interval
        log.warning("could not notify other servers", exc_info=True)


def _listening_connection(db) -> psycopg.Connection:
    connection = dedicated_connection(db)
    connection.execute(f"LISTEN {CHANNEL}")
    return connection


def listen(own_id: str, on_ring: Callable[[], None], db=None) -> None:
    """Forever: call `on_ring` for every notification not sent by `own_id`; reconnects after errors.

    Meant for its own greenlet (psycopg waits cooperatively under gevent); killing it stops it.
    """
    target = database.obj if db is None else db
    while True:
        try:
            with _listening_connection(target) as connection:
                for notification in connection.notifies():
                    if notification.payload != own_id:
                        on_ring()
        except Exception:
            log.warning("lost the PostgreSQL listener; reconnecting in %.0f s", RECONNECT_SECS, exc_info=True)
            gevent.sleep(RECONNECT_SECS)
