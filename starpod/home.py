"""The data directory (`STARPOD_HOME`): its layout and the files seeded on first start.

Seeding never overwrites: each file is created with O_EXCL, so several workers starting at once
leave exactly one copy and an edited file is never replaced.

The data directory is private to the server's user: it is made 0700 and `ensure_home` sets the
process umask to 077, so every file created later (database, memory, uploads, config) is 0600
and every directory 0700 whoever creates it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SUBDIRS = ("config", "db", "memory", "knowledge", "users", "skills", "workspace")
# A first admin key handed to a server about to start on a data directory (local instances): read
# once at start-up and deleted, so the key never sits in the server's process environment.
BOOTSTRAP_KEY_FILE = "bootstrap.key"
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

AGENT_TOML = '''\
# Starpod agent configuration. Every key is optional; the values below are the defaults.
# Edits take effect on the next request in every worker (server_addr needs a restart).

agent_name = "Aster"
# provider: anthropic, openai, gemini, groq, deepseek, openrouter or ollama
provider = "anthropic"
model = "claude-haiku-4-5"
max_turns = 30
max_tokens = 16384
server_addr = "127.0.0.1:3000"
followup_mode = "inject"      # inject | queue
# timezone = "Europe/Berlin"  # IANA name; unset = UTC
# reasoning_effort = "medium" # low | medium | high
# compaction_model = "claude-haiku-4-5"
# compaction_provider = "anthropic"

# Provider endpoints. API keys come only from the environment (ANTHROPIC_API_KEY, ...).
# [providers]
# request_timeout_secs = 120  # deadline of one model call, retries included
# [providers.openai]
# base_url = "https://api.openai.com/v1"

[memory]
half_life_days = 30.0   # temporal decay of daily logs
mmr_lambda = 0.7        # 0 = max diversity, 1 = pure relevance
vector_search = false   # accepted for compatibility; search is full-text only in this version
chunk_size = 1600       # characters per indexed chunk
chunk_overlap = 320
bootstrap_file_cap = 20000
export_sessions = true  # closed sessions are exported to knowledge/sessions/

[compaction]
context_budget = 160000
summary_max_tokens = 4096
min_keep_messages = 4

[cron]
default_max_retries = 3
default_timeout_secs = 7200
max_concurrent_runs = 1

[attachments]
enabled = true
allowed_extensions = []      # empty = every extension
max_file_size = 20971520     # bytes

[auth]
rate_limit_requests = 0      # per user per window; 0 = off
rate_limit_window_secs = 60

[tools]
shell = true                 # Bash tool (admin callers only)
file_write = true            # FileWrite / FileDelete (admin callers only)
timeout_secs = 30            # wall and CPU time of one Read / Glob / Grep call

[limits]
max_message_bytes = 262144   # largest chat message text (UTF-8 bytes); larger ones get 413
'''

SOUL_MD = '''\
# Soul

You are **Aster**, a personal AI assistant: helpful, direct and thoughtful.

## Core Traits
- Helpful: you do the work, not just describe it.
- Direct: you say what you think and keep answers short unless depth is asked for.
- Thoughtful: you remember what matters to the person and use it.

## Communication Style
- Plain language, no filler.
- Ask one clear question when something is ambiguous.
- Admit what you do not know.
'''

FRONTEND_TOML = '''\
# Web UI: greeting = "..." and prompts = ["...", ...]
prompts = []
'''

CONFIG_FILES = {
    "agent.toml": AGENT_TOML,
    "frontend.toml": FRONTEND_TOML,
    "SOUL.md": SOUL_MD,
    "HEARTBEAT.md": "",
    "BOOT.md": "",
    "BOOTSTRAP.md": "",
}


def create_if_absent(path: Path, content: str) -> bool:
    """Write `content` to a new file; False (and nothing touched) when the file already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return True


def write_bootstrap_key(home: Path, key: str) -> None:
    """Leave `key` (owner-only file) for the server that will start on `home` to import."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / BOOTSTRAP_KEY_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key)


def take_bootstrap_key(home: Path) -> str | None:
    """The key left by `write_bootstrap_key`, removed from disk as it is read; None when absent."""
    path = home / BOOTSTRAP_KEY_FILE
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return key or None


def ensure_home(home: Path) -> None:
    """Create the data directory layout, private to this user, and seed the missing config files."""
    os.umask(PRIVATE_UMASK)  # process-wide on purpose; workers forked later inherit it
    for directory in (home, *(home / sub for sub in SUBDIRS)):
        directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        try:
            os.chmod(directory, PRIVATE_DIR_MODE)  # also a directory made by an older version
        except PermissionError:
            log.warning("cannot make %s private (owned by another user)", directory)
    for name, content in CONFIG_FILES.items():
        create_if_absent(home / "config" / name, content)
