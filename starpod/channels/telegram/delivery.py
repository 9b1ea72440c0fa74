"""Sending the agent's text to a chat: formatted as HTML, re-sent as plain text when Telegram
rejects the entities, split into messages Telegram accepts."""
from __future__ import annotations

import logging

from .client import TelegramClient, is_entity_error
from .formatting import MESSAGE_LIMIT, split_message, to_html

log = logging.getLogger(__name__)


def _formatted(client: TelegramClient, send, chunk: str):
    """`send(text, parse_mode)` as HTML, or as the plain Markdown source when that is refused."""
    try:
        return send(to_html(chunk), "HTML")
    except client.api_error as exc:
        if not is_entity_error(exc):
            raise
        log.info("telegram refused formatting (%s); sending plain text", exc.description)
        return send(chunk, None)


def _send_chunks(client: TelegramClient, chat_id: int, chunks: list[str]) -> list[int]:
    return [_formatted(client, lambda body, mode: client.send_text(chat_id, body, mode), chunk).message_id
            for chunk in chunks]


def send_reply(client: TelegramClient, chat_id: int, text: str) -> list[int]:
    """Send `text` as one or more messages, in order; returns their message ids."""
    return _send_chunks(client, chat_id, split_message(text))


def send_plain(client: TelegramClient, chat_id: int, text: str) -> int:
    """One unformatted message (short service texts); returns its id."""
    return client.send_text(chat_id, text[:MESSAGE_LIMIT]).message_id


def is_not_modified(client: TelegramClient, exc: Exception) -> bool:
    return isinstance(exc, client.api_error) and "message is not modified" in (exc.description or "")


def edit_plain(client: TelegramClient, chat_id: int, message_id: int, text: str) -> None:
    """Show `text` (its start, if longer than a message) in an already-sent message."""
    try:
        client.edit_text(chat_id, message_id, text[:MESSAGE_LIMIT])
    except client.api_error as exc:
        if not is_not_modified(client, exc):
            raise


def finish_reply(client: TelegramClient, chat_id: int, message_id: int, text: str) -> None:
    """Replace a live-updated message with the final text, sending what does not fit after it."""
    chunks = split_message(text)
    if not chunks:
        return
    try:
        _formatted(client, lambda body, mode: client.edit_text(chat_id, message_id, body, mode), chunks[0])
    except client.api_error as exc:
        if not is_not_modified(client, exc):
            raise
    _send_chunks(client, chat_id, chunks[1:])
