"""The Telegram channel: the same agent, its sessions and notifications in Telegram.

`start_telegram(config)` runs in every web worker (gunicorn `post_worker_init`): with a bot token
configured it starts that worker's poller candidate; the database lease lets exactly one poll.
Webhook mode needs no poller: `POST /api/telegram/webhook` hands updates to `accept_webhook_update`.
"""
from __future__ import annotations

import logging

from ...config import Config
from .client import delete_webhook, is_configured, set_webhook

log = logging.getLogger(__name__)


def start_telegram(config: Config):
    """Start this worker's poller greenlet when a bot token is set; returns it (None without token)."""
    if not is_configured(config):
        return None
    import gevent

    from .dispatch import dispatcher_for
    from .poller import Poller

    dispatcher = dispatcher_for(config)
    poller = Poller(config, dispatcher.client, dispatcher)
    return gevent.spawn(poller.poll_forever)


def webhook_enabled(config: Config) -> bool:
    telegram = config.agent.channels.telegram
    return is_configured(config) and telegram.enabled and telegram.mode == "webhook"


def accept_webhook_update(config: Config, payload: dict) -> bool:
    """Claim one webhook update and queue it for background handling; False if seen before."""
    from .dispatch import dispatcher_for

    dispatcher = dispatcher_for(config)
    return dispatcher.accept(dispatcher.client.parse_update(payload))


__all__ = ["start_telegram", "set_webhook", "delete_webhook", "webhook_enabled", "accept_webhook_update"]
