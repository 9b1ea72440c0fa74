"""Long polling: exactly one poller across all workers and servers sharing the database.

Every worker runs `poll_forever`; only the holder of the `telegram-poller` lease calls getUpdates.
The holder renews the lease on every round (a round lasts at most the long-poll timeout), so a dead
holder is replaced within the lease's TTL.  The offset lives in the database and each update id is
claimed before it is handled, so a restart or a takeover neither loses nor repeats a message.
`enabled` and `mode` are read live: switching to webhook mode or disabling the channel stops
polling within one round, switching back starts it again.
"""
from __future__ import annotations

import logging

import gevent

from ... import leases
from ...config import Config
from .client import TelegramClient
from .dispatch import Dispatcher
from .store import advance_offset, get_offset

log = logging.getLogger(__name__)

LEASE_NAME = "telegram-poller"
LEASE_TTL_SECS = 15.0
LONG_POLL_SECS = 5
IDLE_CHECK_SECS = 2.0
ERROR_BACKOFF_SECS = 3.0


def polling_wanted(config: Config) -> bool:
    telegram = config.agent.channels.telegram
    return telegram.enabled and telegram.mode == "polling"


class Poller:
    def __init__(self, config: Config, client: TelegramClient, dispatcher: Dispatcher):
        self.config = config
        self.client = client
        self.dispatcher = dispatcher
        self.holder = leases.new_holder_id()
        self.polling = False  # True while this process holds the lease and polls

    def poll_forever(self) -> None:
        while True:
            try:
                self.step()
            except Exception:
                log.exception("telegram poller round failed")
                gevent.sleep(ERROR_BACKOFF_SECS)

    def step(self) -> None:
        """One round: hand over or wait when not wanted/not ours, else fetch and dispatch."""
        if not polling_wanted(self.config):
            self.stop()
            gevent.sleep(IDLE_CHECK_SECS)
            return
        if not leases.acquire(LEASE_NAME, self.holder, LEASE_TTL_SECS):
            self.polling = False
            gevent.sleep(IDLE_CHECK_SECS)
            return
        if not self.polling:
            log.info("telegram poller started in this process (%s)", self.holder)
            self.client.delete_webhook()  # getUpdates is refused while a webhook is set
            self.polling = True
        self.poll_once()

    def poll_once(self) -> None:
        offset = get_offset(self.client.bot_id)
        try:
            updates = self.client.get_updates(offset, LONG_POLL_SECS)
        except self.client.api_error as exc:
            if exc.error_code != 409 or "webhook" not in (exc.description or ""):
                raise
            self.client.delete_webhook()  # a webhook was registered while we are in polling mode
            return
        for update in updates:
            self.dispatcher.accept(update)
        if updates:  # each update is claimed, so a crash before this line repeats none of them
            advance_offset(self.client.bot_id, max(u.update_id for u in updates) + 1)

    def stop(self) -> None:
        """Stop being the poller: give the lease up so another process can take over at once."""
        if self.polling:
            leases.release(LEASE_NAME, self.holder)
            self.polling = False
            log.info("telegram poller stopped in this process (%s)", self.holder)

