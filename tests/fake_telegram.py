"""A fake Telegram Bot API: a real HTTP server on 127.0.0.1 speaking the Bot API wire format
(`<base>/bot<token>/<method>` with query, form or JSON parameters; files under
`<base>/file/bot<token>/<path>`), driven by tests.

    tg = FakeTelegram().start()
    env = tg.environ()                          # TELEGRAM_BOT_TOKEN + TELEGRAM_API_BASE_URL
    update = tg.push_text(user_id=42, text="hi") # queued for getUpdates; returns the update dict
    tg.wait_for(lambda: tg.sent_to(42))          # messages the bot sent to chat 42
    tg.fail("sendMessage", 429, retry_after=1)   # next sendMessage answers 429
    tg.reject_formatting = 1                     # next formatted message: 400 can't parse entities

getUpdates long-polls like Telegram: it waits up to `timeout` seconds for updates with an id at
or above `offset`, forgets the ones below it, and a newer getUpdates ends an older one still
waiting with 409 Conflict (counted in `conflicts`).
"""
from __future__ import annotations

import html
import itertools
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlsplit

from .loopback import LoopbackServer
from .support import wait_until

TOKEN = "123456:TEST-fake-bot-token"
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "blockquote",
                "tg-spoiler", "span"}


@dataclass
class Sent:
    """A message the bot sent (and its later edits)."""
    message_id: int
    chat_id: int
    text: str
    parse_mode: str | None
    edits: list[tuple[str, str | None]] = field(default_factory=list)
    sent_at: float = field(default_factory=time.perf_counter)

    @property
    def final_text(self) -> str:
        return self.edits[-1][0] if self.edits else self.text


class _EntityChecker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.error = f"unsupported start tag \"{tag}\""
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.error = f"can't find end tag corresponding to start tag \"{tag}\""


def entity_error(text: str, parse_mode: str | None) -> str | None:
    if parse_mode != "HTML":
        return None
    checker = _EntityChecker()
    checker.feed(text)
    checker.close()
    if checker.error is None and checker.stack:
        checker.error = f"can't find end tag corresponding to start tag \"{checker.stack[-1]}\""
    return checker.error


def visible_text(text: str, parse_mode: str | None) -> str:
    """What the user sees (Telegram's length limit counts this, not the markup)."""
    return html.unescape(re.sub(r"<[^>]+>", "", text)) if parse_mode == "HTML" else text


class FakeTelegram(LoopbackServer):
    def __init__(self, token: str = TOKEN):
        self.token = token
        self.lock = threading.Condition()
        self.updates: list[dict] = []
        self.update_ids = itertools.count(1000)
        self.message_ids = itertools.count(1)
        self.calls: list[tuple[str, dict]] = []
        self.sent: list[Sent] = []
        self.failures: deque = deque()
        self.reject_formatting = 0
        self.files: dict[str, tuple[str, bytes]] = {}
        self.webhook: dict | None = None
        self.delivered: Counter = Counter()
        self.conflicts = 0
        self._poll_generation = 0
        self._listen(_make_handler(self), poll_interval=0.05)


    def environ(self, **extra: str) -> dict:
        return {"TELEGRAM_BOT_TOKEN": self.token, "TELEGRAM_API_BASE_URL": self.url, **extra}

    # --- driving -----------------------------------------------------------------------------

    def make_update(self, user_id: int, text: str | None = None, *, username: str | None = None,
                    chat_id: int | None = None, **message_fields) -> dict:
        """An Update with a private-chat message from `user_id` (not queued)."""
        message = {"message_id": next(self.message_ids), "date": int(time.time()),
                   "chat": {"id": chat_id or user_id, "type": "private"},
                   "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": username}}
        if text is not None:
            message["text"] = text
        message.update(message_fields)
        return {"update_id": next(self.update_ids), "message": message}

    def push(self, update: dict) -> dict:
        with self.lock:
            self.updates.append(update)
            self.lock.notify_all()
        return update

    def push_text(self, user_id: int, text: str, **kwargs) -> dict:
        return self.push(self.make_update(user_id, text, **kwargs))

    def add_file(self, content: bytes, extension: str = "jpg") -> str:
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        self.files[file_id] = (f"photos/{file_id}.{extension}", content)
        return file_id

    def photo_fields(self, content: bytes, caption: str | None = None) -> dict:
        file_id = self.add_file(content)
        fields = {"photo": [{"file_id": file_id, "file_unique_id": file_id[-8:], "width": 64, "height": 64,
                             "file_size": len(content)}]}
        if caption is not None:
            fields["caption"] = caption
        return fields

    def fail(self, method: str, status: int, description: str = "Too Many Requests: retry later",
             retry_after: int | None = None) -> None:
        """The next call of `method` fails with this answer."""
        with self.lock:
            self.failures.append((method, status, description, retry_after))

    # --- observing ---------------------------------------------------------------------------

    def sent_to(self, chat_id: int) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.chat_id == chat_id]

    def calls_of(self, method: str) -> list[dict]:
        with self.lock:
            return [params for name, params in self.calls if name == method]

    def wait_for(self, condition, timeout: float = 60.0, what: str = "condition"):
        return wait_until(condition, f"fake Telegram: {what}", timeout)

    # --- the API -----------------------------------------------------------------------------

    def _take_failure(self, method: str):
        for entry in list(self.failures):
            if entry[0] == method:
                self.failures.remove(entry)
                return entry
        return None

    def answer(self, method: str, params: dict) -> tuple[int, dict]:
        with self.lock:
            self.calls.append((method, params))
            failure = self._take_failure(method)
        if failure is not None:
            _, status, description, retry_after = failure
            body = {"ok": False, "error_code": status, "description": description}
            if retry_after is not None:
                body["parameters"] = {"retry_after": retry_after}
            return status, body
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        return handler(params)

    @staticmethod
    def _ok(result) -> tuple[int, dict]:
        return 200, {"ok": True, "result": result}

    def _api_getMe(self, params):
        return self._ok({"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Fake",
                         "username": "fake_bot"})

    def _api_getUpdates(self, params):
        offset = int(params.get("offset") or 0)
        wait = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + wait
        with self.lock:
            if self.webhook is not None:
                return 409, {"ok": False, "error_code": 409,
                             "description": "Conflict: can't use getUpdates method while webhook is active; "
                                            "use deleteWebhook to delete the webhook first"}
            self._poll_generation += 1
            generation = self._poll_generation
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while not self.updates:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or generation != self._poll_generation:
                    break
                self.lock.wait(min(remaining, 0.2))
            if generation != self._poll_generation:
                self.conflicts += 1
                return 409, {"ok": False, "error_code": 409,
                             "description": "Conflict: terminated by other getUpdates request"}
            batch = self.updates[:limit]
            self.delivered.update(u["update_id"] for u in batch)
        return self._ok(batch)

    def _format_error(self, text: str, parse_mode: str | None) -> tuple[int, dict] | None:
        with self.lock:
            error = entity_error(text, parse_mode)
            if parse_mode and self.reject_formatting > 0:
                self.reject_formatting -= 1
                error = error or "unsupported start tag"
        if error is None:
            return None
        return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: can't parse entities: {error}"}

    def _message(self, sent: Sent) -> dict:
        return {"message_id": sent.message_id, "date": int(time.time()),
                "chat": {"id": sent.chat_id, "type": "private"}, "text": sent.final_text}

    def _api_sendMessage(self, params):
        text, parse_mode = params.get("text", ""), params.get("parse_mode")
        if not text or len(visible_text(text, parse_mode)) > 4096:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        refused = self._format_error(text, parse_mode)
        if refused:
            return refused
        with self.lock:
            sent = Sent(next(self.message_ids), int(params["chat_id"]), text, parse_mode)
            self.sent.append(sent)
        return self._ok(self._message(sent))

    def _api_editMessageText(self, params):
        text, parse_mode = params.get("text", ""), params.get("parse_mode")
        refused = self._format_error(text, parse_mode)
        if refused:
            return refused
        with self.lock:
            sent = next((s for s in self.sent if s.message_id == int(params["message_id"])
                         and s.chat_id == int(params["chat_id"])), None)
            if sent is None:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}
            if text == sent.final_text:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is not modified"}
            sent.edits.append((text, parse_mode))
        return self._ok(self._message(sent))

    def _api_sendChatAction(self, params):
        return self._ok(True)

    def _api_getFile(self, params):
        file_id = params.get("file_id")
        if file_id not in self.files:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
        path, content = self.files[file_id]
        return self._ok({"file_id": file_id, "file_unique_id": file_id[-8:], "file_size": len(content),
                         "file_path": path})

    def _api_setWebhook(self, params):
        with self.lock:
            self.webhook = {"url": params.get("url"), "secret_token": params.get("secret_token")}
        return self._ok(True)

    def _api_deleteWebhook(self, params):
        with self.lock:
            self.webhook = None
        return self._ok(True)

    def file_content(self, path: str) -> bytes | None:
        return next((content for p, content in self.files.values() if p == path), None)


def _make_handler(fake: FakeTelegram):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out separately: no delayed-ACK stalls

        def log_message(self, *args):
            pass

        def _params(self) -> dict:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            if raw and "json" in content_type:
                params.update(json.loads(raw))
            elif raw:
                params.update(parse_qsl(raw.decode()))
            return params

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            path = urlsplit(self.path).path
            params = self._params()
            file_prefix = f"/file/bot{fake.token}/"
            if path.startswith(file_prefix):
                content = fake.file_content(path[len(file_prefix):])
                if content is None:
                    self._send(404, b"Not Found", "text/plain")
                else:
                    self._send(200, content, "application/octet-stream")
                return
            prefix = f"/bot{fake.token}/"
            if not path.startswith(prefix):
                self._send(401, json.dumps({"ok": False, "error_code": 401, "description": "Unauthorized"}).encode(),
                           "application/json")
                return
            status, body = fake.answer(path[len(prefix):], params)
            self._send(status, json.dumps(body).encode(), "application/json")

        do_GET = do_POST = _route

    return Handler
