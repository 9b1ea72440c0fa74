"""Configuration: the one object that holds every setting of a running Starpod.

`Config` carries what comes from the environment (data directory, port, provider keys, base URLs)
and gives the current `AgentConfig`, parsed from `<home>/config/agent.toml`.  The agent config is
live: every access compares the file's stat signature with the one last loaded and re-parses on a
change, so an edit made by another worker (or by hand) is seen by the next request everywhere.
A file that fails to parse keeps the last good config in force and logs why.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import tomllib
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

log = logging.getLogger(__name__)

VERSION = "0.1.0"

PROVIDERS = ("anthropic", "openai", "gemini", "groq", "deepseek", "openrouter", "ollama")

PROVIDER_KEY_ENV = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}

# Keys that must never be read from agent.toml: credentials come from the environment only.
IGNORED_CREDENTIAL_KEYS = {("providers", "*", "api_key"), ("channels", "telegram", "bot_token")}


class ConfigError(ValueError):
    """agent.toml is not valid TOML or a known key has the wrong type."""


@dataclass(frozen=True)
class ProviderConfig:
    enabled: bool = True
    base_url: str | None = None
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemoryConfig:
    half_life_days: float = 30.0
    mmr_lambda: float = 0.7
    vector_search: bool = False
    chunk_size: int = 1600
    chunk_overlap: int = 320
    bootstrap_file_cap: int = 20000
    export_sessions: bool = True


@dataclass(frozen=True)
class CompactionConfig:
    context_budget: int = 160000
    summary_max_tokens: int = 4096
    min_keep_messages: int = 4


@dataclass(frozen=True)
class CronConfig:
    default_max_retries: int = 3
    default_timeout_secs: int = 7200
    max_concurrent_runs: int = 1


@dataclass(frozen=True)
class AttachmentsConfig:
    enabled: bool = True
    allowed_extensions: tuple[str, ...] = ()
    max_file_size: int = 20 * 1024 * 1024


@dataclass(frozen=True)
class AuthConfig:
    rate_limit_requests: int = 0
    rate_limit_window_secs: int = 60


@dataclass(frozen=True)
class TelegramConfig:
    enabled: bool = True
    gap_minutes: int = 360
    stream_mode: str = "final_only"
    mode: str = "polling"


@dataclass(frozen=True)
class ChannelsConfig:
    telegram: TelegramConfig = TelegramConfig()


@dataclass(frozen=True)
class ToolsConfig:
    shell: bool = True
    file_write: bool = True
    shell_timeout_secs: int = 120
    max_output_bytes: int = 30000
    timeout_secs: int = 30           # wall and CPU time of one Read/Glob/Grep call


@dataclass(frozen=True)
class LimitsConfig:
    max_message_bytes: int = 256 * 1024  # UTF-8 bytes of one chat message's text


@dataclass(frozen=True)
class AgentConfig:
    agent_name: str = "Aster"
    name: str = "Aster"
    skills: tuple[str, ...] = ()
    provider: str = "anthropic"
    model: str = "claude-haiku-4-5"
    max_turns: int = 30
    max_tokens: int = 16384
    server_addr: str = "127.0.0.1:3000"
    timezone: str | None = None
    reasoning_effort: str | None = None
    compaction_model: str | None = None
    compaction_provider: str | None = None
    followup_mode: str = "inject"
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    request_timeout_secs: float = 120.0  # `[providers] request_timeout_secs`: deadline of one provider call
    memory: MemoryConfig = MemoryConfig()
    compaction: CompactionConfig = CompactionConfig()
    cron: CronConfig = CronConfig()
    attachments: AttachmentsConfig = AttachmentsConfig()
    auth: AuthConfig = AuthConfig()
    channels: ChannelsConfig = ChannelsConfig()
    tools: ToolsConfig = ToolsConfig()
    limits: LimitsConfig = LimitsConfig()

    def provider_config(self, name: str) -> ProviderConfig:
        return self.providers.get(name, ProviderConfig())

    def model_ref(self) -> tuple[str, str]:
        """(provider, model), splitting a `provider/model` model name with a known provider prefix."""
        return split_model_ref(self.provider, self.model)


def split_model_ref(provider: str, model: str) -> tuple[str, str]:
    head, sep, tail = model.partition("/")
    if sep and head in PROVIDERS and tail:
        return head, tail
    return provider, model


ENUMS = {
    ("reasoning_effort",): ("low", "medium", "high"),
    ("followup_mode",): ("inject", "queue"),
    ("channels", "telegram", "mode"): ("polling", "webhook"),
}

# Lowest allowed value of numeric keys where a smaller one would disable or break a safeguard.
MINIMUMS = {
    ("tools", "timeout_secs"): 1,
    ("providers", "request_timeout_secs"): 1,
    ("limits", "max_message_bytes"): 1,
}


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` converted to the annotated type, or raise ConfigError."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is None and annotation is type(None):
        raise ConfigError(f"{where}: unexpected value")
    if args and type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return _check_type(value, inner, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected a boolean")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected an array of strings")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported type")


def _build(cls: type, table: Any, path: tuple[str, ...]) -> Any:
    where = ".".join(path) or "agent.toml"
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] is not a table")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in table:
            continue
        raw = table[f.name]
        annotation = hints[f.name]
        key_path = path + (f.name,)
        if f.name == "request_timeout_secs" and cls is AgentConfig:
            continue  # it lives in the [providers] table
        if f.name == "providers" and cls is AgentConfig:
            values["providers"], timeout = _build_providers(raw)
            if timeout is not None:
                values["request_timeout_secs"] = timeout
        elif dataclasses.is_dataclass(annotation):
            values[f.name] = _build(annotation, raw, key_path)
        else:
            values[f.name] = _check_type(raw, annotation, ".".join(key_path))
            _check_allowed(values[f.name], key_path)
    return cls(**values)


def _check_allowed(value: Any, key_path: tuple[str, ...]) -> None:
    where = ".".join(key_path)
    allowed = ENUMS.get(key_path)
    if allowed and value not in allowed:
        raise ConfigError(f"{where}: must be one of {', '.join(allowed)}")
    minimum = MINIMUMS.get(key_path)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}")


def _build_providers(raw: Any) -> tuple[dict[str, ProviderConfig], float | None]:
    """The `[providers.<name>]` tables, and `[providers] request_timeout_secs` when set."""
    if not isinstance(raw, dict):
        raise ConfigError("[providers] is not a table")
    providers = {}
    timeout = None
    for name, table in raw.items():
        if name == "request_timeout_secs":
            timeout = _check_type(table, float, "providers.request_timeout_secs")
            _check_allowed(timeout, ("providers", "request_timeout_secs"))
            continue
        if isinstance(table, dict) and "api_key" in table:
            log.warning("agent.toml: [providers.%s] api_key is ignored; set %s instead",
                        name, PROVIDER_KEY_ENV.get(name, "the provider's env var"))
        providers[name] = _build(ProviderConfig, table, ("providers", name))
    return providers, timeout


def parse_agent_config(text: str) -> AgentConfig:
    """Parse agent.toml text into an AgentConfig; unknown keys are ignored."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}") from exc
    telegram = data.get("channels", {}).get("telegram") if isinstance(data.get("channels"), dict) else None
    if isinstance(telegram, dict) and "bot_token" in telegram:
        log.warning("agent.toml: [channels.telegram] bot_token is ignored; set TELEGRAM_BOT_TOKEN instead")
    config = _build(AgentConfig, data, ())
    if "name" not in data:
        config = dataclasses.replace(config, name=config.agent_name)
    return config


# File timestamps come from a coarse clock (some filesystems keep whole seconds) and inode numbers
# are reused, so two writes within one tick can leave an identical (mtime, size, inode) signature.
# A file whose mtime is this close to the moment it was last read is re-read and compared.
RACY_WINDOW_NS = 2_000_000_000
# Also re-read at least this often whatever stat says: on a volume shared by several servers, a
# stat may come from the client's attribute cache while opening the file fetches it anew.
REREAD_SECS = 5.0


# The agent.toml reading a unit of work (a web request) holds: (LiveAgentConfig, AgentConfig).
# A context variable, so each greenlet has its own; one spawned by a request starts without it.
_PINNED: ContextVar[tuple | None] = ContextVar("pinned_agent_config", default=None)


class LiveAgentConfig:
    """The agent.toml of one data directory, re-read whenever the file changes on disk (and at
    least every REREAD_SECS, or at once after `expire`).  Within `pin` .. `unpin` every access
    returns the reading made at `pin` (no stat per access), or the one `reload` made since."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._read_at_ns = 0
        self._text: str | None = None
        self._config = AgentConfig()

    def _stat_signature(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _stale(self, signature: tuple | None) -> bool:
        if signature != self._signature or time.time_ns() - self._read_at_ns >= REREAD_SECS * 1e9:
            return True
        return signature is not None and signature[0] + RACY_WINDOW_NS > self._read_at_ns

    def get(self) -> AgentConfig:
        pinned = _PINNED.get()
        if pinned is not None and pinned[0] is self:
            return pinned[1]
        signature = self._stat_signature()
        if self._stale(signature):
            with self._lock:
                if self._stale(signature):
                    self._load(signature)
        return self._config

    def expire(self) -> None:
        """Read the file again on the next access (another server changed it)."""
        self._read_at_ns = 0

    def reload(self) -> AgentConfig:
        """Force a re-read (after a write this process made); a pinned reading becomes this one."""
        with self._lock:
            self._load(self._stat_signature())
        pinned = _PINNED.get()
        if pinned is not None and pinned[0] is self:
            _PINNED.set((self, self._config))
        return self._config

    def pin(self) -> Token:
        """Read agent.toml now and use that reading in this context until `unpin`."""
        return _PINNED.set((self, self.get()))

    @staticmethod
    def unpin(token: Token) -> None:
        _PINNED.reset(token)

    def _load(self, signature: tuple | None) -> None:
        read_at_ns = time.time_ns()
        try:
            self._parse_current(signature)
        finally:
            # Remembered even on failure so a broken file is not re-parsed on every request.
            self._signature, self._read_at_ns = signature, read_at_ns

    def _parse_current(self, signature: tuple | None) -> None:
        if signature is None:
            self._config, self._text = AgentConfig(), None
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("keeping the previous config: %s is not readable: %s", self.path, exc)
            return
        if text == self._text:
            return
        self._text = text
        try:
            self._config = parse_agent_config(text)
            log.info("loaded %s", self.path)
        except ConfigError as exc:
            log.warning("keeping the previous config: %s is not usable: %s", self.path, exc)


def _env(name: str, environ: dict) -> str | None:
    value = environ.get(name, "")
    return value if value.strip() else None


class Config:
    """Everything a Starpod process needs to know, from the environment and the data directory."""

    def __init__(self, home: str | os.PathLike | None = None, environ: dict | None = None, **overrides):
        env = dict(os.environ if environ is None else environ)
        self.home = Path(home or env.get("STARPOD_HOME") or ".starpod").resolve()
        self.port = int(env.get("PORT") or 3000)
        self.bootstrap_api_key = _env("STARPOD_API_KEY", env)
        self.provider_keys = {p: _env(var, env) for p, var in PROVIDER_KEY_ENV.items()}
        self.env_base_urls = {"anthropic": _env("ANTHROPIC_BASE_URL", env),
                              "openai": _env("OPENAI_BASE_URL", env)}
        self.telegram_bot_token = _env("TELEGRAM_BOT_TOKEN", env)
        self.telegram_api_base_url = (_env("TELEGRAM_API_BASE_URL", env) or "https://api.telegram.org").rstrip("/")
        self.telegram_webhook_secret = _env("TELEGRAM_WEBHOOK_SECRET", env)
        self.instance_backend_url = _env("STARPOD_INSTANCE_BACKEND_URL", env)
        self.database_url = _env("DATABASE_URL", env)  # unset: SQLite under db_dir
        self.bootstrap_admin = True
        self.max_request_bytes = 32 * 1024 * 1024
        for key, value in overrides.items():
            if not hasattr(self, key):
                raise TypeError(f"unknown config option {key!r}")
            setattr(self, key, value)
        self.live_agent = LiveAgentConfig(self.agent_toml_path)

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    @property
    def db_dir(self) -> Path:
        return self.home / "db"

    @property
    def db_path(self) -> Path:
        return self.db_dir / "starpod.db"

    @property
    def agent_toml_path(self) -> Path:
        return self.config_dir / "agent.toml"

    @property
    def frontend_toml_path(self) -> Path:
        return self.config_dir / "frontend.toml"

    @property
    def agent(self) -> AgentConfig:
        """The current agent.toml (re-read when it changed on disk)."""
        return self.live_agent.get()

    def provider_api_key(self, provider: str) -> str | None:
        return self.provider_keys.get(provider)

    def provider_base_url(self, provider: str) -> str | None:
        """agent.toml's `[providers.<name>] base_url` wins over the SDK env variable."""
        configured = self.agent.provider_config(provider).base_url
        return configured or self.env_base_urls.get(provider)
