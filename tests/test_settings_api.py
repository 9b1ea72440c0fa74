"""Settings API in-process: every group's shapes, persistence, validation paths and access rules."""
from __future__ import annotations

import os
import tomllib

import pytest

from starpod.home import AGENT_TOML
from starpod.memory import get_store

MINIMAL_TOML = 'model = "test-model"\nagent_name = "TestBot"\n'

GENERAL = {"provider": "openai", "model": "gpt-4o", "max_turns": 50, "max_tokens": 8192, "agent_name": "Nova",
           "timezone": "US/Pacific", "server_addr": "0.0.0.0:8080", "followup_mode": "queue"}
MEMORY = {"half_life_days": 14, "mmr_lambda": 0.5, "vector_search": False, "chunk_size": 800,
          "chunk_overlap": 160, "export_sessions": False}
CRON = {"default_max_retries": 5, "default_timeout_secs": 3600, "max_concurrent_runs": 4}
CHANNELS = {"telegram": {"enabled": True, "gap_minutes": 120, "stream_mode": "all_messages", "mode": "webhook"}}


@pytest.fixture
def toml_path(app, config):
    """agent.toml of the upstream tests: only a model and an agent name."""
    config.agent_toml_path.write_text(MINIMAL_TOML)
    return config.agent_toml_path


def read_toml(path) -> dict:
    return tomllib.loads(path.read_text())


def put(client, path, body, **kwargs):
    return client.put(f"/api/settings/{path}", json=body, **kwargs)


# --- general ---------------------------------------------------------------------------------

def test_get_general_returns_config(client, toml_path):
    r = client.get("/api/settings/general")
    assert r.status_code == 200
    assert r.get_json() == {"provider": "anthropic", "model": "test-model", "max_turns": 30, "max_tokens": 16384,
                            "agent_name": "TestBot", "timezone": None, "reasoning_effort": None,
                            "compaction_model": None, "compaction_provider": None, "followup_mode": "inject",
                            "server_addr": "127.0.0.1:3000"}


def test_put_general_updates_agent_toml_and_live_config(client, config, toml_path):
    r = put(client, "general", GENERAL)
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}
    data = read_toml(toml_path)
    assert data["model"] == "gpt-4o" and data["max_turns"] == 50 and isinstance(data["max_turns"], int)
    assert (data["provider"], data["timezone"], data["followup_mode"]) == ("openai", "US/Pacific", "queue")
    got = client.get("/api/settings/general").get_json()
    assert {k: got[k] for k in GENERAL} == GENERAL
    assert got["reasoning_effort"] is None and got["compaction_model"] is None
    # The next chat reads config.agent: it already carries the new model, provider and max_turns.
    assert config.agent.model_ref() == ("openai", "gpt-4o") and config.agent.max_turns == 50


def test_general_accepts_only_required_keys_with_defaults(client, toml_path):
    put(client, "general", {**GENERAL, "reasoning_effort": "high", "compaction_model": "m"})
    required = {k: GENERAL[k] for k in ("provider", "model", "max_turns", "max_tokens", "agent_name", "server_addr")}
    assert put(client, "general", required).status_code == 200
    got = client.get("/api/settings/general").get_json()
    assert (got["timezone"], got["reasoning_effort"], got["compaction_model"], got["followup_mode"]) == \
        (None, None, None, "inject")
    data = read_toml(toml_path)
    assert data["followup_mode"] == "inject"
    assert not {"timezone", "reasoning_effort", "compaction_model"} & set(data)


@pytest.mark.parametrize("value", [None, ""])
def test_put_general_optional_fields_cleared(client, toml_path, value):
    put(client, "general", {**GENERAL, "timezone": "UTC", "compaction_provider": "openai"})
    assert "timezone" in toml_path.read_text()
    put(client, "general", {**GENERAL, "timezone": value, "compaction_provider": value})
    assert "timezone" not in toml_path.read_text()
    assert "compaction_provider" not in toml_path.read_text()


@pytest.mark.parametrize("change,message", [
    ({"model": ""}, "model cannot be empty"),
    ({"model": "   "}, "model cannot be empty"),
    ({"model": "", "provider": ""}, "model cannot be empty"),
    ({"provider": ""}, "provider cannot be empty"),
    ({"max_turns": 0}, "max_turns must be > 0"),
    ({"max_tokens": 0}, "max_tokens must be > 0"),
])
def test_put_general_semantic_errors_are_400_and_leave_file(client, toml_path, change, message):
    r = put(client, "general", {**GENERAL, **change})
    assert r.status_code == 400
    assert r.get_json()["error"] == message
    assert toml_path.read_text() == MINIMAL_TOML


def test_put_general_accepts_free_text(client, toml_path):
    assert put(client, "general", {**GENERAL, "server_addr": "x", "agent_name": ""}).status_code == 200
    assert read_toml(toml_path)["server_addr"] == "x"


@pytest.mark.parametrize("change,field", [
    ({"provider": "nonsense"}, "provider"),
    ({"compaction_provider": "nonsense"}, "compaction_provider"),
    ({"timezone": "Mars/Phobos"}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"),
])
def test_put_general_unknown_provider_or_timezone_is_400_naming_the_field(client, toml_path, change, field):
    r = put(client, "general", {**GENERAL, **change})
    assert r.status_code == 400 and list(r.get_json()["fields"]) == [field]
    assert field in r.get_json()["error"]
    assert toml_path.read_text() == MINIMAL_TOML


def test_put_general_unknown_model_of_a_known_provider_is_saved_with_a_warning(client, toml_path):
    r = put(client, "general", {**GENERAL, "model": "gpt-9-preview", "compaction_model": "gpt-4o-mini"})
    assert r.status_code == 200
    assert r.get_json()["warnings"] == ["model: 'gpt-9-preview' is not a known openai model; saved anyway"]
    assert read_toml(toml_path)["model"] == "gpt-9-preview"
    assert "warnings" not in put(client, "general", {**GENERAL, "provider": "ollama", "model": "llama3"}).get_json()


@pytest.mark.parametrize("change,field", [
    ({"max_turns": None}, "max_turns"),
    ({"max_turns": 10.5}, "max_turns"),
    ({"max_turns": "10"}, "max_turns"),
    ({"max_turns": -1}, "max_turns"),
    ({"max_tokens": 2**32}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"provider": 5}, "provider"),
    ({"model": None}, "model"),
    ({"reasoning_effort": ""}, "reasoning_effort"),
    ({"reasoning_effort": "HIGH"}, "reasoning_effort"),
    ({"followup_mode": "later"}, "followup_mode"),
    ({"agent_name": "\ud800"}, "agent_name"),
])
def test_put_general_type_errors_are_422(client, toml_path, change, field):
    r = put(client, "general", {**GENERAL, **change})
    assert r.status_code == 422
    body = r.get_json()
    assert field in body["fields"] and field in body["error"]
    assert toml_path.read_text() == MINIMAL_TOML


@pytest.mark.parametrize("missing", ["provider", "model", "max_turns", "max_tokens", "agent_name", "server_addr"])
def test_put_general_missing_required_field_is_422(client, toml_path, missing):
    body = {k: v for k, v in GENERAL.items() if k != missing}
    r = put(client, "general", body)
    assert r.status_code == 422 and missing in r.get_json()["fields"]


def test_body_shape_errors(client, toml_path):
    url = "/api/settings/general"
    malformed = client.put(url, data='{"model": ', content_type="application/json")
    assert malformed.status_code == 400 and "error" in malformed.get_json()
    for kwargs in ({"data": "{}", "content_type": "text/plain"}, {"data": "{}"}):
        r = client.put(url, **kwargs)
        assert r.status_code == 415 and r.get_json() == {"error": "Content-Type must be application/json"}
    not_object = client.put(url, json=["x"])
    assert not_object.status_code == 422
    assert toml_path.read_text() == MINIMAL_TOML


def test_unknown_fields_are_ignored(client, toml_path):
    assert put(client, "general", {**GENERAL, "surprise": 1}).status_code == 200
    assert "surprise" not in toml_path.read_text()


def test_put_general_preserves_other_sections(client, toml_path):
    toml_path.write_text(MINIMAL_TOML + '\n[memory]\nhalf_life_days = 7.0\n\n[providers.openai]\nmodels = ["a"]\n')
    assert put(client, "general", GENERAL).status_code == 200
    data = read_toml(toml_path)
    assert data["model"] == "gpt-4o"
    assert data["memory"]["half_life_days"] == 7.0
    assert data["providers"]["openai"]["models"] == ["a"]


def test_untouched_commented_lines_survive_byte_for_byte(client, config):
    assert config.agent_toml_path.read_text() == AGENT_TOML  # the seeded, commented file
    assert put(client, "general", GENERAL).status_code == 200
    assert put(client, "memory", MEMORY).status_code == 200
    text = config.agent_toml_path.read_text()
    edited = set(GENERAL) | set(MEMORY) | {"provider"}
    for line in AGENT_TOML.splitlines():
        key = line.split("=")[0].strip()
        if key not in edited:
            assert line in text.splitlines(), line
    assert "# timezone = \"Europe/Berlin\"  # IANA name; unset = UTC\n" in text
    assert 'max_turns = 50\n' in text  # edited in place, not re-sorted
    assert text.index("max_turns = 50") < text.index("[memory]")
    assert "vector_search = false   # accepted for compatibility; search is full-text only in this version\n" in text


# --- models ----------------------------------------------------------------------------------

def test_get_models_returns_all_providers(client):
    r = client.get("/api/settings/models")
    assert r.status_code == 200
    models = r.get_json()["models"]
    assert list(models) == ["anthropic", "openai", "gemini", "groq", "deepseek", "openrouter", "ollama"]
    assert len(models["anthropic"]) >= 3 and "claude-sonnet-4-6" in models["anthropic"]
    assert models["ollama"] == []


# --- memory ----------------------------------------------------------------------------------

def test_get_memory_returns_defaults(client, toml_path):
    got = client.get("/api/settings/memory").get_json()
    assert got["half_life_days"] == 30.0 and got["mmr_lambda"] == 0.7
    assert (got["chunk_size"], got["chunk_overlap"], got["export_sessions"]) == (1600, 320, True)
    assert isinstance(got["vector_search"], bool)


def test_put_memory_updates_toml_and_keeps_other_keys(client, toml_path):
    toml_path.write_text(MINIMAL_TOML + "[memory]\nbootstrap_file_cap = 5000\n")
    assert put(client, "memory", MEMORY).get_json() == {"status": "ok"}
    memory = read_toml(toml_path)["memory"]
    assert memory["half_life_days"] == 14.0 and isinstance(memory["half_life_days"], float)
    assert memory["vector_search"] is False and memory["bootstrap_file_cap"] == 5000
    assert "half_life_days = 14.0" in toml_path.read_text()
    assert client.get("/api/settings/memory").get_json() == {**MEMORY, "half_life_days": 14.0}


@pytest.mark.parametrize("change,field", [
    ({"half_life_days": "14"}, "half_life_days"),
    ({"half_life_days": None}, "half_life_days"),
    ({"mmr_lambda": True}, "mmr_lambda"),
    ({"vector_search": "false"}, "vector_search"),
    ({"vector_search": 0}, "vector_search"),
    ({"chunk_size": 1.5}, "chunk_size"),
    ({"chunk_overlap": -1}, "chunk_overlap"),
])
def test_put_memory_type_errors_are_422(client, toml_path, change, field):
    r = put(client, "memory", {**MEMORY, **change})
    assert r.status_code == 422 and field in r.get_json()["fields"]
    assert toml_path.read_text() == MINIMAL_TOML


def test_put_memory_missing_field_is_422(client, toml_path):
    r = put(client, "memory", {k: v for k, v in MEMORY.items() if k != "export_sessions"})
    assert r.status_code == 422 and "export_sessions" in r.get_json()["fields"]


@pytest.mark.parametrize("change,field", [
    ({"half_life_days": 0}, "half_life_days"),
    ({"half_life_days": -3.5}, "half_life_days"),
    ({"mmr_lambda": 1.01}, "mmr_lambda"),
    ({"mmr_lambda": -0.1}, "mmr_lambda"),
    ({"chunk_size": 0, "chunk_overlap": 0}, "chunk_size"),
    ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"),
])
def test_put_memory_range_errors_are_400(client, toml_path, change, field):
    r = put(client, "memory", {**MEMORY, **change})
    assert r.status_code == 400
    assert list(r.get_json()["fields"]) == [field] and field in r.get_json()["error"]
    assert toml_path.read_text() == MINIMAL_TOML


def test_memory_range_bounds_are_inclusive(client, toml_path):
    assert put(client, "memory", {**MEMORY, "mmr_lambda": 0, "chunk_size": 1, "chunk_overlap": 0}).status_code == 200
    assert put(client, "memory", {**MEMORY, "mmr_lambda": 1}).status_code == 200


def test_section_of_wrong_type_is_reported_and_file_untouched(client, toml_path):
    broken = MINIMAL_TOML + 'memory = "flat"\ncron = 1\nchannels = "x"\n'
    toml_path.write_text(broken)
    for path, body, message in (("memory", MEMORY, "[memory] is not a table"),
                                ("cron", CRON, "[cron] is not a table"),
                                ("channels", CHANNELS, "channels is not a table")):
        r = put(client, path, body)
        assert r.status_code == 500 and r.get_json()["error"] == message and r.get_json()["request_id"]
    assert toml_path.read_text() == broken


# --- cron ------------------------------------------------------------------------------------

def test_get_cron_returns_defaults(client, toml_path):
    assert client.get("/api/settings/cron").get_json() == \
        {"default_max_retries": 3, "default_timeout_secs": 7200, "max_concurrent_runs": 1}


def test_put_cron_updates_toml(client, config, toml_path):
    assert put(client, "cron", CRON).get_json() == {"status": "ok"}
    assert read_toml(toml_path)["cron"] == CRON
    assert client.get("/api/settings/cron").get_json() == CRON
    assert config.agent.cron.max_concurrent_runs == 4


@pytest.mark.parametrize("change,status,field", [
    ({"default_max_retries": -1}, 422, "default_max_retries"),
    ({"default_max_retries": None}, 422, "default_max_retries"),
    ({"default_timeout_secs": 1.5}, 422, "default_timeout_secs"),
    ({"max_concurrent_runs": "2"}, 422, "max_concurrent_runs"),
    ({"max_concurrent_runs": 0}, 400, "max_concurrent_runs"),
    ({"default_timeout_secs": 0}, 400, "default_timeout_secs"),
])
def test_put_cron_errors(client, toml_path, change, status, field):
    r = put(client, "cron", {**CRON, **change})
    assert r.status_code == status and field in r.get_json()["fields"]
    assert toml_path.read_text() == MINIMAL_TOML


def test_cron_zero_retries_allowed(client, toml_path):
    assert put(client, "cron", {**CRON, "default_max_retries": 0}).status_code == 200


# --- channels --------------------------------------------------------------------------------

def test_get_channels_returns_defaults(client, toml_path):
    assert client.get("/api/settings/channels").get_json() == \
        {"telegram": {"enabled": True, "gap_minutes": 360, "stream_mode": "final_only", "mode": "polling"}}


def test_put_channels_updates_toml(client, toml_path):
    assert put(client, "channels", CHANNELS).get_json() == {"status": "ok"}
    telegram = read_toml(toml_path)["channels"]["telegram"]
    assert telegram == {"enabled": True, "gap_minutes": 120, "stream_mode": "all_messages", "mode": "webhook"}
    assert "[channels.telegram]" in toml_path.read_text()
    assert client.get("/api/settings/channels").get_json() == CHANNELS


def test_put_channels_gap_removed_on_null_stream_mode_kept(client, toml_path):
    toml_path.write_text(MINIMAL_TOML + "[channels.telegram]\nallowed_users = [1, 2]\n")
    put(client, "channels", CHANNELS)
    assert put(client, "channels", {"telegram": {"enabled": False}}).status_code == 200
    telegram = read_toml(toml_path)["channels"]["telegram"]
    assert telegram == {"allowed_users": [1, 2], "enabled": False, "stream_mode": "all_messages", "mode": "webhook"}
    assert client.get("/api/settings/channels").get_json() == \
        {"telegram": {"enabled": False, "gap_minutes": 360, "stream_mode": "all_messages", "mode": "webhook"}}


def test_put_channels_preserves_other_sections(client, toml_path):
    before = client.get("/api/settings/general").get_json()
    put(client, "channels", CHANNELS)
    after = client.get("/api/settings/general").get_json()
    assert (after["model"], after["agent_name"]) == (before["model"], before["agent_name"]) == ("test-model", "TestBot")


@pytest.mark.parametrize("body,status,field", [
    ({}, 422, "telegram"),
    ({"telegram": {}}, 422, "telegram.enabled"),
    ({"telegram": {"enabled": "yes"}}, 422, "telegram.enabled"),
    ({"telegram": {"enabled": True, "gap_minutes": 1.5}}, 422, "telegram.gap_minutes"),
    ({"telegram": {"enabled": True, "stream_mode": 3}}, 422, "telegram.stream_mode"),
    ({"telegram": {"enabled": True, "stream_mode": "everything"}}, 400, "telegram.stream_mode"),
    ({"telegram": {"enabled": True, "gap_minutes": 0}}, 400, "telegram.gap_minutes"),
    ({"telegram": {"enabled": True, "mode": 1}}, 422, "telegram.mode"),
    ({"telegram": {"enabled": True, "mode": "push"}}, 400, "telegram.mode"),
    ({"telegram": {"enabled": True, "gap_minutes": -5}}, 400, "telegram.gap_minutes"),
])
def test_put_channels_errors(client, toml_path, body, status, field):
    r = put(client, "channels", body)
    assert r.status_code == status and field in r.get_json()["fields"]
    assert toml_path.read_text() == MINIMAL_TOML


# --- frontend --------------------------------------------------------------------------------

def test_frontend_round_trip_replaces_file(client, config):
    config.frontend_toml_path.write_text('# old\ngreeting = "x"\ntheme = "dark"\n')
    body = {"greeting": "Hi!", "prompts": ["What's new?", "Plan my day"], "suggested_prompts": ["ignored"]}
    assert put(client, "frontend", body).get_json() == {"status": "ok"}
    assert client.get("/api/settings/frontend").get_json() == {"greeting": "Hi!", "prompts": ["What's new?", "Plan my day"]}
    assert tomllib.loads(config.frontend_toml_path.read_text()) == {"greeting": "Hi!", "prompts": ["What's new?", "Plan my day"]}


def test_frontend_null_greeting_and_empty_strings(client, config):
    assert put(client, "frontend", {"greeting": None, "prompts": ["", "a\"b\nc"]}).status_code == 200
    assert "greeting" not in config.frontend_toml_path.read_text()
    assert client.get("/api/settings/frontend").get_json() == {"greeting": None, "prompts": ["", "a\"b\nc"]}
    assert put(client, "frontend", {"greeting": "", "prompts": []}).status_code == 200
    assert client.get("/api/settings/frontend").get_json() == {"greeting": "", "prompts": []}


@pytest.mark.parametrize("content", [None, "greeting = \n", 'greeting = 5\nprompts = []\n', 'prompts = "a"\n', "\xff"])
def test_frontend_missing_or_malformed_gives_defaults(client, config, content):
    if content is None:
        os.unlink(config.frontend_toml_path)
    else:
        config.frontend_toml_path.write_bytes(content.encode("latin-1"))
    assert client.get("/api/settings/frontend").get_json() == {"greeting": None, "prompts": []}


@pytest.mark.parametrize("body,field", [({"greeting": "x"}, "prompts"), ({"prompts": [1]}, "prompts.0"),
                                        ({"prompts": None}, "prompts"), ({"greeting": 3, "prompts": []}, "greeting")])
def test_frontend_validation(client, config, body, field):
    before = config.frontend_toml_path.read_text()
    r = put(client, "frontend", body)
    assert r.status_code == 422 and field in r.get_json()["fields"]
    assert config.frontend_toml_path.read_text() == before


# --- agent files -----------------------------------------------------------------------------

def test_get_file_soul_md(client):
    r = client.get("/api/settings/files/SOUL.md")
    assert r.status_code == 200 and "Aster" in r.get_json()["content"]


def test_put_file_soul_md_reindexes_memory(client, config):
    r = put(client, "files/SOUL.md", {"content": "# Soul\nYou are Zephyrine, fond of marmalade.\n"})
    assert r.get_json() == {"status": "ok"}
    assert "Zephyrine" in client.get("/api/settings/files/SOUL.md").get_json()["content"]
    hits = get_store(config).search("marmalade", None)
    assert any(hit.path.endswith("SOUL.md") for hit in hits)


@pytest.mark.parametrize("name", ["HEARTBEAT.md", "BOOT.md", "BOOTSTRAP.md"])
def test_other_files_round_trip_and_missing_reads_empty(client, config, name):
    os.unlink(config.config_dir / name)
    assert client.get(f"/api/settings/files/{name}").get_json() == {"content": ""}
    assert put(client, f"files/{name}", {"content": "check the inbox"}).status_code == 200
    assert (config.config_dir / name).read_text() == "check the inbox"


@pytest.mark.parametrize("name", ["secret.md", "USER.md", "MEMORY.md", "agent.toml", "soul.md", "..%2Fagent.toml",
                                  "../config/agent.toml", "SOUL.md/x"])
def test_files_reject_names_outside_the_allow_list(client, config, name):
    before = sorted(p.name for p in config.config_dir.iterdir())
    for r in (client.get(f"/api/settings/files/{name}"), put(client, f"files/{name}", {"content": "x"})):
        assert r.status_code in (400, 404)
        if r.status_code == 400:
            assert "not editable" in r.get_json()["error"]
        assert "content" not in r.get_json()
    assert sorted(p.name for p in config.config_dir.iterdir()) == before


def test_file_name_allow_list_error_text(client):
    r = client.get("/api/settings/files/secret.md")
    assert r.status_code == 400 and r.get_json() == {"error": "File 'secret.md' is not editable"}


def test_file_content_required(client):
    r = put(client, "files/SOUL.md", {"text": "x"})
    assert r.status_code == 422 and "content" in r.get_json()["fields"]


def test_file_size_limit_is_one_mib_of_utf8(client, config):
    exactly = "a" * (1024 * 1024)
    assert put(client, "files/BOOT.md", {"content": exactly}).status_code == 200
    assert (config.config_dir / "BOOT.md").stat().st_size == 1024 * 1024
    over = "\u00e9" * (512 * 1024 + 1)  # fewer characters than 1 MiB, more bytes
    r = put(client, "files/BOOT.md", {"content": over})
    assert r.status_code == 413
    assert r.get_json() == {"error": "Content size (1048578 bytes) exceeds maximum (1048576 bytes)"}
    assert (config.config_dir / "BOOT.md").read_text() == exactly


# --- hand edits ------------------------------------------------------------------------------

def test_hand_edit_is_seen_at_once(client, toml_path):
    toml_path.write_text(MINIMAL_TOML.replace("test-model", "hand-model"))
    assert client.get("/api/settings/general").get_json()["model"] == "hand-model"


def test_broken_hand_edit_keeps_last_good_config_and_blocks_puts(client, toml_path):
    assert client.get("/api/settings/general").get_json()["model"] == "test-model"
    broken = 'model = "half-typed\n'
    toml_path.write_text(broken)
    assert client.get("/api/settings/general").get_json()["model"] == "test-model"
    r = put(client, "general", GENERAL)
    assert r.status_code == 500 and r.get_json()["error"].startswith("Failed to parse")
    assert toml_path.read_text() == broken
    toml_path.write_text(MINIMAL_TOML.replace("TestBot", "Fixed"))
    assert client.get("/api/settings/general").get_json()["agent_name"] == "Fixed"


def test_put_repairs_a_wrong_typed_key_it_owns(client, toml_path):
    toml_path.write_text(MINIMAL_TOML + 'max_turns = "many"\n')
    assert client.get("/api/settings/general").get_json()["max_turns"] == 30
    assert put(client, "general", GENERAL).status_code == 200
    assert client.get("/api/settings/general").get_json()["max_turns"] == 50


def test_put_refused_when_another_key_is_invalid(client, toml_path):
    bad = MINIMAL_TOML + 'max_tokens = "lots"\n'
    toml_path.write_text(bad)
    r = put(client, "cron", CRON)
    assert r.status_code == 500 and "max_tokens" in r.get_json()["error"]
    assert toml_path.read_text() == bad


# --- access ----------------------------------------------------------------------------------

ROUTES = [("GET", "general"), ("PUT", "general"), ("GET", "models"), ("GET", "memory"), ("PUT", "memory"),
          ("GET", "cron"), ("PUT", "cron"), ("GET", "channels"), ("PUT", "channels"),
          ("PUT", "frontend"), ("GET", "files/SOUL.md"), ("PUT", "files/SOUL.md")]


def test_settings_require_api_key_when_users_exist(client, admin_headers):
    assert client.get("/api/settings/general").status_code == 401
    assert client.get("/api/settings/general", headers=admin_headers).status_code == 200


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_is_admin_only_and_checks_auth_before_body(client, make_user, admin, method, path):
    _, user_key = make_user("user")
    url = f"/api/settings/{path}"
    bad_body = {"data": "{nope", "content_type": "application/json"}
    anonymous = client.open(url, method=method, **bad_body)
    assert anonymous.status_code == 401 and anonymous.get_json()["error"].startswith("Missing API key")
    wrong = client.open(url, method=method, headers={"X-API-Key": "sp_live_" + "0" * 40}, **bad_body)
    assert wrong.status_code == 401 and wrong.get_json() == {"error": "Invalid API key"}
    user = client.open(url, method=method, headers={"X-API-Key": user_key}, **bad_body)
    assert user.status_code == 403 and user.get_json() == {"error": "Admin access required"}
    if method == "GET":
        assert client.get(url, headers={"X-API-Key": admin[1]}).status_code == 200


def test_every_user_may_read_the_frontend_settings(client, make_user, admin):
    _, user_key = make_user("user")
    assert client.get("/api/settings/frontend").status_code == 401
    answer = client.get("/api/settings/frontend", headers={"X-API-Key": user_key})
    assert answer.status_code == 200 and set(answer.get_json()) == {"greeting", "prompts"}


def test_unmatched_settings_path_is_json_404(client):
    r = client.get("/api/settings/nope")
    assert r.status_code == 404 and r.get_json() == {"error": "Not found"}
    assert client.delete("/api/settings/general").status_code == 405


def test_openapi_documents_settings_routes(client):
    spec = client.get("/api/openapi.json").get_json()
    for path in ("general", "models", "memory", "cron", "channels", "frontend"):
        assert f"/api/settings/{path}" in spec["paths"]
    put_general = spec["paths"]["/api/settings/general"]["put"]
    assert {"401", "403", "415", "422"} <= set(put_general["responses"])
    assert any(p.startswith("/api/settings/files/") for p in spec["paths"])
