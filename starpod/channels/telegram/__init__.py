"""The Telegram channel: the same agent, its sessions and notifications in Telegram.

`start_telegram(config)` runs in every web worker (gunicorn `post_worker_init`): with a bot token
configured it starts that worker's poller candidate; the database lease lets exactly one poll.
Webhook mode needs no poller: `POST /api/telegram/webhook` hands updates to `accept_webhook_update`.
"""
from __future__ import annotations

import logging
import time

from ...config import Config
from ...errors import BadRequest
from .client import delete_webhook, is_configured, set_webhook

log = logging.getLogger(__name__)

_running: list = []  # [(poller, greenlet)] of this process, for stop_telegram


def start_telegram(config: Config):
    """Start this worker's poller greenlet when a bot token is set; returns it (None without token)."""
    if not is_configured(config):
        return None
    import gevent

    from .dispatch import dispatcher_for
    from .poller import Poller

    dispatcher = dispatcher_for(config)
    poller = Poller(config, dispatcher.client, dispatcher)
    greenlet = gevent.spawn(poller.poll_forever)
    _running.append((poller, greenlet))
    return greenlet


def stop_telegram(timeout: float) -> None:
    """gunicorn `worker_exit`: stop polling, hand the lease to another worker at once, and give the
    updates this worker already took up to `timeout` seconds to be answered.

    Updates fetched but not yet claimed are fetched again by the next poller (the stored offset
    only moves past claimed ones), and claimed ones are never handled twice."""
    import gevent

    deadline = time.monotonic() + timeout
    while _running:
        poller, greenlet = _running.pop()
        greenlet.kill()
        poller.stop()
        while poller.dispatcher.busy and time.monotonic() < deadline:
            gevent.sleep(0.1)


def webhook_enabled(config: Config) -> bool:
    telegram = config.agent.channels.telegram
    return is_configured(config) and telegram.enabled and telegram.mode == "webhook"


def accept_webhook_update(config: Config, payload: dict) -> bool:
    """Claim one webhook update and queue it for background handling; False if seen before.
    BadRequest when the payload is not a Telegram Update (it is not claimed then)."""
    from .dispatch import dispatcher_for

    dispatcher = dispatcher_for(config)
    try:
        update = dispatcher.client.parse_update(payload)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(f"Malformed Telegram update: {exc!r}") from exc
    return dispatcher.accept(update)


__all__ = ["start_telegram", "stop_telegram", "set_webhook", "delete_webhook", "webhook_enabled", "accept_webhook_update"]
