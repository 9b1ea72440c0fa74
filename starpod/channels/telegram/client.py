"""The Bot API client: pyTelegramBotAPI pointed at `TELEGRAM_API_BASE_URL`, with 429 retries.

`telebot` costs noticeable start-up time, so it is imported only when a bot token is configured
and a client is first needed.  Its base URL is module-wide state of `telebot.apihelper`; every
Starpod process talks to one Bot API server, the one its Config names.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable

from ...config import Config

log = logging.getLogger(__name__)

MAX_RATE_LIMIT_RETRIES = 5
MAX_RETRY_AFTER_SECS = 60
REQUEST_TIMEOUT_SECS = 30
HTTP_POOL_SIZE = 64


class TelegramNotConfigured(RuntimeError):
    """No TELEGRAM_BOT_TOKEN is set."""


def _shared_session():
    """One keep-alive HTTP session for every greenlet (telebot's default is one per thread, which
    under gevent means a new connection for every chat greenlet)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=HTTP_POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _telebot(base_url: str):
    import telebot
    from telebot import apihelper
    apihelper.API_URL = base_url + "/bot{0}/{1}"
    apihelper.FILE_URL = base_url + "/file/bot{0}/{1}"
    apihelper.READ_TIMEOUT = REQUEST_TIMEOUT_SECS
    apihelper.session = _shared_session()
    apihelper.SESSION_TIME_TO_LIVE = None
    return telebot


def retry_after(exc: Exception) -> float | None:
    """Seconds Telegram asked us to wait when `exc` is a 429 answer, else None."""
    if getattr(exc, "error_code", None) != 429:
        return None
    parameters = (getattr(exc, "result_json", None) or {}).get("parameters") or {}
    return float(parameters.get("retry_after") or 1)


def is_entity_error(exc: Exception) -> bool:
    """True when Telegram refused a message because its formatting entities did not parse."""
    return getattr(exc, "error_code", None) == 400 and "can't parse entities" in (getattr(exc, "description", "") or "")


class TelegramClient:
    """One bot: the Bot API methods Starpod uses, each retried after a 429's `retry_after`."""

    def __init__(self, token: str, base_url: str):
        telebot = _telebot(base_url)
        self.bot = telebot.TeleBot(token, threaded=False)
        self.bot_id = int(token.split(":", 1)[0])
        self.api_error = telebot.apihelper.ApiTelegramException

    def call(self, method: str, *args, **kwargs) -> Any:
        """`bot.<method>(...)`, waiting and retrying while Telegram answers 429."""
        fn: Callable = getattr(self.bot, method)
        for attempt in range(MAX_RATE_LIMIT_RETRIES + 1):
            try:
                return fn(*args, **kwargs)
            except self.api_error as exc:
                wait = retry_after(exc)
                if wait is None or attempt == MAX_RATE_LIMIT_RETRIES:
                    raise
                log.info("telegram %s rate limited; retrying in %.1f s", method, wait)
                time.sleep(min(wait, MAX_RETRY_AFTER_SECS))

    def get_updates(self, offset: int, poll_timeout: int) -> list:
        return self.call("get_updates", offset=offset, timeout=poll_timeout + REQUEST_TIMEOUT_SECS,
                         long_polling_timeout=poll_timeout)

    def send_text(self, chat_id: int, text: str, parse_mode: str | None = None):
        return self.call("send_message", chat_id, text, parse_mode=parse_mode)

    def edit_text(self, chat_id: int, message_id: int, text: str, parse_mode: str | None = None):
        return self.call("edit_message_text", text, chat_id=chat_id, message_id=message_id, parse_mode=parse_mode)

    def typing(self, chat_id: int) -> None:
        self.call("send_chat_action", chat_id, "typing")

    def download(self, file_id: str) -> bytes:
        info = self.call("get_file", file_id)
        return self.call("download_file", info.file_path)

    def set_webhook(self, url: str, secret: str | None) -> bool:
        return self.call("set_webhook", url=url, secret_token=secret)

    def delete_webhook(self) -> bool:
        return self.call("delete_webhook")

    def parse_update(self, payload: dict):
        from telebot import types
        return types.Update.de_json(payload)


@functools.cache
def _client(token: str, base_url: str) -> TelegramClient:
    return TelegramClient(token, base_url)


def is_configured(config: Config) -> bool:
    return config.telegram_bot_token is not None


def client_for(config: Config) -> TelegramClient:
    """The process's client for the configured bot (TelegramNotConfigured without a token)."""
    if not is_configured(config):
        raise TelegramNotConfigured("TELEGRAM_BOT_TOKEN is not set")
    return _client(config.telegram_bot_token, config.telegram_api_base_url)


def set_webhook(config: Config, url: str) -> bool:
    """Register `url` (the public address of POST /api/telegram/webhook) with Telegram, with the
    secret from TELEGRAM_WEBHOOK_SECRET that the route checks."""
    return client_for(config).set_webhook(url, config.telegram_webhook_secret)


def delete_webhook(config: Config) -> bool:
    """Remove the webhook, so updates can be fetched by long polling again."""
    return client_for(config).delete_webhook()
