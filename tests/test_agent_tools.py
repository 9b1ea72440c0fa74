"""The agent's tools, called through the registry like the loop does, plus pricing and providers."""
from __future__ import annotations

import json
import os

import pytest

from starpod.agent import pricing
from starpod.agent.providers import DEFAULT_BASE_URLS, make_provider
from starpod.agent.tools import ToolContext, available_tools, run_tool
from starpod.errors import NotConfigured

from .conftest import make_config


@pytest.fixture
def ctx(app, config):
    return ToolContext(config, "admin", True, "s1")


@pytest.fixture
def user_ctx(app, config):
    return ToolContext(config, "bob", False, "s2")


def write_toml(config, text):
    config.agent_toml_path.write_text(text)
    config.live_agent.reload()


def test_file_tools_roundtrip_in_workspace(ctx):
    assert run_tool(ctx, "FileWrite", {"path": "a/b.txt", "content": "hi"}).content == "Successfully wrote a/b.txt"
    assert run_tool(ctx, "FileRead", {"path": "a/b.txt"}).content == "hi"
    listing = json.loads(run_tool(ctx, "FileList", {}).content)
    assert listing == [{"name": "a/", "size": 0, "type": "directory"}]
    assert json.loads(run_tool(ctx, "FileList", {"path": "a"}).content)[0]["name"] == "b.txt"
    assert run_tool(ctx, "FileDelete", {"path": "a/b.txt"}).content == "Deleted a/b.txt"
    assert run_tool(ctx, "FileDelete", {"path": "a/b.txt"}).content == "File not found: a/b.txt"
    missing = run_tool(ctx, "FileRead", {"path": "nope.txt"})
    assert missing.is_error and missing.content == "File not found: nope.txt"


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret", "a/../../x", ".starpod/config/agent.toml", ""])
def test_file_sandbox_rejects_escapes(ctx, path):
    result = run_tool(ctx, "FileRead", {"path": path})
    assert result.is_error and result.content.startswith("Invalid path")


def test_symlink_escape_is_refused(ctx, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, ctx.workspace / "link.txt")
    assert run_tool(ctx, "FileRead", {"path": "link.txt"}).is_error
    assert run_tool(ctx, "Read", {"file_path": str(ctx.workspace / "link.txt")}).is_error


def test_read_glob_grep(ctx):
    (ctx.workspace / "src").mkdir()
    (ctx.workspace / "src" / "main.py").write_text("import os\nprint('hello')\n")
    (ctx.workspace / "README.md").write_text("Hello world\n")
    assert run_tool(ctx, "Read", {"file_path": "src/main.py", "offset": 2}).content == "     2\tprint('hello')"
    assert run_tool(ctx, "Glob", {"pattern": "**/*.py"}).content == "src/main.py"
    assert run_tool(ctx, "Grep", {"pattern": "hello", "case_insensitive": True}).content.split("\n") == ["README.md", "src/main.py"]
    assert run_tool(ctx, "Grep", {"pattern": "print", "output_mode": "content"}).content == "src/main.py:2:print('hello')"
    assert run_tool(ctx, "Grep", {"pattern": "(", "path": "."}).is_error
    assert run_tool(ctx, "Read", {"file_path": "/etc/hostname"}).is_error


def test_bash_runs_in_workspace_with_timeout_and_cap(ctx, config):
    assert run_tool(ctx, "Bash", {"command": "pwd"}).content.strip() == str(ctx.workspace.resolve())
    failed = run_tool(ctx, "Bash", {"command": "echo oops; exit 3"})
    assert failed.is_error and "oops" in failed.content and "Exit code 3" in failed.content
    slow = run_tool(ctx, "Bash", {"command": "sleep 5", "timeout": 200})
    assert slow.is_error and "timed out" in slow.content
    write_toml(config, "[tools]\nmax_output_bytes = 1000\n")
    big = run_tool(ctx, "Bash", {"command": "head -c 100000 /dev/zero | tr '\\0' 'x'"})
    assert big.content.startswith("x" * 1000) and "100000 bytes in total" in big.content
    assert len(big.content) < 1100


def test_bash_hides_secrets_from_children(ctx, monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "topsecret")
    assert "topsecret" not in run_tool(ctx, "Bash", {"command": "env"}).content


def test_dangerous_tools_admin_only_and_switchable(ctx, user_ctx, config):
    names = {t.name for t in available_tools(user_ctx)}
    assert "Bash" not in names and "FileWrite" not in names and "FileRead" in names
    refused = run_tool(user_ctx, "Bash", {"command": "id"})
    assert refused.is_error and refused.content == "Tool 'Bash' is not available."
    write_toml(config, "[tools]\nshell = false\n")
    assert "Bash" not in {t.name for t in available_tools(ctx)}
    assert "FileWrite" in {t.name for t in available_tools(ctx)}


def test_missing_required_field_and_unknown_tool(ctx):
    missing = run_tool(ctx, "MemoryWrite", {"file": "x.md"})
    assert missing.is_error and missing.content == "Missing required field 'content'"
    assert run_tool(ctx, "NoSuchTool", {}).is_error


def test_env_get(ctx, monkeypatch):
    monkeypatch.setenv("STARPOD_TEST_VALUE", "v1")
    assert run_tool(ctx, "EnvGet", {"key": "STARPOD_TEST_VALUE"}).content == "v1"
    restricted = run_tool(ctx, "EnvGet", {"key": "github_token"})
    assert restricted.is_error and restricted.content == "Access to environment variable 'github_token' is restricted."


def test_memory_tools_use_the_callers_space(ctx, user_ctx, home):
    assert run_tool(user_ctx, "MemoryWrite", {"file": "USER.md", "content": "# Bob\nLikes zebras"}).content \
        == "Successfully wrote USER.md"
    assert "zebras" in (home / "users" / "bob" / "USER.md").read_text()
    assert run_tool(user_ctx, "MemoryAppendDaily", {"text": "met a quokka"}).content == "Appended to daily log."
    hits = json.loads(run_tool(user_ctx, "MemorySearch", {"query": "zebras"}).content)
    assert hits and set(hits[0]) == {"source", "text", "lines"}
    assert json.loads(run_tool(ctx, "MemorySearch", {"query": "zebras"}).content) == []
    bad = run_tool(ctx, "MemoryWrite", {"file": "../x.md", "content": "x"})
    assert bad.is_error and bad.content.startswith("Memory write error:")


def test_only_admins_write_shared_memory(ctx, user_ctx, home):
    for name in ("SOUL.md", "knowledge/plan.md", "notes.md"):
        refused = run_tool(user_ctx, "MemoryWrite", {"file": name, "content": "# taken over"})
        assert refused.is_error and "only an admin" in refused.content
    assert "taken over" not in (home / "config" / "SOUL.md").read_text()
    assert not (home / "knowledge" / "plan.md").exists()
    assert run_tool(ctx, "MemoryWrite", {"file": "knowledge/plan.md", "content": "# Plan"}).content \
        == "Successfully wrote knowledge/plan.md"


def test_skills_lifecycle_and_prompt_listing(ctx, home):
    body = {"name": "deploy", "description": "Ship <it>", "body": "1. build\n2. ship"}
    assert run_tool(ctx, "SkillCreate", body).content == "Created skill 'deploy'."
    assert run_tool(ctx, "SkillCreate", body).is_error
    assert (home / "skills" / "deploy" / "SKILL.md").is_file()
    assert run_tool(ctx, "SkillActivate", {"name": "deploy"}).content == "1. build\n2. ship"
    listed = json.loads(run_tool(ctx, "SkillList", {}).content)
    assert listed[0]["name"] == "deploy" and listed[0]["description"] == "Ship <it>" and listed[0]["created_at"]
    from starpod.agent.prompt import skills_block
    assert "<name>deploy</name><description>Ship &lt;it&gt;</description>" in skills_block(ctx.config)
    assert run_tool(ctx, "SkillUpdate", {**body, "body": "new"}).content == "Updated skill 'deploy'."
    assert run_tool(ctx, "SkillActivate", {"name": "deploy"}).content == "new"
    assert run_tool(ctx, "SkillDelete", {"name": "deploy"}).content == "Deleted skill 'deploy'."
    assert run_tool(ctx, "SkillActivate", {"name": "deploy"}).content == "Skill 'deploy' not found."
    assert run_tool(ctx, "SkillCreate", {**body, "name": "../evil"}).is_error


def test_execution_context_in_prompt():
    from starpod.agent.prompt import execution_context
    assert "heartbeat" in execution_context("heartbeat", "main")
    assert "cron job" in execution_context("cron", "main") and "cron job" in execution_context("u1", "scheduler")
    assert execution_context("u1", "main") == ""


# --- pricing and provider selection ---------------------------------------------------------

def test_cost_rates():
    assert pricing.cost_usd("openai", "gpt-4.1", 1_000_000, 500_000) == pytest.approx(6.0)
    assert pricing.rates("anthropic", "claude-opus-4-6")[0] > 10
    assert pricing.rates("anthropic", "claude-haiku-4-5")[0] < 1
    assert pricing.rates("gemini", "gemini-2.5-flash") == (0.15, 0.6)
    assert pricing.rates("gemini", "gemini-2.5-pro") == (1.25, 10.0)
    assert pricing.rates("groq", "llama-3.3-70b-versatile") == (2.0, 8.0)


def test_provider_selection(home):
    config = make_config(home, environ={"GROQ_API_KEY": "g"})
    with pytest.raises(NotConfigured, match="ANTHROPIC_API_KEY"):
        make_provider(config)
    groq = make_provider(config, "groq", "llama")
    assert groq.base_url == DEFAULT_BASE_URLS["groq"] and groq.model == "llama"
    assert make_provider(config, "ollama", "llama3").api_key == "ollama"
    with pytest.raises(NotConfigured, match="unknown provider"):
        make_provider(config, "mystery", "m")
    override = make_config(home, environ={"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://x/v1/messages"})
    assert make_provider(override).base_url == "http://x"
