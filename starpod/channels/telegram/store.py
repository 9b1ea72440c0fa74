"""What the Telegram channel keeps in the database: the polling offset and the update ids taken.

Claiming an update id is one insert into a table keyed by (bot, update_id), so whichever worker
or server inserts first handles it and a redelivery (webhook retry, a poller taking over) is
skipped.  Old claims are pruned now and then; Telegram never redelivers after a day.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

from peewee import IntegrityError

from ...db import database, write_transaction
from ...models import TelegramState, TelegramUpdate
from ...timeutil import to_rfc3339, utcnow

PRUNE_EVERY = 500
KEEP_CLAIMS = timedelta(days=7)


@contextmanager
def connection():
    """An open connection for the block: this greenlet's when one is open (closing it here would
    end the caller's transaction), else one opened now and returned to the pool afterwards."""
    if not database.is_closed():
        yield
        return
    database.connect(reuse_if_open=True)
    try:
        yield
    finally:
        if not database.is_closed() and not database.in_transaction():
            database.close()


def _offset_name(bot_id: int) -> str:
    return f"offset:{bot_id}"


def get_offset(bot_id: int) -> int:
    """The next update id to ask getUpdates for (0 = whatever Telegram has)."""
    with connection():
        row = TelegramState.get_or_none(TelegramState.name == _offset_name(bot_id))
    return row.value if row else 0


def advance_offset(bot_id: int, offset: int) -> None:
    """Store `offset` unless a higher one is stored already."""
    name = _offset_name(bot_id)
    with connection(), write_transaction(name):
        updated = (TelegramState.update(value=offset)
                   .where((TelegramState.name == name) & (TelegramState.value < offset)).execute())
        if not updated and TelegramState.get_or_none(TelegramState.name == name) is None:
            TelegramState.insert(name=name, value=offset).execute()


def claim_update(bot_id: int, update_id: int) -> bool:
    """True for the first caller with this update id, False for every later one."""
    with connection():
        try:
            with database.atomic():
                TelegramUpdate.insert(bot_id=bot_id, update_id=update_id).execute()
        except IntegrityError:
            return False
        if update_id % PRUNE_EVERY == 0:
            cutoff = to_rfc3339(utcnow() - KEEP_CLAIMS)
            TelegramUpdate.delete().where(TelegramUpdate.received_at < cutoff).execute()
    return True
