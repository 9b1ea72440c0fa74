"""Cross-server wake-ups on PostgreSQL: LISTEN/NOTIFY on top of the per-machine doorbell.

The UNIX-datagram doorbell reaches the workers of one machine only.  With `DATABASE_URL` on
PostgreSQL, whoever rings also NOTIFYs the doorbell topic, and every worker of every server
subscribes to it (on its one LISTEN connection, pgnotify) and rings its own doorbell for each
notification from someone else.  Like a ring, a notification carries nothing but the sender's id:
a lost one costs at most the fallback poll, since readers always ask the database what is new.
"""
from __future__ import annotations

from typing import Callable

from .. import pgnotify

TOPIC = "doorbell"


def announce(sender: str = "") -> None:
    """NOTIFY every listening worker of every server (PostgreSQL only); never raises.

    Inside the caller's transaction the notification is sent when it commits.
    """
    pgnotify.notify(TOPIC, sender)


def subscribe(own_id: str, on_ring: Callable[[], None]) -> Callable[[], None]:
    """Call `on_ring` for every notification not sent by `own_id` (in a gevent worker); returns the
    function that cancels the subscription."""
    def ring_unless_own(sender: str) -> None:
        if sender != own_id:
            on_ring()
    return pgnotify.subscribe(TOPIC, ring_unless_own)
