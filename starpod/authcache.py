"""Per-process caches on the authentication hot path, kept correct across worker processes.

Layers:
- verified keys: SHA-256(key) → key id for keys that passed argon2 in this process.  A key's hash
  never changes, so this needs no invalidation (bounded LRU).
- failed keys: SHA-256(key) of keys that failed argon2, for a short while and only under the
  generation they failed in (a reactivated owner's key works again at once).  Never the key itself.
- key states: key id → the owner `Principal` (or None when unusable) and the key's expiry, tagged
  with the auth *generation* they were read under.
- failure throttle: recent argon2 failures per source, so a wrong key behind a known prefix cannot
  make this process run argon2 without bound.

The generation is a counter in the database, bumped inside the same transaction as every change
to keys or users that affects authentication (revoke, deactivate, activate, role change).  A
small file under `<home>/db/` is only a fast hint that it changed: it is replaced after the
commit, each lookup stats it (~1 µs) and re-reads the counter when it changed, and the counter is
re-read at least every `REFRESH_SECS` whatever happens to the file.  A state is read *after* the
counter, so a change that commits during the read leaves the entry already stale.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

REFRESH_SECS = 0.5  # a committed change reaches every worker within this even if the hint file fails
FAILED_KEY_SECS = 10.0
FAILURE_LIMIT = 20  # argon2 failures per source and window before further attempts are refused
FAILURE_WINDOW_SECS = 60.0


class LruMap:
    """A small thread-safe LRU mapping.

    Lookups (every authenticated request makes two) take no lock: each OrderedDict operation is
    atomic on its own, and an entry evicted between the read and the reordering just stays evicted.
    """

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Any:
        value = self._entries.get(key)
        if value is not None:
            try:
                self._entries.move_to_end(key)
            except KeyError:
                pass
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


class GenerationHint:
    """A file whose identity changes whenever auth-relevant data changes (any process)."""

    def __init__(self, path: Path | None):
        self.path = path

    def signature(self) -> tuple | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def touch(self) -> None:
        """Replace the file; a failure is logged, never raised (the database counter is the truth)."""
        if self.path is None:
            return
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}")
        try:
            temp.write_text(secrets.token_hex(8))
            os.replace(temp, self.path)  # a new inode: every reader sees a different signature
        except OSError:
            log.warning("could not write the auth generation hint %s; other workers notice the change "
                        "within %.1f s", self.path, REFRESH_SECS, exc_info=True)
            temp.unlink(missing_ok=True)


class Generation:
    """This process's view of the database auth generation counter."""

    def __init__(self, hint: GenerationHint, read_counter: Callable[[], int] | None):
        self.hint = hint
        self._read_counter = read_counter
        # (hint signature, read at, counter), replaced as a whole: reading it needs no lock
        self._seen: tuple = (None, -math.inf, None)

    def current(self) -> Any:
        signature = self.hint.signature()
        seen_signature, read_at, counter = self._seen
        if self._read_counter is None:
            return signature
        now = time.monotonic()
        if signature != seen_signature or now - read_at >= REFRESH_SECS:
            counter = self._read_counter()
            self._seen = (signature, now, counter)
        return counter

    def forget(self) -> None:
        """Re-read the counter on the next lookup (this process just changed it)."""
        self._seen = (None, -math.inf, None)


class FailureThrottle:
    """Recent failures per source (per process); refuses a source once it reached the limit."""

    def __init__(self, limit: int = FAILURE_LIMIT, window_secs: float = FAILURE_WINDOW_SECS,
                 max_sources: int = 10000):
        self.limit = limit
        self.window_secs = window_secs
        self._failures = LruMap(max_sources)
        self._lock = threading.Lock()

    def _recent(self, source: str, now: float) -> deque:
        times = self._failures.get(source) or deque()
        while times and times[0] <= now - self.window_secs:
            times.popleft()
        return times

    def note_failure(self, source: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._recent(source, now)
            times.append(now)
            self._failures.put(source, times)

    def retry_after(self, source: str) -> int:
        """Whole seconds until `source` may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(source, now)
            if len(times) < self.limit:
                return 0
            return max(1, math.ceil(times[-self.limit] + self.window_secs - now))


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class AuthCache:
    def __init__(self, generation_path: Path | None = None, read_counter: Callable[[], int] | None = None,
                 max_entries: int = 10000):
        self.generation = Generation(GenerationHint(generation_path), read_counter)
        self.verified = LruMap(max_entries)
        self.failures = FailureThrottle()
        self._failed = LruMap(max_entries)
        self._states = LruMap(max_entries)

    def state(self, key_id: str) -> tuple[bool, Any]:
        """(hit, value) for a key's cached state, a miss when auth data changed since it was read."""
        entry = self._states.get(key_id)
        if entry is None or entry[0] != self.generation.current():
            return False, None
        return True, entry[1]

    def store_state(self, key_id: str, generation: Any, value: Any) -> None:
        self._states.put(key_id, (generation, value))

    def recently_failed(self, digest: bytes) -> bool:
        entry = self._failed.get(digest)
        return (entry is not None and entry[1] > time.monotonic()
                and entry[0] == self.generation.current())

    def store_failure(self, digest: bytes, generation: Any) -> None:
        self._failed.put(digest, (generation, time.monotonic() + FAILED_KEY_SECS))

    def invalidate(self) -> None:
        """Call after committing a change that affects authentication (and bumped the counter)."""
        self._states.clear()
        self._failed.clear()
        self.generation.forget()
        self.generation.hint.touch()
