"""POST /api/chat through the real app, the official SDKs and the fake provider server."""
from __future__ import annotations

import json

import pytest

from starpod.agent import providers
from starpod.models import CompactionLog, UsageStat

from .conftest import make_config
from .fake_provider import Failure, Reply, ToolCall


@pytest.fixture
def config(home, fake_provider):
    return make_config(home, environ=fake_provider.environ())


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(providers, "RETRY_POLICY", providers.RetryPolicy(max_retries=2, base_delay=0.01))


def write_agent_toml(config, text: str) -> None:
    config.agent_toml_path.write_text(text)
    config.live_agent.reload()


def chat(client, text="hello", **body):
    return client.post("/api/chat", json={"text": text, **body}, headers=body.pop("headers", None) or {})


def messages(client, session_id, headers=None):
    response = client.get(f"/api/sessions/{session_id}/messages", headers=headers or {})
    assert response.status_code == 200
    return response.get_json()


def test_plain_reply_stores_rows_and_usage(client, fake_provider, home):
    fake_provider.script(Reply("Hi! I am Aster.", chunks=3, input_tokens=1200, output_tokens=85))
    response = chat(client, "Who are you?")
    assert response.status_code == 200
    body = response.get_json()
    assert body["text"] == "Hi! I am Aster."
    assert body["usage"] == {"input_tokens": 1200, "output_tokens": 85, "cache_read_tokens": 0,
                             "cache_write_tokens": 0, "cost_usd": pytest.approx((1200 * 0.25 + 85 * 1.25) / 1e6)}
    rows = messages(client, body["session_id"])
    assert [(r["role"], r["content"]) for r in rows] == [("user", "Who are you?"), ("assistant", "Hi! I am Aster.")]
    usage = UsageStat.get(UsageStat.session == body["session_id"])
    assert (usage.input_tokens, usage.output_tokens, usage.turn, usage.model) == (1200, 85, 0, "claude-haiku-4-5")
    daily = list((home / "users" / "admin" / "memory").glob("*.md"))
    assert daily and "**User**: Who are you?" in daily[0].read_text() and "**Aster**: Hi! I am Aster." in daily[0].read_text()


def test_request_reaches_provider_with_system_prompt_and_caching(client, fake_provider, home):
    (home / "config" / "SOUL.md").write_text("# Soul\nYou are Aster the tester.")
    chat(client, "hi")
    request = fake_provider.requests[-1]
    assert request.path == "/v1/messages"
    assert "sk-fake-test-key" in (request.headers.get("x-api-key", "") + request.headers.get("authorization", ""))
    body = request.body
    assert body["model"] == "claude-haiku-4-5" and body["stream"] is True and body["max_tokens"] == 16384
    system = body["system"][0]
    assert system["cache_control"] == {"type": "ephemeral"}
    assert "You are Aster, a personal AI assistant." in system["text"]
    assert "--- SOUL.md ---\n# Soul\nYou are Aster the tester." in system["text"]
    assert "--- USER.md ---" in system["text"] and "Session ID:" in system["text"]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert {"MemorySearch", "FileRead", "Bash", "SkillActivate"} <= {t["name"] for t in body["tools"]}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_only_the_newest_user_turn_is_marked_for_caching(client, fake_provider, home):
    (home / "workspace" / "notes.txt").write_text("alpha\n")
    fake_provider.script(Reply("Looking.", tool_calls=[ToolCall("FileRead", {"path": "notes.txt"}, id="toolu_1")]),
                         Reply("It says alpha."), Reply("Still alpha."))
    for text in ("What is in notes.txt?", "And now?"):
        assert chat(client, text, channel_session_key="cached").status_code == 200
    assert len(fake_provider.requests) == 3
    for request in fake_provider.requests:
        marked = [block for message in request.body["messages"] for block in message["content"]
                  if "cache_control" in block]
        assert marked == [request.body["messages"][-1]["content"][-1]]


def test_tool_round_trip_stores_tool_rows(client, fake_provider, home):
    (home / "workspace" / "notes.txt").write_text("alpha\nbeta\n")
    fake_provider.script(Reply("Looking.", tool_calls=[ToolCall("FileRead", {"path": "notes.txt"}, id="toolu_1")]),
                         Reply("The file says alpha and beta.", input_tokens=20, output_tokens=7))
    body = chat(client, "What is in notes.txt?").get_json()
    assert body["text"] == "Looking.\nThe file says alpha and beta."
    assert body["usage"]["input_tokens"] == 30 and body["usage"]["output_tokens"] == 12
    second = fake_provider.requests[1].body["messages"]
    assert second[-2]["content"][-1] == {"type": "tool_use", "id": "toolu_1", "name": "FileRead",
                                         "input": {"path": "notes.txt"}}
    result = second[-1]["content"][0]
    assert result["tool_use_id"] == "toolu_1" and result["content"] == "alpha\nbeta\n" and not result["is_error"]
    rows = messages(client, body["session_id"])
    assert [r["role"] for r in rows] == ["user", "tool_use", "tool_result", "assistant"]
    assert json.loads(rows[1]["content"]) == {"type": "tool_use", "id": "toolu_1", "name": "FileRead",
                                              "input": {"path": "notes.txt"}}
    assert json.loads(rows[2]["content"]) == {"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": "alpha\nbeta\n", "is_error": False}
    assert UsageStat.get(UsageStat.session == body["session_id"]).turn == 1


def test_parallel_tools_each_result_references_its_call(client, fake_provider):
    calls = [ToolCall("EnvGet", {"key": "STARPOD_NOPE"}, id="toolu_a"),
             ToolCall("EnvGet", {"key": "MY_API_KEY"}, id="toolu_b"),
             ToolCall("FileList", {}, id="toolu_c")]
    fake_provider.script(Reply(tool_calls=calls), Reply("done"))
    body = chat(client, "go").get_json()
    results = {r["tool_use_id"]: r for r in fake_provider.requests[1].body["messages"][-1]["content"]}
    assert list(results) == ["toolu_a", "toolu_b", "toolu_c"]
    assert results["toolu_a"]["content"] == "Environment variable 'STARPOD_NOPE' is not set."
    assert not results["toolu_a"]["is_error"]
    assert results["toolu_b"]["is_error"] and "restricted" in results["toolu_b"]["content"]
    assert results["toolu_c"]["content"] == "[]"
    rows = [json.loads(r["content"]) for r in messages(client, body["session_id"]) if r["role"] == "tool_result"]
    assert sorted(r["tool_use_id"] for r in rows) == ["toolu_a", "toolu_b", "toolu_c"]


def test_max_turns_stops_the_loop(client, fake_provider, config):
    write_agent_toml(config, "max_turns = 2\n")
    fake_provider.default = lambda req: Reply("again", tool_calls=[ToolCall("SkillList", {})])
    response = chat(client, "loop forever")
    assert response.status_code == 200
    assert len(fake_provider.requests) == 2
    assert UsageStat.get(UsageStat.session == response.get_json()["session_id"]).turn == 2


def test_provider_500_after_retries_is_502(client, fake_provider):
    fake_provider.script(Failure(500, "kaboom"), Failure(500, "kaboom"), Failure(500, "kaboom"))
    response = chat(client, "hello")
    assert response.status_code == 502
    assert response.get_json()["error"].startswith("Chat error: API error: 500")
    assert len(fake_provider.requests) == 3  # first try + 2 retries


def test_retry_after_429_then_success(client, fake_provider):
    fake_provider.script(Failure(429, "slow down", "rate_limit_error", retry_after=0), Reply("fine"))
    response = chat(client, "hello")
    assert response.status_code == 200 and response.get_json()["text"] == "fine"


def test_bad_key_is_not_retried(client, fake_provider):
    fake_provider.script(Failure(401, "invalid x-api-key", "authentication_error"))
    response = chat(client, "hello")
    assert response.status_code == 502 and "invalid x-api-key" in response.get_json()["error"]
    assert len(fake_provider.requests) == 1


def test_provider_timeout_is_502(client, fake_provider, config):
    write_agent_toml(config, "[providers]\nrequest_timeout_secs = 1\n")
    fake_provider.script(Reply("too late", delay=4))
    response = chat(client, "hello")
    assert response.status_code == 502
    assert response.get_json()["error"] == "Chat error: API error: request timed out"


@pytest.mark.parametrize("provider_toml", ["", 'provider = "openai"\nmodel = "gpt-4o"\n'])
def test_trickling_provider_is_cut_at_the_call_deadline(client, fake_provider, config, provider_toml):
    """Every chunk comes well within a read timeout, but the whole answer would take 12 s."""
    write_agent_toml(config, provider_toml + "[providers]\nrequest_timeout_secs = 2\n")
    fake_provider.script(Reply("x" * 24, chunks=24, chunk_delay=0.5))
    response = chat(client, "hello")
    assert response.status_code == 502
    assert response.get_json()["error"] == "Chat error: API error: request timed out"
    assert len(fake_provider.requests) == 1  # a timed-out call is not retried


@pytest.mark.parametrize("provider_toml", ["", 'provider = "openai"\nmodel = "gpt-4o"\n'])
def test_provider_stalling_mid_stream_is_cut_at_the_call_deadline(client, fake_provider, config, provider_toml):
    write_agent_toml(config, provider_toml + "[providers]\nrequest_timeout_secs = 2\n")
    fake_provider.script(Reply("ab", chunks=2, chunk_delay=20))
    response = chat(client, "hello")
    assert response.status_code == 502
    assert response.get_json()["error"] == "Chat error: API error: request timed out"
    assert len(fake_provider.requests) == 1  # a timed-out call is not retried


def test_request_timeout_setting_is_validated():
    from starpod.config import ConfigError, parse_agent_config
    assert parse_agent_config("").request_timeout_secs == 120
    parsed = parse_agent_config('[providers]\nrequest_timeout_secs = 30\n[providers.openai]\nbase_url = "http://x"\n')
    assert parsed.request_timeout_secs == 30 and parsed.provider_config("openai").base_url == "http://x"
    for bad in ("0", "-1", '"soon"'):
        with pytest.raises(ConfigError, match="providers.request_timeout_secs"):
            parse_agent_config(f"[providers]\nrequest_timeout_secs = {bad}\n")


def test_missing_provider_key_is_503_naming_env_var(home, fake_provider):
    from starpod import create_app
    app = create_app(make_config(home, environ={}))
    response = app.test_client().post("/api/chat", json={"text": "hi"})
    assert response.status_code == 503
    assert "ANTHROPIC_API_KEY" in response.get_json()["error"]
    assert app.test_client().get("/api/sessions").get_json() == []


@pytest.mark.parametrize("body,status", [({"text": ""}, 400), ({"text": "   "}, 400), ({}, 422),
                                          ({"text": 5}, 422), ({"text": "x", "channel_id": 3}, 422)])
def test_bad_bodies(client, body, status, fake_provider):
    response = client.post("/api/chat", json=body)
    assert response.status_code == status
    assert "error" in response.get_json()
    assert fake_provider.requests == []


def test_malformed_json_is_400(client):
    response = client.post("/api/chat", data="{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_auth_runs_before_body_validation(client, admin):
    assert client.post("/api/chat", json={}).status_code == 401
    assert client.post("/api/chat", json={"text": "x"}, headers={"X-API-Key": "sp_live_bad"}).status_code == 401


def test_authenticated_user_id_wins_over_body(client, make_user, admin):
    user, key = make_user()
    body = client.post("/api/chat", json={"text": "hi", "user_id": "someone-else"},
                       headers={"X-API-Key": key}).get_json()
    session = client.get(f"/api/sessions/{body['session_id']}", headers={"X-API-Key": key}).get_json()
    assert session["user_id"] == user.id


def test_openai_compatible_provider_with_tools(client, fake_provider, config):
    write_agent_toml(config, 'provider = "openai"\nmodel = "gpt-4o"\n')
    fake_provider.script(Reply(tool_calls=[ToolCall("EnvGet", {"key": "NOT_SET_X"}, id="call_1")]),
                         Reply("All set.", chunks=4, input_tokens=1000, output_tokens=100, cache_read=50))
    response = chat(client, "env?")
    assert response.status_code == 200
    body = response.get_json()
    assert body["text"] == "All set."
    assert body["usage"]["cache_read_tokens"] == 50 and body["usage"]["input_tokens"] == 1010
    assert body["usage"]["cost_usd"] == pytest.approx((1010 * 2.5 + 105 * 10) / 1e6)
    request = fake_provider.requests[1]
    assert request.path == "/v1/chat/completions" and request.headers["authorization"] == "Bearer sk-fake-test-key"
    sent = request.body["messages"]
    assert sent[0]["role"] == "system" and sent[1] == {"role": "user", "content": "env?"}
    assert sent[2]["tool_calls"][0]["id"] == "call_1"
    assert sent[3] == {"role": "tool", "tool_call_id": "call_1", "content": "Environment variable 'NOT_SET_X' is not set."}
    assert request.body["max_completion_tokens"] == 16384


def test_groq_base_url_from_agent_toml(client, fake_provider, config):
    write_agent_toml(config, f'provider = "groq"\nmodel = "llama-3.3-70b-versatile"\n'
                             f'[providers.groq]\nbase_url = "{fake_provider.url}/openai/v1/chat/completions"\n')
    fake_provider.script(Reply("from groq"))
    assert chat(client, "hi").get_json()["text"] == "from groq"
    assert fake_provider.requests[-1].path == "/openai/v1/chat/completions"
    assert fake_provider.requests[-1].body["max_tokens"] == 16384


def test_provider_model_prefix_is_split(client, fake_provider, config):
    write_agent_toml(config, 'model = "openai/gpt-4o-mini"\n')
    chat(client, "hi")
    assert fake_provider.requests[-1].path == "/v1/chat/completions"
    assert fake_provider.requests[-1].body["model"] == "gpt-4o-mini"


def test_reasoning_effort_sets_thinking_budget(client, fake_provider, config):
    write_agent_toml(config, 'reasoning_effort = "medium"\nmax_tokens = 1000\n')
    chat(client, "think")
    body = fake_provider.requests[-1].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 10240}
    assert body["max_tokens"] == 10240 + 8192


def test_continued_session_gives_model_prior_turns(client, fake_provider):
    fake_provider.script(Reply(tool_calls=[ToolCall("SkillList", {}, id="toolu_s")]), Reply("first answer"))
    first = chat(client, "first question", channel_session_key="k").get_json()
    fake_provider.script(Reply("second answer"))
    second = chat(client, "second question", channel_session_key="k").get_json()
    assert second["session_id"] == first["session_id"]
    sent = fake_provider.requests[-1].body["messages"]
    assert sent[0]["content"][0]["text"] == "first question"
    assert sent[1]["content"][0]["type"] == "tool_use" and sent[2]["content"][0]["type"] == "tool_result"
    assert sent[3]["content"][0]["text"] == "first answer"
    assert sent[4]["content"][0]["text"] == "second question"
    other = chat(client, "elsewhere", channel_session_key="other").get_json()
    assert other["session_id"] != first["session_id"]
    assert len(fake_provider.requests[-1].body["messages"]) == 1


def test_compaction_replaces_old_turns_with_summary(client, fake_provider, config, home):
    write_agent_toml(config, "[compaction]\ncontext_budget = 1000\nmin_keep_messages = 2\n")
    fake_provider.script(Reply("Earlier chat."))
    chat(client, "remember the launch code is 42", channel_session_key="c")
    fake_provider.script(Reply("Checking.", tool_calls=[ToolCall("SkillList", {}, id="toolu_x")], input_tokens=5000),
                         Reply("SUMMARY: launch code 42"),  # the summarizer call
                         Reply("Done."))
    body = chat(client, "now do work", channel_session_key="c").get_json()
    assert body["text"] == "Checking.\nDone."
    summarize, after = fake_provider.requests[2].body, fake_provider.requests[3].body
    assert "system" not in summarize and "launch code is 42" in summarize["messages"][0]["content"][0]["text"]
    first = after["messages"][0]["content"][0]["text"]
    assert first.startswith("[Previous conversation summary]\nSUMMARY: launch code 42")
    log = CompactionLog.get(CompactionLog.session == body["session_id"])
    assert (log.trigger, log.pre_tokens, log.messages_compacted) == ("auto", 5000, 3)
    daily = next((home / "users" / "admin" / "memory").glob("*.md")).read_text()
    assert "## Pre-compaction save" in daily
    fake_provider.script(Reply("later"))
    chat(client, "continue", channel_session_key="c")
    reloaded = fake_provider.requests[-1].body["messages"]
    assert reloaded[0]["content"][0]["text"].startswith("[Previous conversation summary]")
    assert len(messages(client, body["session_id"])) == 8  # display history keeps everything


def test_interrupted_tool_round_is_answered_on_reload(client, fake_provider, monkeypatch):
    from starpod.agent import loop
    def die(ctx, calls, stop):
        raise RuntimeError("worker died")

    fake_provider.script(Reply(tool_calls=[ToolCall("SkillList", {}, id="toolu_dead")]))
    with monkeypatch.context() as patch:
        patch.setattr(loop, "execute_tools", die)
        response = chat(client, "start", channel_session_key="crash")
    body = response.get_json()
    assert response.status_code == 500 and "worker died" not in body["error"] and body["request_id"]
    fake_provider.script(Reply("recovered"))
    assert chat(client, "again", channel_session_key="crash").get_json()["text"] == "recovered"
    sent = fake_provider.requests[-1].body["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use"
    assert sent[2]["content"][0]["tool_use_id"] == "toolu_dead" and sent[2]["content"][0]["is_error"]


@pytest.mark.parametrize("provider_toml", ["", 'provider = "openai"\nmodel = "gpt-4o"\n'])
def test_image_attachment_reaches_the_model_once(app, config, fake_provider, provider_toml):
    from starpod.agent.pipeline import Attachment, ChatRequest, collect, run_chat
    write_agent_toml(config, provider_toml)
    png = b"\x89PNG\r\n\x1a\nfake"
    request = ChatRequest("What is this?", "admin", True, channel_session_key="img",
                          attachments=[Attachment("cat.png", "image/png", "/w/downloads/cat.png", png)],
                          prompt_notes="\n[Uploaded image: cat.png (image/png) saved to: /w/downloads/cat.png]")
    end = collect(run_chat(request, config))
    assert end["errors"] == [] and end["text"] == "ok"
    content = fake_provider.requests[-1].body["messages"][-1]["content"]
    if fake_provider.requests[-1].api == "anthropic":
        assert content[0]["type"] == "image" and content[0]["source"]["media_type"] == "image/png"
        assert content[1]["text"].startswith("What is this?\n[Uploaded image: cat.png")
    else:
        assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    collect(run_chat(ChatRequest("and now?", "admin", True, channel_session_key="img"), config))
    again = json.dumps(fake_provider.requests[-1].body["messages"])
    assert "base64" not in again and "Uploaded image: cat.png" in again


def test_followups_are_injected_and_stored(app, config, fake_provider, client):
    from starpod.agent.pipeline import ChatRequest, run_chat
    queue = [[], ["also check the weather"], []]
    fake_provider.script(Reply(tool_calls=[ToolCall("SkillList", {})]), Reply("done both"))
    events = list(run_chat(ChatRequest("plan my day", "admin", True, followups=lambda: queue.pop(0)), config))
    assert [e["type"] for e in events] == ["stream_start", "tool_use", "tool_result", "text_delta", "stream_end"]
    assert events[-1]["text"] == "done both" and events[-1]["num_turns"] == 1
    sent = fake_provider.requests[1].body["messages"]
    assert sent[-1]["content"][-2]["type"] == "tool_result"  # merged: tool results, then the follow-up
    assert sent[-1]["content"][-1]["text"] == "also check the weather"
    rows = messages(client, events[0]["session_id"])
    assert [r["role"] for r in rows] == ["user", "tool_use", "tool_result", "user", "assistant"]
    assert rows[3]["content"] == "also check the weather"


def test_sse_events_split_like_the_event_stream_format():
    """LF, CRLF and CR line ends (a CRLF split across chunks too), comments, multi-line data,
    an event without a name, and an unterminated last event (dropped)."""
    from starpod.agent.sse import events

    chunks = [b": comment\r\nevent: a\r", b"\ndata: 1\r\n\r\ndata:2\ndata: 3\n", b"\nevent: b\rdata: {}\r\r",
              b"data: cut"]
    assert list(events(chunks)) == [("a", b"1"), (None, b"2\n3"), ("b", b"{}")]


def test_anthropic_raw_events_accumulate_like_the_sdk_helper():
    """Tool input split over deltas, thinking with its signature, usage totals from message_delta."""
    def delta(index, **fields):
        return {"type": "content_block_delta", "index": index, "delta": fields}

    turn = providers._AnthropicTurn()
    stream = [
        {"type": "message_start", "message": {
            "id": "m", "type": "message", "role": "assistant", "model": "x", "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        delta(0, type="thinking_delta", thinking="hmm "), delta(0, type="thinking_delta", thinking="ok"),
        delta(0, type="signature_delta", signature="sig"),
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        delta(1, type="text_delta", text="Hel"), delta(1, type="text_delta", text="lo"),
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "t1", "name": "Glob", "input": {}}},
        delta(2, type="input_json_delta", partial_json='{"pat'), delta(2, type="input_json_delta", partial_json='tern": "*"}'),
        {"type": "content_block_start", "index": 3,
         "content_block": {"type": "tool_use", "id": "t2", "name": "SkillList", "input": {}}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 12, "input_tokens": 9}},
    ]
    assert [text for text in map(turn.feed, stream) if text] == ["Hel", "lo"]
    result = turn.result()
    assert result.content == [{"type": "thinking", "thinking": "hmm ok", "signature": "sig"},
                              {"type": "text", "text": "Hello"},
                              {"type": "tool_use", "id": "t1", "name": "Glob", "input": {"pattern": "*"}},
                              {"type": "tool_use", "id": "t2", "name": "SkillList", "input": {}}]
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cache_read, result.usage.cache_write,
            result.stop_reason) == (9, 12, 3, 0, "tool_use")
