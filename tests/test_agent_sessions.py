"""Sessions: channel-aware resolution (spec §2, §8 store behaviours), privacy and the sessions API."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from starpod import sessions
from starpod.config import AgentConfig, ChannelsConfig, TelegramConfig
from starpod.db import write_transaction
from starpod.models import Session, TranscriptEntry
from starpod.timeutil import to_rfc3339, utcnow

from . import appdb
from .conftest import make_config
from .fake_provider import Reply


def resolve(channel: str, key: str, user: str = "admin", gap: int | None = None, text: str = "hi", **kw):
    with write_transaction(sessions.resolution_lock(channel, key, user)):
        return sessions.resolve_session(channel, key, user, text, gap, **kw)


def age(session_id: str, hours: float) -> None:
    stamp = to_rfc3339(utcnow() - timedelta(hours=hours))
    Session.update(last_message_at=stamp).where(Session.id == session_id).execute()


def test_create_touch_and_title(app):
    first = resolve("main", "k1", text="What files are here?")
    assert first.is_new and first.closed_session_id is None
    stored = Session.get_by_id(first.session.id)
    assert (stored.channel, stored.channel_session_key, stored.is_closed, stored.message_count) == ("main", "k1", False, 1)
    assert stored.title == "What files are here?" and stored.is_read
    again = resolve("main", "k1", text="another title")
    assert not again.is_new and again.session.id == first.session.id
    stored = Session.get_by_id(first.session.id)
    assert stored.message_count == 2 and stored.title == "What files are here?"


def test_title_is_cut_at_100_bytes_on_a_char_boundary(app):
    text = "é" * 80  # 160 bytes
    title = resolve("main", "t", text=text).session.title
    assert title == "é" * 50 + "..."
    assert sessions.make_title("short") == "short"


def test_blank_title_is_replaced_later(app):
    session = resolve("main", "b", text="   ").session
    assert Session.get_by_id(session.id).title is None
    resolve("main", "b", text="real title")
    assert Session.get_by_id(session.id).title == "real title"


def test_closed_session_is_not_continued(app):
    first = resolve("main", "k").session
    sessions.close_session(first.id, "done")
    assert Session.get_by_id(first.id).summary == "done"
    second = resolve("main", "k")
    assert second.is_new and second.session.id != first.id and second.closed_session_id is None


def test_main_channel_ignores_gap_and_omitted_key_is_new(app):
    first = resolve("main", "m").session
    age(first.id, 48)
    assert resolve("main", "m").session.id == first.id
    assert sessions.channel_and_key(None, None, "admin")[1] != sessions.channel_and_key(None, None, "admin")[1]
    assert sessions.channel_and_key("scheduler", None, "u")[0] == "main"
    assert sessions.channel_and_key("telegram", None, "u") == ("telegram", "u")


def test_telegram_gap_auto_closes_and_exports(app, home):
    exported = []
    first = resolve("telegram", "chat1", gap=360).session
    sessions.add_user_message(first, "hello from telegram")
    age(first.id, 2)
    assert resolve("telegram", "chat1", gap=360).session.id == first.id
    age(first.id, 7)
    other = resolve("telegram", "chat2", gap=360).session
    result = resolve("telegram", "chat1", gap=360, on_auto_close=exported.append)
    assert result.is_new and result.closed_session_id == first.id
    closed = Session.get_by_id(first.id)
    assert closed.is_closed and closed.summary == "Auto-closed: inactivity"
    assert [s.id for s in exported] == [first.id]
    assert [m["content"] for m in sessions.messages_json(first.id, None)] == ["hello from telegram"]
    assert resolve("telegram", "chat2", gap=360).session.id == other.id


def test_telegram_custom_gap(app):
    first = resolve("telegram", "g", gap=60).session
    age(first.id, 2)
    assert resolve("telegram", "g", gap=180).session.id == first.id
    age(first.id, 2)
    assert resolve("telegram", "g", gap=60).is_new


def test_gap_per_channel_from_config():
    assert sessions.gap_minutes("main", AgentConfig()) is None
    assert sessions.gap_minutes("telegram", AgentConfig()) == 360
    custom = AgentConfig(channels=ChannelsConfig(telegram=TelegramConfig(gap_minutes=15)))
    assert sessions.gap_minutes("telegram", custom) == 15


def test_channel_isolation_and_user_scoping(app):
    main = resolve("main", "same").session
    telegram = resolve("telegram", "same", gap=360).session
    bob = resolve("main", "same", user="bob").session
    assert len({main.id, telegram.id, bob.id}) == 3


def test_usage_and_compaction_rows(app):
    session = resolve("main", "u").session
    assert sessions.usage_summary(session.id)["total_turns"] == 0
    sessions.record_usage(session.id, 1, 1000, 500, 0, 0, 0.01, "m")
    sessions.record_usage(session.id, 1, 800, 400, 0, 0, 0.008, "m")
    summary = sessions.usage_summary(session.id)
    assert (summary["input_tokens"], summary["output_tokens"], summary["total_turns"]) == (1800, 900, 2)
    assert summary["cost_usd"] == pytest.approx(0.018)
    sessions.record_compaction(session.id, 150000, "sum", 12)


def test_transcript_reads_back_what_was_stored(app):
    """Whatever the JSON reader, entries come back as stored: big integers stay integers, and
    lone surrogates (which some clients send) and NaN survive."""
    session = resolve("main", "transcript").session
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "plain é ✓"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Calc",
                                           "input": {"n": 2 ** 70, "m": -(2 ** 63) - 1, "x": 1.5, "big": 10 ** 18}}]},
        {"role": "user", "content": [{"type": "text", "text": "lone \ud800 surrogate"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "nan",
                                      "is_error": False, "value": float("inf")}]},
    ]
    ids = [sessions.add_transcript(session.id, "message", turn) for turn in turns]
    summary, entries = sessions.load_transcript(session.id)
    assert summary is None and [entry_id for entry_id, _ in entries] == ids
    assert [message for _, message in entries] == turns
    assert isinstance(entries[1][1]["content"][0]["input"]["n"], int)


def turn(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def cold_transcript(session_id: str):
    """The transcript as a process that never read it before reads it."""
    transcript = sessions._TranscriptCache(sessions.TRANSCRIPT_CACHE_BYTES).load(session_id)
    return transcript.summary, transcript.entries


def test_transcript_cache_reads_what_other_processes_added(app):
    """Rows written by anyone (here: straight to the table, as another worker or server would)
    after a read show up in the next read, compactions included, as in a first read."""
    session_id = resolve("main", "cached").session.id
    ids = [sessions.add_transcript(session_id, "message", turn(f"m{i}")) for i in range(3)]
    assert sessions.load_transcript(session_id) == (None, tuple((i, turn(f"m{n}")) for n, i in enumerate(ids)))
    ids.append(sessions.add_transcript(session_id, "message", turn("m3")))
    sessions.add_transcript(session_id, "compaction", {"summary": "s1", "keep_from": ids[2]})
    ids.append(sessions.add_transcript(session_id, "message", turn("m4")))
    expected = ("s1", ((ids[2], turn("m2")), (ids[3], turn("m3")), (ids[4], turn("m4"))))
    assert sessions.load_transcript(session_id) == expected == cold_transcript(session_id)
    sessions.add_transcript(session_id, "compaction", {"summary": "s2", "keep_from": ids[4]})
    assert sessions.load_transcript(session_id) == ("s2", ((ids[4], turn("m4")),)) == cold_transcript(session_id)


def test_transcript_cache_rereads_a_row_committed_late(app):
    """A row with a lower id than rows already read (on PostgreSQL, a transaction that took its id
    first and committed last) is not missed: the count of rows up to the last id read changed."""
    session_id = resolve("main", "late").session.id
    ids = [sessions.add_transcript(session_id, "message", turn(f"m{i}")) for i in range(3)]
    TranscriptEntry.delete().where(TranscriptEntry.id == ids[1]).execute()
    assert [entry_id for entry_id, _ in sessions.load_transcript(session_id)[1]] == [ids[0], ids[2]]
    TranscriptEntry.insert(id=ids[1], session=session_id, kind="message", data=json.dumps(turn("m1"))).execute()
    assert sessions.load_transcript(session_id) == (None, tuple((i, turn(f"m{n}")) for n, i in enumerate(ids)))
    Session.delete().where(Session.id == session_id).execute()
    assert sessions.load_transcript(session_id) == (None, ())


def test_transcript_cache_drops_the_least_recently_read_past_its_size(app):
    cache = sessions._TranscriptCache(max_bytes=400)
    first, second = resolve("main", "one").session.id, resolve("main", "two").session.id
    for session_id in (first, second):
        sessions.add_transcript(session_id, "message", turn("x" * 100))
    cache.load(first)
    cache.load(second)
    cache.load(first)  # now the most recently read
    sessions.add_transcript(second, "message", turn("y" * 100))
    cache.load(second)
    assert list(cache.known) == [second] and cache.size == sum(cache.known[second].sizes) > 200


# --- HTTP ------------------------------------------------------------------------------------

@pytest.fixture
def config(home, fake_provider):
    return make_config(home, environ=fake_provider.environ())


def test_sessions_api_shapes_and_limits(client):
    for i in range(3):
        client.post("/api/chat", json={"text": f"chat {i}"})
    listed = client.get("/api/sessions").get_json()
    assert [s["title"] for s in listed] == ["chat 2", "chat 1", "chat 0"]
    assert set(listed[0]) == {"id", "created_at", "last_message_at", "is_closed", "summary", "title",
                              "message_count", "channel", "channel_session_key", "user_id", "is_read", "origin"}
    assert listed[0]["created_at"].endswith("Z") and listed[0]["channel_session_key"]
    assert len(client.get("/api/sessions?limit=2").get_json()) == 2
    for bad, status in (("0", 400), ("201", 400), ("abc", 422), ("-1", 400)):
        response = client.get(f"/api/sessions?limit={bad}")
        assert response.status_code == status and "error" in response.get_json()
    one = client.get(f"/api/sessions/{listed[0]['id']}").get_json()
    assert one == listed[0]
    missing = client.get("/api/sessions/nope")
    assert missing.status_code == 404 and missing.get_json() == {"error": "Session not found"}
    assert client.get("/api/sessions/nope/messages").status_code == 404


def test_messages_of_a_session_without_any(client, make_user, admin_headers):
    """The session's row and its messages come from one join: a session with none lists none, for
    its owner and for an admin, and stays a 404 for anyone else."""
    owner, owner_key = make_user(display_name="owner")
    _, other_key = make_user(display_name="other")
    empty = resolve("main", "empty", user=owner.id).session.id
    for headers in ({"X-API-Key": owner_key}, admin_headers):
        response = client.get(f"/api/sessions/{empty}/messages", headers=headers)
        assert (response.status_code, response.get_json()) == (200, [])
    assert client.get(f"/api/sessions/{empty}/messages", headers={"X-API-Key": other_key}).status_code == 404


def test_listings_follow_writes_of_other_workers(client, home):
    """Listings are cached per process until the next commit to the database: what another
    worker commits (here: a connection of its own) shows in the very next request."""
    session_id = client.post("/api/chat", json={"text": "first title"}).get_json()["session_id"]
    messages_path = f"/api/sessions/{session_id}/messages"
    listed, messages = client.get("/api/sessions").get_json(), client.get(messages_path).get_json()
    assert [s["title"] for s in listed] == ["first title"] and len(messages) == 2
    assert client.get("/api/sessions").get_json() == listed  # served again, unchanged
    appdb.query(home, "UPDATE session_metadata SET title = ? WHERE id = ?", "renamed elsewhere", session_id)
    appdb.query(home, "INSERT INTO session_messages (session_id, role, content, timestamp) VALUES (?, ?, ?, ?)",
                session_id, "user", "from another worker", "2030-01-01T00:00:00.000000Z")
    assert [s["title"] for s in client.get("/api/sessions").get_json()] == ["renamed elsewhere"]
    assert client.get(messages_path).get_json()[-1]["content"] == "from another worker"
    assert client.get(f"{messages_path}?render=1").get_json()[-1]["html"] == "<p>from another worker</p>\n"
    appdb.query(home, "DELETE FROM session_messages WHERE session_id = ?", session_id)
    assert client.get(messages_path).get_json() == []


def test_read_flag(client):
    session_id = client.post("/api/chat", json={"text": "hi"}).get_json()["session_id"]
    assert client.post(f"/api/sessions/{session_id}/read", json={"is_read": False}).get_json() == {"ok": True}
    assert client.get(f"/api/sessions/{session_id}").get_json()["is_read"] is False
    assert client.post(f"/api/sessions/{session_id}/read", json={}).status_code == 200
    assert client.get(f"/api/sessions/{session_id}").get_json()["is_read"] is True
    assert client.post("/api/sessions/nope/read", json={}).status_code == 404
    assert client.post(f"/api/sessions/{session_id}/read", json={"is_read": "maybe"}).status_code == 422


def test_privacy_between_two_users(client, make_user, admin, admin_headers):
    alice, alice_key = make_user(display_name="alice")
    bob, bob_key = make_user(display_name="bob")
    a = client.post("/api/chat", json={"text": "alice secret", "channel_session_key": "shared"},
                    headers={"X-API-Key": alice_key}).get_json()["session_id"]
    b = client.post("/api/chat", json={"text": "bob secret", "channel_session_key": "shared"},
                    headers={"X-API-Key": bob_key}).get_json()["session_id"]
    assert a != b
    assert [s["id"] for s in client.get("/api/sessions", headers={"X-API-Key": alice_key}).get_json()] == [a]
    assert [s["id"] for s in client.get("/api/sessions", headers={"X-API-Key": bob_key}).get_json()] == [b]
    for path in (f"/api/sessions/{a}", f"/api/sessions/{a}/messages"):
        assert client.get(path, headers={"X-API-Key": bob_key}).status_code == 404
    assert client.post(f"/api/sessions/{a}/read", json={}, headers={"X-API-Key": bob_key}).status_code == 404
    assert {s["id"] for s in client.get("/api/sessions", headers=admin_headers).get_json()} == {a, b}
    assert client.get(f"/api/sessions/{a}/messages", headers=admin_headers).status_code == 200


def test_sessions_require_auth_once_users_exist(client, admin):
    response = client.get("/api/sessions")
    assert response.status_code == 401 and "Missing API key" in response.get_json()["error"]
    assert client.get("/api/sessions", headers={"X-API-Key": "sp_live_wrong"}).get_json()["error"] == "Invalid API key"


def test_telegram_chat_auto_close_exports_transcript(client, fake_provider, home):
    fake_provider.script(Reply("Hello on telegram"))
    first = client.post("/api/chat", json={"text": "Plan the trip", "channel_id": "telegram",
                                           "channel_session_key": "42"}).get_json()["session_id"]
    age(first, 7)
    second = client.post("/api/chat", json={"text": "new day", "channel_id": "telegram",
                                            "channel_session_key": "42"}).get_json()["session_id"]
    assert second != first
    exported = list(home.glob("users/admin/knowledge/sessions/plan-the-trip-*.md"))
    assert len(exported) == 1
    text = exported[0].read_text()
    assert "# Session: Plan the trip" in text and "**User**: Plan the trip" in text
    assert "**Aster**: Hello on telegram" in text and "- **Channel**: telegram" in text
