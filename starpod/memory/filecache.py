"""Texts of small files read on every chat (bootstrap files, daily logs, skills), kept per process.

An entry is reused while the file's stat signature (mtime, size, inode, device) is unchanged, so a
write by any process (in place or by atomic replace) is seen on the next read.  Timestamps can be
coarse, so a file whose mtime is within RACY_WINDOW_NS of when it was read is read again.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable

MAX_ENTRIES = 512
# A file whose mtime is this close to when it was read (or indexed) may have changed again within
# the same mtime tick, so its content is read again rather than trusted.
RACY_WINDOW_NS = 2_000_000_000


def _signature(st: os.stat_result) -> tuple:
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


class FileCache:
    """Parsed file texts by key; a key remembers the one file it last read."""

    def __init__(self, errors: str = "replace", max_entries: int = MAX_ENTRIES):
        self.errors = errors  # how undecodable UTF-8 is handled, as for open()
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[str | Path, tuple, int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, key: Hashable) -> Any | None:
        """What `key` last read, if that file has not changed since; else None."""
        with self._lock:
            entry = self._entries.get(key)
        return entry[3] if entry is not None and self._fresh(entry) else None

    def read(self, key: Hashable, path: str | Path, parse: Callable[[Any], Any] = str, limit: int = -1,
             raw: bool = False) -> Any:
        """`parse(text of path)` (of its first `limit` characters when given; with `raw`, of its
        bytes, the first `limit` bytes), from the cache when `key` last read this unchanged file.
        Errors opening the file (FileNotFoundError, ...) propagate and nothing is cached."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] == path and self._fresh(entry):
            return entry[3]
        read_ns = time.time_ns()
        with (open(path, "rb") if raw else open(path, encoding="utf-8", errors=self.errors)) as handle:
            signature = _signature(os.fstat(handle.fileno()))
            value = parse(handle.read(limit))
        with self._lock:
            self._entries[key] = (path, signature, read_ns, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    @staticmethod
    def _fresh(entry: tuple) -> bool:
        path, signature, read_ns, _ = entry
        try:
            current = _signature(os.stat(path))
        except OSError:
            return False
        return current == signature and current[0] + RACY_WINDOW_NS <= read_ns
