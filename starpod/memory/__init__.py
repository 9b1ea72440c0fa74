"""The agent's long-term memory: markdown files in shared and per-user spaces, full-text indexed
(FTS5 in SQLite, or PostgreSQL when `DATABASE_URL` says so).

`get_store(config)` gives this process's opened `MemoryStore` for a data directory.  No Flask here.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from ..config import Config
from .chunker import Chunk, chunk_text
from .paths import MemoryPathError
from .store import MemoryStore, SearchHit

# Stores of recently used data directories in this process; a long test run opens many homes,
# so the least recently used ones are closed rather than kept open forever.
MAX_OPEN_STORES = 4
_stores: OrderedDict[tuple[int, Path], MemoryStore] = OrderedDict()
_lock = threading.Lock()


def get_store(config: Config) -> MemoryStore:
    """The opened store for `config.home` in this process (seeded and reindexed on first use).

    Keyed by process id too: a store opened before a fork is never reused by the child.
    """
    key = (os.getpid(), config.home)
    with _lock:
        store = _stores.get(key)
        if store is not None:
            _stores.move_to_end(key)
            return store
        store = MemoryStore(config.home, lambda: config.agent.memory, config.database_url)
        store.open()
        _stores[key] = store
        while len(_stores) > MAX_OPEN_STORES:
            (pid, _), evicted = _stores.popitem(last=False)
            if pid == os.getpid():
                evicted.close()
    return store


__all__ = ["MemoryStore", "SearchHit", "MemoryPathError", "Chunk", "chunk_text", "get_store"]
