"""The config-file machinery under the settings API: locked atomic TOML edits and the live config."""
from __future__ import annotations

import logging
import multiprocessing
import os
import tomllib

import pytest
import tomlkit

from starpod import settings
from starpod.config import Config, LiveAgentConfig
from starpod.configfile import ConfigFileError, atomic_write, edit_agent_toml, edit_toml, file_lock, lock_path_for
from starpod.db import database, open_database
from starpod.home import AGENT_TOML

from . import pgtest


@pytest.fixture(autouse=True)
def run_engine(tmp_path):
    """File locks follow the shared database's engine (an advisory lock on PostgreSQL): bind it to
    this run's engine, not to whatever an earlier module left it on."""
    open_database(tmp_path / "starpod.db", pgtest.database_url_for(tmp_path))
    yield
    database.close_all()


@pytest.fixture
def toml_path(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(AGENT_TOML)
    return path


def test_atomic_write_replaces_file_and_keeps_owner_mode_only(tmp_path):
    path = tmp_path / "f.md"
    path.write_text("old")
    os.chmod(path, 0o740)
    old_inode = os.stat(path).st_ino
    atomic_write(path, "new \u00e9")
    assert path.read_bytes() == "new \u00e9".encode()
    assert os.stat(path).st_mode & 0o777 == 0o700  # group/other bits dropped: the data dir is private
    assert os.stat(path).st_ino != old_inode  # renamed over, never rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["f.md"]  # no temp file left behind


def test_atomic_write_failure_leaves_target_and_no_temp(tmp_path):
    target = tmp_path / "dir-not-file"
    target.mkdir()
    with pytest.raises(ConfigFileError, match="Failed to write"):
        atomic_write(target, "x")
    assert target.is_dir()
    assert list(tmp_path.iterdir()) == [target]


def test_edit_toml_preserves_comments_order_and_unknown_keys(toml_path):
    toml_path.write_text(AGENT_TOML + '\n[custom]\nanswer = 42 # keep me\n')
    edit_toml(toml_path, toml_path.parent, lambda doc: doc.__setitem__("model", "gpt-4o"))
    text = toml_path.read_text()
    assert 'model = "gpt-4o"' in text
    assert "# provider: anthropic, openai, gemini, groq, deepseek, openrouter or ollama\n" in text
    assert "answer = 42 # keep me\n" in text
    assert text.replace('model = "gpt-4o"', 'model = "claude-haiku-4-5"') == AGENT_TOML + '\n[custom]\nanswer = 42 # keep me\n'


def test_rejected_edit_leaves_file_untouched(tmp_path):
    config = Config(home=tmp_path, environ={})
    config.config_dir.mkdir()
    config.agent_toml_path.write_text(AGENT_TOML)
    before = os.stat(config.agent_toml_path)
    with pytest.raises(ConfigFileError, match="Refusing to write"):
        edit_agent_toml(config, lambda doc: doc.__setitem__("max_turns", "many"))
    after = os.stat(config.agent_toml_path)
    assert config.agent_toml_path.read_text() == AGENT_TOML
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_unparseable_file_is_not_overwritten(toml_path):
    toml_path.write_text("model = \n")
    with pytest.raises(ConfigFileError, match="Failed to parse"):
        edit_toml(toml_path, toml_path.parent, lambda doc: doc.__setitem__("model", "x"))
    assert toml_path.read_text() == "model = \n"


def _increment(path_str: str, times: int) -> None:
    from pathlib import Path

    def bump(doc):
        doc["counter"] = doc.get("counter", 0) + 1
    for _ in range(times):
        edit_toml(Path(path_str), Path(path_str).parent, bump)


def test_lock_prevents_lost_updates_across_processes(tmp_path):
    path = tmp_path / "counter.toml"
    path.write_text("# a comment\ncounter = 0\n")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_increment, args=(str(path), 40)) for _ in range(3)]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(60)
        assert proc.exitcode == 0
    assert tomllib.loads(path.read_text())["counter"] == 120
    assert path.read_text().startswith("# a comment\n")


def test_file_lock_times_out_while_held(tmp_path):
    path = tmp_path / "x.toml"
    with file_lock(path, tmp_path):
        with pytest.raises(ConfigFileError, match="Timed out"):
            with file_lock(path, tmp_path, timeout=0.05):
                pass
    assert lock_path_for(path).name == ".x.toml.lock"
    with file_lock(path, tmp_path, timeout=0.05):  # released on exit
        pass


def test_live_config_sees_other_writers(toml_path):
    worker_a, worker_b = LiveAgentConfig(toml_path), LiveAgentConfig(toml_path)
    assert worker_a.get().model == worker_b.get().model == "claude-haiku-4-5"
    doc = tomlkit.parse(toml_path.read_text())
    doc["model"] = "gpt-4o"
    atomic_write(toml_path, doc.as_string())
    assert worker_b.get().model == "gpt-4o"
    assert worker_a.get().model == "gpt-4o"


def test_live_config_sees_same_size_rewrite_within_one_clock_tick(toml_path):
    live = LiveAgentConfig(toml_path)
    assert live.get().max_turns == 30
    st = os.stat(toml_path)
    # Same size, same inode, mtime forced back: the stat signature cannot tell the files apart.
    toml_path.write_text(AGENT_TOML.replace("max_turns = 30", "max_turns = 31"))
    os.utime(toml_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert live.get().max_turns == 31


def test_a_pinned_reading_holds_until_unpinned_unless_this_process_reloads(toml_path):
    live = LiveAgentConfig(toml_path)
    token = live.pin()
    try:
        atomic_write(toml_path, AGENT_TOML.replace("max_turns = 30", "max_turns = 31"))  # another worker
        assert live.get().max_turns == 30
        assert LiveAgentConfig(toml_path).get().max_turns == 31
        atomic_write(toml_path, AGENT_TOML.replace("max_turns = 30", "max_turns = 32"))
        assert live.reload().max_turns == 32
        assert live.get().max_turns == 32
    finally:
        live.unpin(token)
    atomic_write(toml_path, AGENT_TOML.replace("max_turns = 30", "max_turns = 33"))
    assert live.get().max_turns == 33


def test_live_config_keeps_last_good_config_when_file_breaks(toml_path, caplog):
    live = LiveAgentConfig(toml_path)
    toml_path.write_text('model = "first"\n')
    assert live.get().model == "first"
    caplog.set_level(logging.WARNING, logger="starpod.config")
    toml_path.write_text('model = "second"\nmax_turns = [\n')
    assert live.get().model == "first"
    assert live.get().model == "first"
    warnings = [r.getMessage() for r in caplog.records if "keeping the previous config" in r.getMessage()]
    assert len(warnings) == 1 and "invalid TOML" in warnings[0]
    toml_path.write_text('model = "third"\n')
    assert live.get().model == "third"


def test_live_config_keeps_last_good_config_on_wrong_type(toml_path, caplog):
    live = LiveAgentConfig(toml_path)
    assert live.get().max_turns == 30
    caplog.set_level(logging.WARNING, logger="starpod.config")
    toml_path.write_text('max_turns = "thirty"\n')
    assert live.get().max_turns == 30
    assert any("max_turns: expected an integer" in r.getMessage() for r in caplog.records)


# --- upstream unit behaviours (settings.md §12) ---

def test_set_or_remove_inserts_value():
    table = tomlkit.table()
    settings.set_or_remove(table, "timezone", "UTC")
    assert table["timezone"] == "UTC"


@pytest.mark.parametrize("value", [None, ""])
def test_set_or_remove_removes_on_none_or_empty(value):
    table = tomlkit.table()
    table["timezone"] = "UTC"
    settings.set_or_remove(table, "timezone", value)
    assert "timezone" not in table


def test_set_or_remove_overwrites_existing():
    table = tomlkit.table()
    table["timezone"] = "UTC"
    settings.set_or_remove(table, "timezone", "US/Pacific")
    assert table["timezone"] == "US/Pacific"


def test_allowed_files_contains_expected():
    for name in ("SOUL.md", "HEARTBEAT.md", "BOOT.md", "BOOTSTRAP.md"):
        assert name in settings.EDITABLE_FILES
    for name in ("USER.md", "agent.toml", "../etc/passwd"):
        assert name not in settings.EDITABLE_FILES


def test_well_known_models_all_providers_present():
    assert set(settings.MODELS) == {"anthropic", "openai", "gemini", "groq", "deepseek", "openrouter", "ollama"}
    assert "claude-sonnet-4-6" in settings.MODELS["anthropic"]
    assert settings.MODELS["ollama"] == []
