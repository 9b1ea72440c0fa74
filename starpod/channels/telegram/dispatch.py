"""Updates handed to background greenlets: chats are served concurrently, each chat in order.

Both delivery modes feed one `Dispatcher` per process after claiming the update id, so a message
is answered once however it arrived.  Order holds within a process: with long polling every update
goes through the poller's process; webhook deliveries of one chat that land on different workers
may run side by side in the chat's session.
"""
from __future__ import annotations

import functools
import logging
from collections import deque

import gevent

from ...config import Config
from .client import TelegramClient, client_for
from .handler import handle_update
from .store import claim_update

log = logging.getLogger(__name__)


def chat_of(update) -> int | None:
    message = update.message
    return message.chat.id if message is not None else None


class Dispatcher:
    def __init__(self, config: Config, client: TelegramClient):
        self.config = config
        self.client = client
        self.queues: dict[int | None, deque] = {}

    def accept(self, update) -> bool:
        """Claim the update and queue it for its chat; False when it was handled already."""
        if not claim_update(self.client.bot_id, update.update_id):
            return False
        chat = chat_of(update)
        queue = self.queues.get(chat)
        if queue is not None:  # that chat's greenlet is running and will get to it
            queue.append(update)
            return True
        self.queues[chat] = deque([update])
        gevent.spawn(self._drain, chat)
        return True

    def _drain(self, chat: int | None) -> None:
        queue = self.queues[chat]
        try:
            while queue:
                update = queue.popleft()
                try:
                    handle_update(self.config, self.client, update)
                except Exception:
                    log.exception("telegram update %s failed", update.update_id)
        finally:
            del self.queues[chat]

    @property
    def busy(self) -> int:
        """Updates accepted but not answered yet (in any chat)."""
        return sum(len(queue) for queue in self.queues.values()) + len(self.queues)


@functools.cache
def _dispatcher(config: Config) -> Dispatcher:
    return Dispatcher(config, client_for(config))


def dispatcher_for(config: Config) -> Dispatcher:
    """This process's dispatcher for `config`'s bot (the client is created on first use)."""
    return _dispatcher(config)
