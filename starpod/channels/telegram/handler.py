"""One Telegram update → one answer: who is writing, commands, attachments, the chat run.

Only a sender linked to an active user is served; they chat as that user through the shared
pipeline on channel `telegram`, keyed by the chat id (time-gap sessions, private to the user).
Anyone else gets one reply with their numeric id and how to get linked, and nothing is run or
stored for them.
"""
from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass

import gevent

from ... import accounts
from ...accounts import Principal
from ...agent.pipeline import ChatRequest, run_chat
from ...config import Config
from ...errors import BadRequest, StarpodError
from ...models import Session
from ...realtime import attachments
from .client import TelegramClient
from .delivery import edit_plain, finish_reply, send_plain, send_reply
from .store import connection

log = logging.getLogger(__name__)

CHANNEL = "telegram"
TYPING_EVERY_SECS = 4.5      # Telegram shows "typing…" for 5 s per chat action
EDIT_EVERY_SECS = 1.0        # live edits of one message: about one per second per chat
NEW_SESSION_SUMMARY = "Closed by /new"


@dataclass
class IncomingFile:
    file_id: str
    file_name: str
    mime_type: str
    size: int | None


def _command(text: str) -> str | None:
    """`/new` for "/new", "/new@SomeBot" or "/new now"; None for ordinary text."""
    if not text.startswith("/"):
        return None
    return text.split(maxsplit=1)[0].split("@", 1)[0].lower()


def incoming_file(message) -> IncomingFile | None:
    """The photo (largest size) or document of a message, if it carries one."""
    if message.photo:
        photo = message.photo[-1]
        return IncomingFile(photo.file_id, f"photo_{photo.file_unique_id}.jpg", "image/jpeg", photo.file_size)
    document = message.document
    if document is not None:
        name = document.file_name or f"document_{document.file_unique_id}"
        return IncomingFile(document.file_id, name, document.mime_type or "application/octet-stream",
                            document.file_size)
    return None


def not_linked_text(message) -> str:
    sender = message.from_user
    username = f" (@{sender.username})" if sender.username else ""
    return (f"This Telegram account is not linked to a Starpod user.\n"
            f"Your Telegram ID: {sender.id}{username}\n"
            f"Ask an administrator to link this ID to your Starpod account.")


def close_open_session(chat_id: int, user_id: str) -> int:
    """Close the user's open Telegram session in this chat, so the next message starts a new one."""
    return (Session.update(is_closed=True, summary=NEW_SESSION_SUMMARY)
            .where((Session.channel == CHANNEL) & (Session.channel_session_key == str(chat_id))
                   & (Session.user_id == user_id) & (Session.is_closed == False))  # noqa: E712
            .execute())


class Typing:
    """Keeps Telegram's typing indicator on while the agent works."""

    def __init__(self, client: TelegramClient, chat_id: int):
        self.client, self.chat_id = client, chat_id
        self.greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        while True:
            try:
                self.client.typing(self.chat_id)
            except Exception:
                log.debug("typing indicator failed", exc_info=True)
            gevent.sleep(TYPING_EVERY_SECS)

    def stop(self) -> None:
        self.greenlet.kill(block=False)


class LiveReply:
    """`all_messages` mode: the reply so far, shown in one message edited at most once a second."""

    def __init__(self, client: TelegramClient, chat_id: int):
        self.client, self.chat_id = client, chat_id
        self.text = ""
        self.shown = ""
        self.message_id: int | None = None
        self.last_edit = float("-inf")

    def add(self, delta: str) -> None:
        self.text += delta
        if not self.text.strip() or time.monotonic() - self.last_edit < EDIT_EVERY_SECS:
            return
        if self.message_id is None:
            self.message_id = send_plain(self.client, self.chat_id, self.text)
        elif self.text != self.shown:
            edit_plain(self.client, self.chat_id, self.message_id, self.text)
        self.shown, self.last_edit = self.text, time.monotonic()

    def finish(self, final_text: str) -> None:
        if self.message_id is None:
            send_reply(self.client, self.chat_id, final_text)
        else:
            finish_reply(self.client, self.chat_id, self.message_id, final_text)


def _run(config: Config, client: TelegramClient, chat_id: int, request: ChatRequest) -> None:
    live = LiveReply(client, chat_id) if config.agent.channels.telegram.stream_mode == "all_messages" else None
    end: dict = {}
    typing = Typing(client, chat_id)
    try:
        for event in run_chat(request, config):
            if event["type"] == "text_delta" and live is not None:
                live.add(event["text"])
            elif event["type"] == "stream_end":
                end = event
    except StarpodError as exc:  # refused before the run started (no provider key, bad input)
        end = {"text": "", "errors": [exc.message]}
    finally:
        typing.stop()
    text = end.get("text") or ""
    if end.get("errors"):
        text = (text + "\n\n" if text else "") + "⚠️ " + "; ".join(end["errors"])
    text = text or "(no reply)"
    if live is not None:
        live.finish(text)
    else:
        send_reply(client, chat_id, text)


def _attachments(config: Config, client: TelegramClient, message, principal: Principal) -> tuple[list, str]:
    """The message's file saved like a WebSocket attachment; BadRequest when it is not allowed."""
    incoming = incoming_file(message)
    if incoming is None:
        return [], ""
    settings = config.agent.attachments
    if incoming.size is not None and incoming.size > settings.max_file_size:
        raise BadRequest(f"Sorry, '{incoming.file_name}' is too large: the limit is "
                         f"{settings.max_file_size / attachments.MIB:.1f} MB.")
    content = client.download(incoming.file_id)
    uploads = [attachments.Upload(incoming.file_name, incoming.mime_type, base64.b64encode(content).decode("ascii"))]
    contents = attachments.validate(uploads, settings)
    return attachments.save_for_sender(config, principal.user_id, principal.is_admin, uploads, contents)


def _serve(config: Config, client: TelegramClient, message, principal: Principal) -> None:
    chat_id = message.chat.id
    text = message.text or message.caption or ""
    command = _command(text)
    if command == "/new":
        close_open_session(chat_id, principal.user_id)
        send_plain(client, chat_id, "Started a new session.")
        return
    if command == "/start":
        send_plain(client, chat_id, f"Hi! I'm {config.agent.agent_name}. Send me a message to start; "
                                    f"/new starts a fresh session.")
        return
    try:
        files, notes = _attachments(config, client, message, principal)
    except BadRequest as exc:
        send_plain(client, chat_id, exc.message)
        return
    if not text.strip() and not files:
        return  # stickers, locations, ...: nothing the agent can read
    request = ChatRequest(text=text, user_id=principal.user_id, is_admin=principal.is_admin,
                          channel_id=CHANNEL, channel_session_key=str(chat_id), attachments=files,
                          prompt_notes=notes)
    _run(config, client, chat_id, request)


def handle_update(config: Config, client: TelegramClient, update) -> None:
    """Answer one update (messages only; other update kinds are ignored)."""
    message = update.message
    if message is None or message.from_user is None:
        return
    with connection():
        principal = accounts.authenticate_telegram(message.from_user.id)
        if principal is None:
            send_plain(client, message.chat.id, not_linked_text(message))
            return
        _serve(config, client, message, principal)
