"""Updates handed to background greenlets: chats are served concurrently, each chat one at a time.

Both delivery modes feed one `Dispatcher` per process after claiming the update id, so a message
is answered once however it arrived.  Within a process a chat's updates queue up in order; across
processes (webhook deliveries land on any worker or server) a per-chat database lease keeps two
runs of one chat from overlapping in its session.
"""
from __future__ import annotations

import functools
import logging
from collections import deque
from contextlib import contextmanager

import gevent

from ... import leases
from ...config import Config
from .client import TelegramClient, client_for
from .handler import handle_update
from .store import claim_update

log = logging.getLogger(__name__)

CHAT_LEASE_TTL_SECS = 60.0
CHAT_LEASE_RETRY_SECS = 0.1


def chat_of(update) -> int | None:
    message = update.message
    return message.chat.id if message is not None else None


def _keep_renewing(name: str, holder: str) -> None:
    while True:
        gevent.sleep(CHAT_LEASE_TTL_SECS / 3)
        leases.acquire(name, holder, CHAT_LEASE_TTL_SECS)


@contextmanager
def chat_turn(chat: int | None, holder: str):
    """Hold chat `chat` for this process while its queued updates are handled."""
    if chat is None:
        yield
        return
    name = f"telegram-chat:{chat}"
    while not leases.acquire(name, holder, CHAT_LEASE_TTL_SECS):
        gevent.sleep(CHAT_LEASE_RETRY_SECS)
    keeper = gevent.spawn(_keep_renewing, name, holder)
    try:
        yield
    finally:
        keeper.kill()
        leases.release(name, holder)


class Dispatcher:
    def __init__(self, config: Config, client: TelegramClient):
        self.config = config
        self.client = client
        self.queues: dict[int | None, deque] = {}
        self.holder = leases.new_holder_id()

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
            with chat_turn(chat, self.holder):
                while queue:
                    update = queue.popleft()
                    try:
                        handle_update(self.config, self.client, update)
                    except Exception:
                        log.exception("telegram update %s failed", update.update_id)
        except Exception:
            log.exception("telegram chat %s: %d updates not handled", chat, len(queue))
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
