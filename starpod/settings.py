"""The agent's settings as the admin API sees them: the groups of agent.toml (general, memory,
cron, channels), the web UI's frontend.toml, the editable agent files (SOUL.md, ...) and the
catalogue of well-known models.

Reads of agent.toml groups come from the live in-memory config; every update checks its values,
then edits agent.toml in place through `configfile` (other keys and comments survive) and makes the
new config current before returning.  Each update replaces its whole group.
"""
from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

import tomlkit
from tomlkit.toml_document import TOMLDocument

from .config import PROVIDERS, AgentConfig, Config, split_model_ref
from .configfile import ConfigFileError, atomic_write, edit_agent_toml, file_lock
from .errors import BadRequest, PayloadTooLarge
from .memory import get_store

MODELS = {
    "anthropic": ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"],
    "openai": ["gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "o3-mini"],
    "gemini": ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.0-flash"],
    "groq": ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
    "deepseek": ["deepseek-chat", "deepseek-reasoner"],
    "openrouter": ["anthropic/claude-haiku-4-5", "anthropic/claude-sonnet-4-6", "openai/gpt-4o",
                   "google/gemini-2.5-pro", "meta-llama/llama-3.3-70b-instruct"],
    "ollama": [],
}

EDITABLE_FILES = ("SOUL.md", "HEARTBEAT.md", "BOOT.md", "BOOTSTRAP.md")
MAX_FILE_BYTES = 1024 * 1024
STREAM_MODES = ("final_only", "all_messages")
TELEGRAM_MODES = ("polling", "webhook")


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise BadRequest(message, fields={field: [message]})


def _table(parent: Any, key: str, label: str, super_table: bool = False) -> Any:
    """The sub-table `key` of `parent`, created when missing."""
    if key not in parent:
        parent[key] = tomlkit.table(is_super_table=super_table)
    table = parent[key]
    if not isinstance(table, dict):
        raise ConfigFileError(f"{label} is not a table")
    return table


def set_or_remove(table: Any, key: str, value: Any) -> None:
    """Set `key`, or remove it when `value` is None or an empty string."""
    if value is None or value == "":
        table.pop(key, None)
    else:
        table[key] = value


# --- general ---------------------------------------------------------------------------------

def general(agent: AgentConfig) -> dict:
    return {"provider": agent.provider, "model": agent.model, "max_turns": agent.max_turns,
            "max_tokens": agent.max_tokens, "agent_name": agent.agent_name, "timezone": agent.timezone,
            "reasoning_effort": agent.reasoning_effort, "compaction_model": agent.compaction_model,
            "compaction_provider": agent.compaction_provider, "followup_mode": agent.followup_mode,
            "server_addr": agent.server_addr}


@functools.lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_provider(field: str, provider: str) -> None:
    _check(provider in PROVIDERS, field, f"{field} must be one of {', '.join(PROVIDERS)} (got '{provider}')")


def model_warning(field: str, provider: str, model: str) -> str | None:
    """A warning when `model` is not in the catalogue of its provider (unknown models are allowed:
    catalogues lag behind providers); None when it is listed or the provider has no catalogue."""
    listed_provider, listed_model = split_model_ref(provider, model)
    known = MODELS.get(listed_provider) or []
    if not known or listed_model in known or model in MODELS.get(provider, []):
        return None
    return f"{field}: '{model}' is not a known {listed_provider} model; saved anyway"


def update_general(config: Config, values: dict) -> list[str]:
    """Check and store the general group; returns warnings about values saved as given."""
    model, provider = values["model"].strip(), values["provider"].strip()
    _check(model != "", "model", "model cannot be empty")
    _check(provider != "", "provider", "provider cannot be empty")
    _check_provider("provider", provider)
    compaction_provider = values.get("compaction_provider") or None
    if compaction_provider is not None:
        _check_provider("compaction_provider", compaction_provider)
    timezone = values.get("timezone") or None
    _check(timezone is None or timezone in _timezones(), "timezone",
           f"timezone must be an IANA time zone name such as Europe/Berlin (got '{timezone}')")
    _check(values["max_turns"] > 0, "max_turns", "max_turns must be > 0")
    _check(values["max_tokens"] > 0, "max_tokens", "max_tokens must be > 0")
    warnings = [model_warning("model", provider, model)]
    if values.get("compaction_model"):
        warnings.append(model_warning("compaction_model", compaction_provider or provider, values["compaction_model"]))

    def apply(doc: TOMLDocument) -> None:
        doc["provider"] = provider
        doc["model"] = model
        for key in ("max_turns", "max_tokens", "agent_name", "server_addr"):
            doc[key] = values[key]
        for key in ("timezone", "compaction_model", "compaction_provider", "reasoning_effort"):
            set_or_remove(doc, key, values.get(key))
        doc["followup_mode"] = values.get("followup_mode") or "inject"
    edit_agent_toml(config, apply)
    return [warning for warning in warnings if warning]


# --- memory ----------------------------------------------------------------------------------

MEMORY_FLOATS = ("half_life_days", "mmr_lambda")
MEMORY_KEYS = ("half_life_days", "mmr_lambda", "vector_search", "chunk_size", "chunk_overlap", "export_sessions")


def memory(agent: AgentConfig) -> dict:
    return {key: getattr(agent.memory, key) for key in MEMORY_KEYS}


def update_memory(config: Config, values: dict) -> AgentConfig:
    _check(values["half_life_days"] > 0, "half_life_days", "half_life_days must be > 0")
    _check(0 <= values["mmr_lambda"] <= 1, "mmr_lambda", "mmr_lambda must be between 0 and 1")
    _check(values["chunk_size"] >= 1, "chunk_size", "chunk_size must be >= 1")
    _check(values["chunk_overlap"] < values["chunk_size"], "chunk_overlap", "chunk_overlap must be < chunk_size")

    def apply(doc: TOMLDocument) -> None:
        table = _table(doc, "memory", "[memory]")
        for key in MEMORY_KEYS:
            table[key] = float(values[key]) if key in MEMORY_FLOATS else values[key]
    return edit_agent_toml(config, apply)


# --- cron ------------------------------------------------------------------------------------

CRON_KEYS = ("default_max_retries", "default_timeout_secs", "max_concurrent_runs")


def cron(agent: AgentConfig) -> dict:
    return {key: getattr(agent.cron, key) for key in CRON_KEYS}


def update_cron(config: Config, values: dict) -> AgentConfig:
    _check(values["default_timeout_secs"] >= 1, "default_timeout_secs", "default_timeout_secs must be >= 1")
    _check(values["max_concurrent_runs"] >= 1, "max_concurrent_runs",
           "max_concurrent_runs must be >= 1 (0 would never run a job)")

    def apply(doc: TOMLDocument) -> None:
        table = _table(doc, "cron", "[cron]")
        for key in CRON_KEYS:
            table[key] = values[key]
    return edit_agent_toml(config, apply)


# --- channels --------------------------------------------------------------------------------

def channels(agent: AgentConfig) -> dict:
    telegram = agent.channels.telegram
    return {"telegram": {"enabled": telegram.enabled, "gap_minutes": telegram.gap_minutes,
                         "stream_mode": telegram.stream_mode, "mode": telegram.mode}}


def update_channels(config: Config, values: dict) -> AgentConfig:
    telegram = values["telegram"]
    gap, stream_mode = telegram.get("gap_minutes"), telegram.get("stream_mode")
    _check(gap is None or gap >= 1, "telegram.gap_minutes", "telegram.gap_minutes must be >= 1")
    _check(stream_mode is None or stream_mode in STREAM_MODES, "telegram.stream_mode",
           f"telegram.stream_mode must be one of {', '.join(STREAM_MODES)}")
    mode = telegram.get("mode")
    _check(mode is None or mode in TELEGRAM_MODES, "telegram.mode",
           f"telegram.mode must be one of {', '.join(TELEGRAM_MODES)}")

    def apply(doc: TOMLDocument) -> None:
        table = _table(_table(doc, "channels", "channels", super_table=True), "telegram", "channels.telegram")
        table["enabled"] = telegram["enabled"]
        set_or_remove(table, "gap_minutes", gap)
        # Unlike gap_minutes, an absent stream_mode leaves the stored one as it is.
        if stream_mode is not None:
            table["stream_mode"] = stream_mode
        if mode is not None:
            table["mode"] = mode
    return edit_agent_toml(config, apply)


# --- frontend.toml ---------------------------------------------------------------------------

def frontend(config: Config) -> dict:
    """The web UI settings, read from disk; a missing or malformed file gives the defaults."""
    empty = {"greeting": None, "prompts": []}
    try:
        data = tomllib.loads(config.frontend_toml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return empty
    greeting, prompts = data.get("greeting"), data.get("prompts", [])
    if greeting is not None and not isinstance(greeting, str):
        return empty
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        return empty
    return {"greeting": greeting, "prompts": prompts}


def update_frontend(config: Config, greeting: str | None, prompts: list[str]) -> None:
    """Replace frontend.toml entirely (no merge with what was there)."""
    document = tomlkit.document()
    if greeting is not None:
        document["greeting"] = greeting
    document["prompts"] = prompts
    path = config.frontend_toml_path
    with file_lock(path, config.home):
        atomic_write(path, document.as_string())


# --- agent files (SOUL.md, ...) --------------------------------------------------------------

def agent_file_path(config: Config, name: str) -> Path:
    """The path of an editable agent file; any other name is refused before the disk is touched."""
    if name not in EDITABLE_FILES:
        raise BadRequest(f"File '{name}' is not editable")
    return config.config_dir / name


def read_agent_file(config: Config, name: str) -> str:
    """The file's text; a missing or unreadable file reads as empty."""
    path = agent_file_path(config, name)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def write_agent_file(config: Config, name: str, content: str) -> None:
    """Atomically replace the file, then re-index it so memory search sees the new text."""
    path = agent_file_path(config, name)
    size = len(content.encode("utf-8"))
    if size > MAX_FILE_BYTES:
        raise PayloadTooLarge(f"Content size ({size} bytes) exceeds maximum ({MAX_FILE_BYTES} bytes)")
    with file_lock(path, config.home):
        atomic_write(path, content)
    get_store(config).index_file(path)
