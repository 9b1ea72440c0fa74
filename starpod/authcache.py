"""Per-process caches on the authentication hot path, kept correct across worker processes.

Two layers:
- verified keys: SHA-256(key) → key id for keys that passed argon2 in this process.  A key's hash
  never changes, so this needs no invalidation (bounded LRU).
- key states: key id → the owner `Principal` (or None when unusable) and the key's expiry, tagged
  with the auth *generation* they were read under.

The generation is a small file under `<home>/db/` that every change to keys or users that affects
authentication (revoke, deactivate, activate, role change) replaces atomically after its commit.
Each lookup stats that file (~1 µs) and ignores states read under an older generation, so a
revocation made by any worker takes effect on the next request everywhere, without a database
read per request.  A state is read *after* sampling the generation, so a change that commits
during the read leaves the entry already stale.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any


class LruMap:
    """A small thread-safe LRU mapping."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Any:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class AuthGeneration:
    """A file whose identity changes whenever auth-relevant data changes (any process)."""

    def __init__(self, path: Path | None):
        self.path = path

    def current(self) -> tuple | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def bump(self) -> None:
        if self.path is None:
            return
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}")
        temp.write_text(secrets.token_hex(8))
        os.replace(temp, self.path)  # a new inode: every reader sees a different signature


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class AuthCache:
    def __init__(self, generation_path: Path | None = None, max_entries: int = 10000):
        self.generation = AuthGeneration(generation_path)
        self.verified = LruMap(max_entries)
        self._states = LruMap(max_entries)

    def state(self, key_id: str) -> tuple[bool, Any]:
        """(hit, value) for a key's cached state, a miss when auth data changed since it was read."""
        entry = self._states.get(key_id)
        if entry is None or entry[0] != self.generation.current():
            return False, None
        return True, entry[1]

    def store_state(self, key_id: str, generation: tuple | None, value: Any) -> None:
        self._states.put(key_id, (generation, value))

    def invalidate(self) -> None:
        """Call after committing a change that affects authentication."""
        self._states.clear()
        self.generation.bump()
