"""`starpod doctor`: check what a server needs before (or while) it runs; exit 1 when a check fails.

Checks the data directory and its permissions, the databases' integrity, agent.toml, the key of
the configured provider and the listen port.  Nothing is created or changed.
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import sqlite3
import stat
import urllib.error
import urllib.request
from pathlib import Path

from ..config import PROVIDER_KEY_ENV, AgentConfig, Config, ConfigError, parse_agent_config
from ..home import SUBDIRS
from ..memory.index import SqliteIndex, open_index
from .common import add_command, data_directory, is_initialized, print_rows

OK, WARN, FAIL = "ok", "warn", "FAIL"
CHECK_COLUMNS = [("check", "CHECK"), ("status", "STATUS"), ("detail", "DETAIL")]
HEALTH_TIMEOUT_SECS = 3.0


def register(subparsers, common) -> None:
    command = add_command(subparsers, "doctor", common, run,
                          "Check what the server needs; exit 1 when a check fails.",
                          "Checks the data directory, permissions, database integrity, agent.toml, "
                          "the provider key and the listen port; changes nothing.")
    command.add_argument("--host", help="listen address to check (default: $HOST, else 0.0.0.0)")
    command.add_argument("--port", type=int, help="listen port to check (default: $PORT, else 3000)")

NOT_BUILT = "not built yet (the server or `starpod memory reindex` builds it)"


def run(args: argparse.Namespace) -> int:
    config = data_directory(args)
    host = args.host or os.environ.get("HOST") or "0.0.0.0"
    port = args.port or config.port
    results = [
        ("data directory", check_data_directory(config)),
        ("permissions", check_permissions(config)),
        ("database", check_database(config)),
        ("memory index", check_memory_index(config)),
        ("agent.toml", check_agent_toml(config)),
        ("provider key", check_provider_key(config)),
        ("port", check_port(host, port)),
    ]
    print_rows(args, CHECK_COLUMNS, ({"check": name, "status": status, "detail": detail}
                                     for name, (status, detail) in results))
    return 1 if any(status == FAIL for _, (status, _) in results) else 0


def check_data_directory(config: Config) -> tuple[str, str]:
    if not is_initialized(config):
        return FAIL, f"not initialized (no config/agent.toml); run `starpod init --home {config.home}`"
    missing = [name for name in SUBDIRS if not (config.home / name).is_dir()]
    if missing:
        return WARN, f"missing {', '.join(missing)} (the server recreates them at start)"
    unwritable = [name for name in ("", *SUBDIRS) if not os.access(config.home / name, os.W_OK | os.X_OK)]
    if unwritable:
        return FAIL, f"not writable by this user: {', '.join(name or '.' for name in unwritable)}"
    return OK, str(config.home)


def check_permissions(config: Config) -> tuple[str, str]:
    """World-writable directories let any local user change the agent; a world-readable database
    shows chats and key hashes to every local user."""
    if not config.home.is_dir():
        return FAIL, "no data directory"
    owner = config.home.stat().st_uid
    if owner != os.geteuid():
        return WARN, f"owned by uid {owner}, not by this user ({os.geteuid()})"
    writable = [str(path) for path in _tree_dirs(config.home) if path.stat().st_mode & stat.S_IWOTH]
    if writable:
        return FAIL, f"writable by every user: {', '.join(writable[:3])} (chmod o-w)"
    readable = [path.name for path in (config.db_path, config.db_dir / "memory.db")
                if path.exists() and path.stat().st_mode & stat.S_IROTH]
    if readable:
        return WARN, f"db/{', db/'.join(readable)} readable by every user (chmod 600 to keep chats private)"
    return OK, "not writable by other users"


def _tree_dirs(home: Path) -> list[Path]:
    return [home, *(home / name for name in SUBDIRS if (home / name).is_dir())]


def check_database(config: Config) -> tuple[str, str]:
    if config.database_url:
        return _postgresql_reachable(config)
    if not config.db_path.is_file():
        return FAIL, f"{config.db_path.name} missing"
    return _integrity(config.db_path)


def _postgresql_reachable(config: Config) -> tuple[str, str]:
    from ..db import open_database

    try:
        database = open_database(config.db_path, config.database_url)
        with database.connection_context():
            database.execute_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 — whatever keeps the server from its database is the finding
        return FAIL, f"PostgreSQL: {exc.__class__.__name__}: {str(exc).strip()}"
    return OK, "PostgreSQL reachable"


def check_memory_index(config: Config) -> tuple[str, str]:
    index = open_index(config.home, config.database_url)
    if isinstance(index, SqliteIndex):
        if not index.path.is_file():
            return WARN, NOT_BUILT
        return _integrity(index.path)
    try:
        if not index.has_tables():
            return WARN, NOT_BUILT
        return OK, f"PostgreSQL: {index.chunk_count()} chunks"
    except Exception as exc:  # noqa: BLE001 — whatever keeps the server from answering is the finding
        return FAIL, f"PostgreSQL: {exc.__class__.__name__}: {str(exc).strip()}"
    finally:
        index.close()


def _integrity(path: Path) -> tuple[str, str]:
    """PRAGMA integrity_check over a read-only connection (safe while the server writes)."""
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return FAIL, f"{path.name}: {exc}"
    if rows == ["ok"]:
        return OK, f"{path.name}: integrity ok"
    return FAIL, f"{path.name}: {'; '.join(rows[:3])}"


def _read_agent_toml(config: Config) -> AgentConfig:
    """agent.toml as the server would load it (defaults when absent); OSError or ConfigError."""
    path = config.agent_toml_path
    if not path.is_file():
        return AgentConfig()
    try:
        return parse_agent_config(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8: {exc}") from exc


def check_agent_toml(config: Config) -> tuple[str, str]:
    if not config.agent_toml_path.is_file():
        return WARN, "missing (defaults apply; the server seeds it at start)"
    try:
        _read_agent_toml(config)
    except (OSError, ConfigError) as exc:
        return FAIL, f"{config.agent_toml_path}: {exc}"
    return OK, "valid"


def check_provider_key(config: Config) -> tuple[str, str]:
    try:
        provider, model = _read_agent_toml(config).model_ref()
    except (OSError, ConfigError):
        return FAIL, "agent.toml is not usable (see its check)"
    if provider == "ollama":
        return OK, f"ollama/{model} needs no key"
    variable = PROVIDER_KEY_ENV.get(provider)
    if variable is None:
        return FAIL, f"unknown provider {provider!r}"
    if not config.provider_api_key(provider):
        return FAIL, f"{provider}/{model} is configured but {variable} is not set"
    return OK, f"{provider}/{model}: {variable} is set"


def check_port(host: str, port: int) -> tuple[str, str]:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return FAIL, f"cannot listen on {address}: {exc.strerror}"
        else:
            return OK, f"{address} is free"
    if _starpod_answers(port):
        return WARN, f"{address} is in use by a running Starpod"
    return FAIL, f"{address} is in use by another program"


def _starpod_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=HEALTH_TIMEOUT_SECS) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False
