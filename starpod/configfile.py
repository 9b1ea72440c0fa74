"""Safe writes of the agent's config files: a lock shared by every process, atomic replacement,
and format-preserving edits of agent.toml.

- `file_lock(path, home)` serialises writers of one file of data directory `home` across every
  worker and greenlet of every server (`locks.exclusive`: an advisory lock on PostgreSQL, else an
  fcntl lock on a sibling `.<name>.lock` file).
- `atomic_write(path, text)` writes a temp file in the same directory, fsyncs it, renames it over
  the target and fsyncs the directory: readers see the old or the new file, never a partial one.
- `edit_toml(path, home, mutate, validate)` reads the document with tomlkit (comments, key order and
  unknown keys survive), applies `mutate`, checks the result with `validate` and only then
  replaces the file, so a rejected edit leaves it untouched.
- `edit_agent_toml(config, mutate)` does that for agent.toml and makes the new config current in
  this process before returning; other workers notice the new file on their next access (other
  servers are also told at once: changehints).
"""
from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.toml_document import TOMLDocument

from . import changehints
from .config import AgentConfig, Config, ConfigError, parse_agent_config
from .errors import StarpodError
from .filelock import LockTimeout
from .home import PRIVATE_FILE_MODE
from .locks import exclusive, lock_name

LOCK_TIMEOUT_SECS = 30.0


class ConfigFileError(StarpodError):
    """A config file could not be read, parsed or written (a server-side problem, not the request's)."""
    status = 500


def lock_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextmanager
def file_lock(path: Path, home: Path, timeout: float = LOCK_TIMEOUT_SECS) -> Iterator[None]:
    """Hold the exclusive write lock of `path` inside data directory `home` (every process and
    greenlet of every server shares it)."""
    try:
        with exclusive(lock_name(home, path), lock_path_for(path), timeout):
            yield
    except LockTimeout:
        raise ConfigFileError(f"Timed out waiting for the write lock of {path}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) so that no reader or crash ever sees a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # the owner's bits of the file it replaces; never group/other (the data dir is private)
            mode = stat.S_IMODE(os.stat(path).st_mode) & 0o700 or PRIVATE_FILE_MODE
        except FileNotFoundError:
            mode = PRIVATE_FILE_MODE
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, mode)
            os.replace(tmp_name, path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(path.parent)
    except OSError as exc:
        raise ConfigFileError(f"Failed to write {path}: {exc.strerror or exc}") from exc


def read_toml_document(path: Path) -> TOMLDocument:
    """The file as an editable tomlkit document; a missing file is an empty document."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"Failed to read {path}: {exc}") from exc
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigFileError(f"Failed to parse {path}: {exc}") from exc


def edit_toml(path: Path, home: Path, mutate: Callable[[TOMLDocument], None],
              validate: Callable[[str], object] | None = None) -> str:
    """Read-modify-write `path` under its lock; returns the text written.

    `mutate` edits the document in place; `validate` gets the new text and raises to refuse it
    (the file is then left untouched).
    """
    with file_lock(path, home):
        document = read_toml_document(path)
        mutate(document)
        text = document.as_string()
        if validate is not None:
            validate(text)
        atomic_write(path, text)
        return text


def _validate_agent_toml(path: Path) -> Callable[[str], AgentConfig]:
    def validate(text: str) -> AgentConfig:
        try:
            return parse_agent_config(text)
        except ConfigError as exc:
            raise ConfigFileError(f"Refusing to write {path}: {exc}") from exc
    return validate


def edit_agent_toml(config: Config, mutate: Callable[[TOMLDocument], None]) -> AgentConfig:
    """Edit agent.toml and make the result this process's current config before returning."""
    path = config.agent_toml_path
    edit_toml(path, config.home, mutate, _validate_agent_toml(path))
    changehints.announce(changehints.SETTINGS)
    return config.live_agent.reload()
