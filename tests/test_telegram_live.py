"""The Telegram channel end to end: a real gunicorn (gevent, 2 workers) polling the fake Bot API,
chats through the fake LLM provider; then webhook mode on the same server.

Users: Alice (linked, active), Bob (linked, deactivated); a third sender is not linked at all.
"""
from __future__ import annotations

import os
import re
import signal
import time
from datetime import timedelta

import pytest

from starpod.timeutil import to_rfc3339, utcnow

from . import appdb
from .fake_provider import Reply
from .fake_telegram import FakeTelegram
from .support import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ALICE_TG, BOB_TG, STRANGER_TG = 5001, 5002, 5003
SECRET = "webhook-secret-for-tests"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
WAIT = 60.0


@pytest.fixture(scope="module")
def tg():
    fake = FakeTelegram().start()
    yield fake
    fake.stop()


def server_env(fake, tg) -> dict:
    return {**fake.environ(), **tg.environ(TELEGRAM_WEBHOOK_SECRET=SECRET)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake, tg):
    home = tmp_path_factory.mktemp("telegram") / "home"
    live = LiveServer(home, workers=2, env=server_env(fake, tg)).start()
    live.admin_key = live.generated_admin_key()
    yield live
    live.stop()


def create_user(server, name: str, telegram_id: int) -> str:
    user = server.request("POST", "/api/settings/auth/users", server.admin_key,
                          json={"role": "user", "display_name": name}).json()
    linked = server.request("PUT", f"/api/settings/auth/users/{user['id']}/telegram", server.admin_key,
                            json={"telegram_id": telegram_id, "username": name.lower()})
    assert linked.status_code == 200
    return user["id"]


@pytest.fixture(scope="module")
def users(server):
    alice = create_user(server, "Alice", ALICE_TG)
    bob = create_user(server, "Bob", BOB_TG)
    assert server.request("POST", f"/api/settings/auth/users/{bob}/deactivate", server.admin_key).status_code == 200
    return {"alice": alice, "bob": bob}


def last_user_text(recorded) -> str:
    blocks = recorded.body["messages"][-1]["content"]
    return "".join(b.get("text", "") for b in blocks if isinstance(b, dict))


def echo(recorded) -> Reply:
    return Reply(f"echo: {last_user_text(recorded)}")


@pytest.fixture(autouse=True)
def echo_provider(fake):
    fake.reset()
    fake.default = echo
    yield


def set_channel(server, **telegram):
    body = {"telegram": {"enabled": True, **telegram}}
    answer = server.request("PUT", "/api/settings/channels", server.admin_key, json=body)
    assert answer.status_code == 200, answer.text


def wait_replies(tg, chat_id: int, count: int):
    return tg.wait_for(lambda: (lambda sent: sent if len(sent) >= count else None)(tg.sent_to(chat_id)),
                       WAIT, f"{count} messages to chat {chat_id}")


def ask(tg, chat_id: int, text: str | None = None, **fields):
    """Send a message from `chat_id` and wait for the bot's next message there."""
    before = len(tg.sent_to(chat_id))
    tg.push(tg.make_update(chat_id, text, **fields))
    return wait_replies(tg, chat_id, before + 1)[before]


def telegram_sessions(server, user_id: str) -> list[dict]:
    listed = server.request("GET", "/api/sessions?limit=200", server.admin_key).json()
    return [s for s in listed if s["channel"] == "telegram" and s["user_id"] == user_id]


# --- polling mode ----------------------------------------------------------------------------

def test_linked_user_chats_as_themselves(server, users, tg, fake):
    reply = ask(tg, ALICE_TG, "hello there")
    assert reply.text == "echo: hello there"
    (session,) = telegram_sessions(server, users["alice"])
    assert session["channel_session_key"] == str(ALICE_TG)
    messages = server.request("GET", f"/api/sessions/{session['id']}/messages", server.admin_key).json()
    assert [(m["role"], m["content"]) for m in messages] == [("user", "hello there"), ("assistant", "echo: hello there")]
    tg.wait_for(lambda: tg.calls_of("sendChatAction"), WAIT, "the typing indicator")


def test_unlinked_and_deactivated_senders_only_learn_their_id(server, users, tg, fake):
    reply = ask(tg, STRANGER_TG, "/start", username="stranger")
    assert str(STRANGER_TG) in reply.text and "@stranger" in reply.text and "not linked" in reply.text
    reply = ask(tg, BOB_TG, "let me in")
    assert str(BOB_TG) in reply.text and "not linked" in reply.text
    assert fake.requests == []  # no model call for either
    assert telegram_sessions(server, users["bob"]) == []
    # One reply each, nothing more.
    assert len(tg.sent_to(STRANGER_TG)) == 1 and len(tg.sent_to(BOB_TG)) == 1


def _age_session(server, session_id: str, hours: int) -> None:
    appdb.query(server.home, "UPDATE session_metadata SET last_message_at = ? WHERE id = ?",
                to_rfc3339(utcnow() - timedelta(hours=hours)), session_id)


def test_gap_rollover_and_new_command_start_new_sessions(server, users, tg):
    ask(tg, ALICE_TG, "before the gap")
    (current,) = [s for s in telegram_sessions(server, users["alice"]) if not s["is_closed"]]
    _age_session(server, current["id"], hours=7)  # past the default gap of 360 minutes
    assert ask(tg, ALICE_TG, "after the gap").text == "echo: after the gap"
    sessions = {s["id"]: s for s in telegram_sessions(server, users["alice"])}
    assert sessions[current["id"]]["is_closed"] and sessions[current["id"]]["summary"] == "Auto-closed: inactivity"
    (rolled,) = [s for s in sessions.values() if not s["is_closed"]]
    assert rolled["title"] == "after the gap"

    assert ask(tg, ALICE_TG, "/new").text == "Started a new session."
    ask(tg, ALICE_TG, "fresh start")
    sessions = {s["id"]: s for s in telegram_sessions(server, users["alice"])}
    assert sessions[rolled["id"]]["is_closed"]
    (fresh,) = [s for s in sessions.values() if not s["is_closed"]]
    assert fresh["title"] == "fresh start" and fresh["id"] != rolled["id"]


def test_final_only_long_reply_is_split_in_order(server, users, tg, fake):
    words = [f"w{i:04d}" for i in range(1700)]
    text = "\n\n".join(" ".join(words[i:i + 25]) for i in range(0, len(words), 25))
    assert len(text) >= 10000
    fake.script(Reply(text, chunks=40))
    before = len(tg.sent_to(ALICE_TG))
    tg.push_text(ALICE_TG, "write a lot")

    def received_words():
        return " ".join(s.text for s in tg.sent_to(ALICE_TG)[before:]).split()
    tg.wait_for(lambda: len(received_words()) >= len(words), WAIT, "the whole long reply")
    sent = tg.sent_to(ALICE_TG)[before:]
    assert received_words() == words and len(sent) >= 3
    assert all(len(s.text) <= 4096 and not s.edits for s in sent)


def test_all_messages_streams_into_one_edited_message(server, users, tg, fake):
    set_channel(server, stream_mode="all_messages")
    try:
        final = "First part of the answer. " * 6 + "**Done**."
        fake.script(Reply(final, chunks=12, chunk_delay=0.25))
        reply = ask(tg, ALICE_TG, "stream please")
        tg.wait_for(lambda: reply.edits and reply.edits[-1][1] == "HTML", WAIT, "the final edit")
        assert final.startswith(reply.text) and len(reply.text) < len(final)  # first shown: a partial text
        partial_edits = [text for text, mode in reply.edits if mode is None]
        assert all(final.startswith(text) for text in partial_edits)
        assert reply.edits[-1] == ("First part of the answer. " * 6 + "<b>Done</b>.", "HTML")
    finally:
        set_channel(server, stream_mode="final_only")


def test_rejected_markdown_is_resent_as_plain_text(server, users, tg, fake):
    fake.script(Reply("Use **care** with `<tags>`"))
    tg.reject_formatting = 1
    reply = ask(tg, ALICE_TG, "format something")
    assert (reply.text, reply.parse_mode) == ("Use **care** with `<tags>`", None)


def test_rate_limited_reply_is_retried(server, users, tg):
    failed_before = len(tg.calls_of("sendMessage"))
    tg.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    assert ask(tg, ALICE_TG, "are you there").text == "echo: are you there"
    assert len(tg.calls_of("sendMessage")) == failed_before + 2


def test_photo_reaches_the_model_as_an_image(server, users, tg, fake):
    reply = ask(tg, ALICE_TG, **tg.photo_fields(PNG, caption="what is this?"))
    assert reply.text.startswith("echo: what is this?")
    images = [b for b in fake.requests[-1].body["messages"][-1]["content"] if b["type"] == "image"]
    assert len(images) == 1 and images[0]["source"]["media_type"] == "image/jpeg"
    assert "Uploaded image" in last_user_text(fake.requests[-1])
    downloads = server.home / "workspace" / "users" / users["alice"] / "downloads"  # the sender's own
    assert any(p.read_bytes() == PNG for p in downloads.iterdir())


def test_too_large_document_gets_a_polite_reply(server, users, tg, fake):
    file_id = tg.add_file(b"x", "bin")
    document = {"file_id": file_id, "file_unique_id": "big1", "file_name": "huge.bin",
                "mime_type": "application/octet-stream", "file_size": 50 * 1024 * 1024}
    get_files = len(tg.calls_of("getFile"))
    reply = ask(tg, ALICE_TG, document=document)
    assert "too large" in reply.text and "huge.bin" in reply.text
    assert len(tg.calls_of("getFile")) == get_files and fake.requests == []


def test_one_poller_answers_each_update_once(server, users, tg):
    senders = list(range(9100, 9130))
    updates = [tg.push_text(sender, "who am I?") for sender in senders]
    for sender in senders:
        wait_replies(tg, sender, 1)
    last_id = max(u["update_id"] for u in updates)
    # The poller confirms updates by asking for later ones; after that nothing can be redelivered.
    tg.wait_for(lambda: any(int(c.get("offset") or 0) > last_id for c in tg.calls_of("getUpdates")), WAIT,
                "the offset to move past the batch")
    assert all(len(tg.sent_to(sender)) == 1 for sender in senders)
    assert all(tg.delivered[u["update_id"]] == 1 for u in updates)
    assert tg.conflicts == 0  # never two getUpdates at once
    assert server.log_text().count("telegram poller started") == 1


def test_a_dead_pollers_lease_is_taken_over(server, users, tg):
    holders = re.findall(r"telegram poller started in this process \(([^)]+)\)", server.log_text())
    pid = int(holders[-1].split(":")[1])
    os.kill(pid, signal.SIGKILL)  # no goodbye: the lease must expire before anyone polls again
    reply = ask(tg, 9300, "anyone there?")
    assert str(9300) in reply.text
    assert len(re.findall(r"telegram poller started", server.log_text())) == len(holders) + 1


def test_disabling_the_channel_stops_polling_without_restart(server, users, tg):
    stopped = server.log_text().count("telegram poller stopped")
    set_channel(server, enabled=False)
    try:
        tg.wait_for(lambda: server.log_text().count("telegram poller stopped") > stopped, WAIT, "the poller to stop")
        tg.push_text(9400, "is anybody home?")
        time.sleep(3)  # a disabled channel never answers, however long we wait
        assert tg.sent_to(9400) == []
    finally:
        set_channel(server, enabled=True)
    assert str(9400) in wait_replies(tg, 9400, 1)[0].text


# --- webhook mode ----------------------------------------------------------------------------

def post_update(server, update: dict, secret: str | None = SECRET):
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return server.request("POST", "/api/telegram/webhook", json=update, headers=headers)


def test_webhook_checks_secret_and_answers_each_update_once(server, users, tg):
    wrong_mode = post_update(server, tg.make_update(ALICE_TG, "too early"))
    assert wrong_mode.status_code == 404
    set_channel(server, mode="webhook")
    update = tg.make_update(ALICE_TG, "via webhook")
    assert post_update(server, update, secret=None).status_code == 401
    refused = post_update(server, update, secret="guess")
    assert (refused.status_code, refused.json()) == (401, {"error": "Invalid webhook secret"})
    malformed = post_update(server, {"message": {}})
    assert malformed.status_code == 422 and "update_id" in malformed.json()["fields"]
    broken = post_update(server, {"update_id": update["update_id"], "message": {"text": "no chat"}})
    assert broken.status_code == 400 and broken.json()["error"].startswith("Malformed Telegram update")

    before = len(tg.sent_to(ALICE_TG))
    first = post_update(server, update)
    assert (first.status_code, first.json()) == (200, {"status": "ok"})
    replies = wait_replies(tg, ALICE_TG, before + 1)
    assert replies[before].text == "echo: via webhook"
    again = post_update(server, update)  # Telegram redelivers: answered, not handled again
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert post_update(server, tg.make_update(ALICE_TG, "marker")).status_code == 200
    wait_replies(tg, ALICE_TG, before + 2)  # the chat's queue is in order: a stray duplicate came first
    assert [s.text for s in tg.sent_to(ALICE_TG)[before:]].count("echo: via webhook") == 1


def test_switching_back_to_polling_resumes_without_restart(server, users, tg):
    tg.webhook = {"url": "https://example.invalid/hook", "secret_token": SECRET}
    set_channel(server, mode="polling")
    assert ask(tg, ALICE_TG, "polling again").text == "echo: polling again"
    tg.wait_for(lambda: tg.webhook is None, WAIT, "the poller to remove the webhook")


# --- restart ---------------------------------------------------------------------------------

def test_restart_neither_loses_nor_repeats_messages(server, users, tg, fake):
    answered_before = {chat: len(tg.sent_to(chat)) for chat in range(9100, 9130)}
    server.stop()
    waiting = list(range(9200, 9205))
    for sender in waiting:
        tg.push_text(sender, "sent while the server was down")
    restarted = LiveServer(server.home, workers=2, env=server_env(fake, tg)).start()
    try:
        for sender in waiting:
            wait_replies(tg, sender, 1)
        assert ask(tg, ALICE_TG, "after the restart").text == "echo: after the restart"
        assert all(len(tg.sent_to(sender)) == 1 for sender in waiting)
        assert {chat: len(tg.sent_to(chat)) for chat in answered_before} == answered_before
    finally:
        restarted.stop()
