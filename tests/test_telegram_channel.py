"""Telegram channel pieces without a web server: splitting and formatting, the Bot API client
against the fake Bot API (429 retry, formatting fallback, webhook registration), notifications
to the linked chat, and the `[channels.telegram] mode` setting."""
from __future__ import annotations

import pytest

from starpod import accounts
from starpod.channels.telegram import delete_webhook, set_webhook
from starpod.channels.telegram.client import client_for
from starpod.channels.telegram.delivery import send_reply
from starpod.channels.telegram.formatting import MESSAGE_LIMIT, split_message, to_html
from starpod.channels.telegram.notifications import deliver_notification
from starpod.config import ConfigError, parse_agent_config
from starpod.notify import notification_frame, notify

from .conftest import make_config
from .fake_telegram import FakeTelegram, entity_error

CHAT = 777001


@pytest.fixture(scope="module")
def tg():
    fake = FakeTelegram().start()
    yield fake
    fake.stop()


@pytest.fixture
def tg_config(home, tg):
    return make_config(home, environ=tg.environ(TELEGRAM_WEBHOOK_SECRET="hook-secret"))


@pytest.fixture
def client(tg_config):
    return client_for(tg_config)


def long_reply(words: int = 1700) -> str:
    """About 10,000 characters of numbered words in paragraphs of varying length."""
    paragraphs, current = [], []
    for i in range(words):
        current.append(f"w{i:04d}")
        if len(current) == 7 + i % 40:
            paragraphs.append(" ".join(current))
            current = []
    paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


# --- splitting and formatting ----------------------------------------------------------------

def test_split_keeps_order_and_limit():
    text = long_reply()
    assert len(text) >= 10000
    chunks = split_message(text)
    assert len(chunks) >= 3
    assert all(0 < len(chunk) <= MESSAGE_LIMIT for chunk in chunks)
    assert " ".join(chunks).split() == text.split()
    assert all(not chunk.startswith(" ") for chunk in chunks)


def test_split_prefers_paragraphs_then_lines_then_words():
    paragraph = "a" * 3000
    assert split_message(f"{paragraph}\n\n{paragraph}") == [paragraph, paragraph]
    line = "b" * 3000
    assert split_message(f"{line}\n{line}") == [line, line]
    words = " ".join(["word"] * 2000)
    chunks = split_message(words)
    assert all(set(chunk.split()) == {"word"} for chunk in chunks)
    assert "".join(split_message("x" * 5000)) == "x" * 5000


def test_split_avoids_code_blocks_and_reopens_long_ones():
    code = "```python\n" + "\n".join(f"print({i})" for i in range(300)) + "\n```"
    text = "intro " * 300 + "\n\n" + code + "\n\nafter"
    chunks = split_message(text)
    assert chunks[1].startswith("```python") and "print(0)" in chunks[1]  # block moved whole
    huge = "```\n" + "\n".join(f"line {i}" for i in range(1500)) + "\n```"
    parts = split_message(huge)
    assert len(parts) >= 3
    assert all(part.count("```") == 2 for part in parts)  # closed at every cut, reopened after
    lines = [line for part in parts for line in part.splitlines() if line != "```"]
    assert lines == [f"line {i}" for i in range(1500)]


def test_markdown_becomes_balanced_telegram_html():
    source = ("# Title\n**bold** and *italic*, snake_case_name, `a<b`, [link](https://x.test/?a=1&b=2)\n"
              "```py\nif a < b and c > d:\n    pass\n```\n~~gone~~ & <done>")
    rendered = to_html(source)
    assert entity_error(rendered, "HTML") is None
    assert "<b>Title</b>" in rendered and "<b>bold</b>" in rendered and "<i>italic</i>" in rendered
    assert "snake_case_name" in rendered and "<code>a&lt;b</code>" in rendered
    assert '<a href="https://x.test/?a=1&amp;b=2">link</a>' in rendered
    assert '<pre><code class="language-py">if a &lt; b and c &gt; d:\n    pass</code></pre>' in rendered
    assert "<s>gone</s> &amp; &lt;done&gt;" in rendered


# --- the client against the fake Bot API -----------------------------------------------------

def test_rate_limited_send_is_retried_after_retry_after(tg, client):
    before = len(tg.calls_of("sendMessage"))
    tg.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    send_reply(client, CHAT, "after the wait")
    assert len(tg.calls_of("sendMessage")) == before + 2
    assert tg.sent_to(CHAT)[-1].text == "after the wait"


def test_rejected_formatting_is_resent_as_plain_text(tg, client):
    tg.reject_formatting = 1
    send_reply(client, CHAT, "**bold** claim")
    last = tg.sent_to(CHAT)[-1]
    assert (last.text, last.parse_mode) == ("**bold** claim", None)
    send_reply(client, CHAT, "**bold** claim")
    last = tg.sent_to(CHAT)[-1]
    assert (last.text, last.parse_mode) == ("<b>bold</b> claim", "HTML")


def test_long_reply_is_sent_in_order(tg, client):
    text = long_reply()
    ids = send_reply(client, CHAT + 1, text)
    sent = tg.sent_to(CHAT + 1)
    assert [s.message_id for s in sent] == ids and len(ids) >= 3
    assert " ".join(s.text for s in sent).split() == text.split()


def test_webhook_registration(tg, tg_config):
    assert set_webhook(tg_config, "https://starpod.example/api/telegram/webhook") is True
    assert tg.webhook == {"url": "https://starpod.example/api/telegram/webhook", "secret_token": "hook-secret"}
    assert delete_webhook(tg_config) is True
    assert tg.webhook is None


# --- notifications ---------------------------------------------------------------------------

def test_notification_reaches_the_linked_chat_only(app, tg, tg_config):
    owner = accounts.create_user(display_name="Owner")
    other = accounts.create_user(display_name="Other")
    accounts.link_telegram(owner.id, 880001, "owner")
    frame = notification_frame("daily-report", "sess-1", "All **green** today", True)
    assert deliver_notification(tg_config, owner.id, frame) == 1
    message = tg.sent_to(880001)[-1]
    assert "daily-report" in message.text and "<b>green</b>" in message.text and message.parse_mode == "HTML"
    assert deliver_notification(tg_config, other.id, frame) == 0  # not linked

    failed = notification_frame("backup", "", "disk full", False)
    assert deliver_notification(tg_config, owner.id, failed) == 1
    assert "failed" in tg.sent_to(880001)[-1].text

    accounts.set_user_active(owner.id, False)
    count = len(tg.sent_to(880001))
    assert deliver_notification(tg_config, owner.id, frame) == 0  # deactivated users get nothing
    assert len(tg.sent_to(880001)) == count


def test_a_users_job_notification_reaches_the_linked_chat_and_agent_level_ones_do_not(app, tg, tg_config):
    owner = accounts.create_user(display_name="Owner")
    accounts.link_telegram(owner.id, 880003, "owner")
    notify("standup", "sess-2", "Plan ready", True, config=tg_config, user_id=owner.id)
    assert "standup" in tg.sent_to(880003)[-1].text
    notify("__heartbeat__", "", "checked", True, config=tg_config)  # agent-level: sockets of admins only
    assert len(tg.sent_to(880003)) == 1


def test_notification_needs_a_bot(app, home):
    user = accounts.create_user()
    accounts.link_telegram(user.id, 880002, None)
    assert deliver_notification(make_config(home), user.id, notification_frame("j", "", "x", True)) == 0


# --- settings --------------------------------------------------------------------------------

def test_mode_setting_is_validated_and_live(client_app):
    app_client, headers = client_app
    assert app_client.get("/api/settings/channels", headers=headers).json["telegram"]["mode"] == "polling"
    bad = app_client.put("/api/settings/channels", headers=headers,
                         json={"telegram": {"enabled": True, "mode": "carrier-pigeon"}})
    assert bad.status_code == 400 and "telegram.mode" in bad.json["fields"]
    ok = app_client.put("/api/settings/channels", headers=headers, json={"telegram": {"enabled": True, "mode": "webhook"}})
    assert ok.status_code == 200
    assert app_client.get("/api/settings/channels", headers=headers).json["telegram"]["mode"] == "webhook"
    kept = app_client.put("/api/settings/channels", headers=headers, json={"telegram": {"enabled": False}})
    assert kept.status_code == 200
    assert app_client.get("/api/settings/channels", headers=headers).json["telegram"] == {
        "enabled": False, "gap_minutes": 360, "stream_mode": "final_only", "mode": "webhook"}


def test_mode_in_agent_toml_is_checked():
    assert parse_agent_config("[channels.telegram]\nmode = 'webhook'\n").channels.telegram.mode == "webhook"
    assert parse_agent_config("").channels.telegram.mode == "polling"
    with pytest.raises(ConfigError, match="channels.telegram.mode"):
        parse_agent_config("[channels.telegram]\nmode = 'smoke-signals'\n")


@pytest.fixture
def client_app(app, admin_headers):
    return app.test_client(), admin_headers


def test_webhook_route_refuses_when_not_in_webhook_mode(client_app):
    app_client, _ = client_app
    answer = app_client.post("/api/telegram/webhook", json={"update_id": 1})
    assert answer.status_code == 404 and answer.json == {"error": "Telegram webhook is not enabled"}


def test_openapi_documents_the_webhook(client_app):
    app_client, _ = client_app
    spec = app_client.get("/api/openapi.json").json
    operation = spec["paths"]["/api/telegram/webhook"]["post"]
    assert {"200", "400", "401", "404", "422"} <= set(operation["responses"])
    assert spec["components"]["schemas"]["WebhookUpdate"]["required"] == ["update_id"]


def test_instances_do_not_inherit_the_bot():
    from starpod.instances.processes import server_environment
    parent = {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_SECRET": "s", "PATH": "/bin"}
    assert server_environment(parent, {}) == {"PATH": "/bin"}
