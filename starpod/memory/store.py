"""`MemoryStore`: the agent's long-term memory — markdown files on disk plus an index that matches them.

The files are the source of truth.  Every write through the store re-indexes that file (a file that
only grew, like a daily log, from its last complete chunk on); `reindex`
walks the whole data directory (except `db/`) and brings the index in line with whatever is on disk,
re-reading only files whose size or mtime changed (or that changed too recently to trust the
mtime), so a restart over a large, unchanged tree is quick.  Indexing a file reads it while holding
the index's write lock, so whichever process indexes last indexes what is on disk now.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from ..authcache import LruMap
from ..concurrency import gevent_active, in_background
from ..config import MemoryConfig
from ..home import create_if_absent, ensure_home
from .chunker import chunk_lines, chunk_text, next_start, split_lines
from .filecache import RACY_WINDOW_NS, FileCache
from .index import FileRecord, MemoryIndex, open_index
from .paths import (EXCLUDED_DIRS, SHARED, Location, MemoryPathError, index_identity, locate, source_path, validate_content,
                    validate_user_id)
from .scoring import apply_decay, decay_factor

log = logging.getLogger(__name__)

USER_MD = """\
# User Profile

<!-- What the assistant knows about you. Edit freely; the assistant reads this at the start of
     every conversation and may update it when you share something worth remembering. -->

## Name

## Role

## Expertise

## Preferences

## Context
"""
MEMORY_MD = "# Memory Index\n\nImportant facts and links to memory files.\n"

BATCH_BYTES = 1 << 20
BATCH_FILES = 256
PROGRESS_LOG_SECS = 5.0
MAX_DAILY_FILES = 3
INDEX_SOON_SECS = 1.0
MAX_CACHED_SEARCHES = 64  # up to 100 chunks each: ~10 MB at most with the default chunk size


class SearchHit(NamedTuple):  # a tuple: built for every hit of every search, at a fraction of a dataclass's cost
    path: str        # the memory name that reads the file back (relative to home; config files bare)
    line_start: int
    line_end: int
    text: str
    score: float     # higher is better (negated, decayed rank)


@dataclass(frozen=True)
class _Found:
    path: Path
    source: str
    owner: str
    mtime_ns: int
    size: int


class MemoryStore:
    def __init__(self, home: Path, settings: Callable[[], MemoryConfig], database_url: str | None = None):
        """`database_url`: a `postgresql://` URL keeps the index in PostgreSQL, else SQLite under `home`."""
        self.home = Path(home).resolve()
        self.settings = settings
        self.index = open_index(self.home, database_url)
        self.texts = FileCache()
        self._index_due: set[Path] = set()
        self._results = LruMap(MAX_CACHED_SEARCHES)

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> dict:
        """Create the layout and the index tables, seed missing files, bring the index up to date."""
        ensure_home(self.home)
        self.index.open()
        return self.reindex()

    def close(self) -> None:
        self.index.close()

    # --- files ------------------------------------------------------------------------------

    def locate(self, name: str, user_id: str | None = None) -> Location:
        if user_id is not None:
            self.ensure_user_space(user_id)
        return locate(self.home, name, user_id)

    def read(self, path: str, user_id: str | None = None) -> str:
        """The file's text, or "" when it does not exist."""
        location = self.locate(path, user_id)
        try:
            with _file_errors():
                return location.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def write(self, path: str, content: str, user_id: str | None = None) -> None:
        validate_content(content)
        location = self.locate(path, user_id)
        with _file_errors():
            self._write_file(location.path, content)

    def _write_file(self, path: Path, content: str) -> None:
        """Atomically replace `path` (readers and the indexer never see half a file), then index it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            temp.write_text(content, encoding="utf-8", errors="replace")
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        self.index_file(path)

    def append_daily(self, text: str, user_id: str | None, index_soon: bool = False) -> None:
        """Append a timestamped entry to today's log (server local time) in the caller's space;
        the log is indexed now, or with `index_soon` by `index_soon`.  Only the log's folder is
        made: every entry comes from a chat, whose system prompt already set up the user's space
        (`bootstrap_context`)."""
        now = datetime.now()
        space = self.home / "users" / validate_user_id(user_id) if user_id is not None else self.home
        path = space / "memory" / f"{now:%Y-%m-%d}.md"
        with self._open_to_append(path) as handle:
            # The lock makes the header and each entry land whole even with two workers appending.
            fcntl.flock(handle, fcntl.LOCK_EX)
            header = f"# Daily Log \u2014 {now:%Y-%m-%d}\n" if os.fstat(handle.fileno()).st_size == 0 else ""
            handle.write(f"{header}\n## {now:%H:%M:%S}\n{text}\n")
        if index_soon:
            self.index_soon(path)
        else:
            self.index_file(path)

    @staticmethod
    def _open_to_append(path: Path):
        """`path` opened to append, its folder made first when missing (not on every append: a
        mkdir of a folder that exists fails, and failing costs more than the append itself)."""
        try:
            return open(path, "a", encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            path.parent.mkdir(parents=True, exist_ok=True)  # or its own error, as when it came first
            return open(path, "a", encoding="utf-8", errors="replace")

    def user_dir(self, user_id: str) -> Path:
        self.ensure_user_space(user_id)
        return self.home / "users" / user_id

    def ensure_user_space(self, user_id: str) -> None:
        """Create `users/<id>/` with `memory/` and the default USER.md / MEMORY.md when missing.

        Every chat passes here: what exists is only looked at (plain stats, no Path objects,
        no failed creations), and created, race-free as before, when missing."""
        base = os.path.join(self.home, "users", validate_user_id(user_id))
        if not os.path.isdir(os.path.join(base, "memory")):
            Path(base, "memory").mkdir(parents=True, exist_ok=True)
        for name, content in (("USER.md", USER_MD), ("MEMORY.md", MEMORY_MD)):
            path = os.path.join(base, name)
            if not os.path.lexists(path) and create_if_absent(Path(path), content):
                self.index_file(Path(path))

    def has_bootstrap(self) -> bool:
        return bool(self.read("BOOTSTRAP.md").strip())

    def clear_bootstrap(self) -> None:
        self.write("BOOTSTRAP.md", "")

    # --- system prompt and exports ----------------------------------------------------------

    def bootstrap_context(self, user_id: str | None) -> str:
        """SOUL.md, then (for a user) their USER.md, MEMORY.md and last three daily logs (§1.9)."""
        cap = max(0, self.settings().bootstrap_file_cap)
        parts = [_section("SOUL.md", self._read_capped("SOUL.md", None, cap))]
        if user_id is not None:
            self.ensure_user_space(user_id)
            parts += [_section(name, self._read_capped(name, user_id, cap)) for name in ("USER.md", "MEMORY.md")]
            parts += [_section(f"daily/{name}", self._capped((path, cap), path, cap))
                      for name, path in _recent_dailies(os.path.join(self.home, "users", user_id, "memory"))]
        return "\n\n".join(parts)

    def _read_capped(self, name: str, user_id: str | None, cap: int) -> str:
        """`_capped` of the file `name` leads to; the name is located (and checked) anew whenever
        the file it led to last time changed."""
        key = (name, user_id, cap)
        cached = self.texts.cached(key)
        if cached is not None:
            return cached
        location = self.locate(name, user_id)
        try:
            with _file_errors():
                return self._capped(key, location.path, cap)
        except FileNotFoundError:
            return ""

    def _capped(self, key: tuple, path: str | Path, cap: int) -> str:
        """The file's text cut to `cap` bytes, through the file cache.  Only its first `cap` bytes
        are read: a daily log grows past the cap over a day, and is read again after every chat."""
        return self.texts.read(key, path, lambda data: self._capped_text(data, path, cap), limit=cap, raw=True)

    def _capped_text(self, data: bytes, path: str | Path, cap: int) -> str:
        """`cap_bytes` of the text of the file whose first `cap` bytes are `data`.  Whole UTF-8
        characters without a CR are that text as they are (a third of the time of reading the
        text and encoding it to count its bytes, for a 20 kB daily log); else (a character cut at
        the cap, bytes that are not UTF-8, newlines that text mode translates) the file is read
        as text."""
        if b"\r" not in data:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        with open(path, encoding="utf-8", errors=self.texts.errors) as handle:
            return cap_bytes(handle.read(cap), cap)

    def export_session(self, title: str | None, created_at: str, channel: str, message_count: int,
                       summary: str | None, messages: Iterable, session_id: str, agent_name: str,
                       user_id: str | None = None) -> str | None:
        """Write a closed session to `knowledge/sessions/` (in the user's space when `user_id` is
        given, so private sessions stay private); returns the memory name, None when disabled.

        `messages` are `(role, text)` pairs or dicts with `role` and `content`/`text`; only user
        and assistant messages are exported.
        """
        if not self.settings().export_sessions:
            return None
        title = title or "untitled"
        slug = "".join(c.lower() if c.isalnum() or c == "-" else "-" for c in title[:50]).strip("-") or "untitled"
        name = f"knowledge/sessions/{slug}-{session_id[:8]}.md"
        if user_id is not None:
            name = f"users/{validate_user_id(user_id)}/{name}"
            self.ensure_user_space(user_id)
        lines = [f"# Session: {title}", "", f"- **Date**: {created_at[:10]}", f"- **Channel**: {channel}",
                 f"- **Messages**: {message_count}"]
        if summary:
            lines.append(f"- **Summary**: {summary}")
        lines += ["", "---", ""]
        speakers = {"user": "User", "assistant": agent_name}
        for role, text in map(_role_and_text, messages):
            if role in speakers and text:
                lines += [f"**{speakers[role]}**: {text}", ""]
        self._write_file(locate(self.home, name, user_id).path, "\n".join(lines))
        return name

    # --- search -----------------------------------------------------------------------------

    def search(self, query: str, user_id: str | None, limit: int = 10) -> list[SearchHit]:
        """Plain-text search over the shared space and `user_id`'s own space, best first (§1.7).

        Results are cached per process under the index generation they were read at (on the
        search's own snapshot), so a cached result is only served while the index is still
        exactly what it was computed from: any write, by any process or server, retires it.
        """
        if limit <= 0:
            return []
        owners = (SHARED,) if not user_id else (SHARED, user_id)
        half_life, today = self.settings().half_life_days, date.today()
        key = (query, owners, limit, half_life, today)
        with self.index.connection() as conn:
            hits = self._results.get((*key, self.index.generation(conn)))
            if hits is None:  # computed on the same connection: a cache miss checks out no other
                with self.index.reading(conn) as generation:
                    hits = tuple(self._search(conn, query, owners, limit, half_life, today))
                self._results.put((*key, generation), hits)
        return list(hits)

    def _search(self, conn, query: str, owners: tuple[str, ...], limit: int, half_life: float,
                today: date) -> list[SearchHit]:
        ranked = self.index.ranked(conn, query, owners, max(3 * limit, 30))
        best = sorted(((apply_decay(rank, decay_factor(source, half_life, today)), rowid, source)
                       for rowid, source, rank in ranked), key=lambda row: row[0])[:limit]
        chunks = self.index.chunks(conn, [rowid for _, rowid, _ in best])
        return [SearchHit(source, start, end, text, -rank)
                for rank, rowid, source in best for text, start, end in (chunks[rowid],)]

    # --- indexing ---------------------------------------------------------------------------

    def index_file(self, abs_path: Path) -> None:
        """Bring the index in line with one file: (re)index it, or drop it when it is gone."""
        path = Path(os.path.abspath(self.home / abs_path))
        identity = index_identity(self.home, path)
        if identity is None:
            return
        found, chunking = _Found(path, *identity, 0, 0), self._chunking()
        with self.index.transaction() as conn:
            if not self._index_growth(conn, found, chunking):
                self._index_path(conn, self.index, found, None, chunking)

    def index_soon(self, path: Path) -> None:
        """Index `path` within INDEX_SOON_SECS, once for all its writes in that time (without gevent:
        now).  A daily log grows on every chat, and indexing it reads the whole file each time.

        The file itself is written already: an index this process did not get to (it exited) is
        made up by the next index of that file, or the start-up reindex.
        """
        if not gevent_active():
            self.index_file(path)
        elif path not in self._index_due:
            self._index_due.add(path)
            in_background(INDEX_SOON_SECS, self._index_due_file, path)

    def _index_due_file(self, path: Path) -> None:
        self._index_due.discard(path)  # first: a write from now on is indexed by another round
        try:
            self.index_file(path)
        except Exception:
            log.exception("indexing %s failed", path)

    def _index_growth(self, conn, found: _Found, chunking: tuple[int, int]) -> bool:
        """When the indexed content is a whole-line prefix of the file, keep the chunks that cannot
        change and chunk only from the last incomplete one on; False (nothing done) otherwise."""
        record = self.index.file_record(conn, found.source)
        if (record is None or record.owner != found.owner
                or self.index.read_meta(conn, "chunking") != _chunking_key(chunking)):
            return False
        try:
            st = os.lstat(found.path)
            if not stat.S_ISREG(st.st_mode):
                return False
            data = found.path.read_bytes()
        except FileNotFoundError:
            return False
        old = data[:record.size]
        if len(data) <= record.size or (old and not old.endswith(b"\n")) or _digest(old) != record.digest:
            return False
        lines = split_lines(data.decode("utf-8", errors="replace"))
        size, overlap = chunking
        old_lines = old.count(b"\n")
        # A chunk that ended before the old last line was closed by its size, so appending cannot change it.
        complete = [span for span in self.index.chunk_spans(conn, record.id) if span[2] < old_lines]
        keep, start = 0, 0
        if complete:
            number, line_start, line_end = complete[-1]
            keep, start = number + 1, next_start(lines, line_start, line_end, overlap)
        self.index.extend_file(conn, record, keep, st.st_mtime_ns, st.st_size, _digest(data), time.time_ns(),
                               chunk_lines(lines, size, overlap, start))
        return True

    def reindex(self, progress: Callable[[int, int], None] | None = None, full: bool = False) -> dict:
        """Index every markdown file under the data directory that changed since it was last indexed,
        and drop files that are gone.  `full` (or changed chunk settings) rebuilds from scratch.
        `progress(done, total)` is called as files are processed.  Returns statistics.
        """
        started = time.monotonic()
        with self.index.reindex_lock():  # one reindex walks the tree at a time
            chunking = self._chunking()
            rebuild = full or self.index.get_meta("chunking") != _chunking_key(chunking)
            if rebuild and self.index.REBUILDS_ASIDE:  # comes out compact
                stats = self._rebuild_aside(chunking, progress)
            else:
                if rebuild:
                    with self.index.transaction(bulk=True) as conn:
                        self.index.clear(conn)
                        self.index.set_meta(conn, "chunking", _chunking_key(chunking))
                stats = self._update(chunking, progress)
                self.index.compact(stats["indexed"] + stats["removed"], stats["files"] + stats["removed"])
        stats["seconds"] = round(time.monotonic() - started, 3)
        log.info("memory reindex done: %s", stats)
        return stats

    def _update(self, chunking: tuple[int, int], progress: Callable[[int, int], None] | None) -> dict:
        """Index what changed since the index was last brought up to date."""
        known = self.index.files()
        found, stale, gone = self._changes(known)
        total, done = len(found), len(found) - len(stale)
        log.info("memory reindex: %d files, %d to check, %d gone", total, len(stale), len(gone))
        _report(progress, done, total)
        self._remove_gone(gone, known)
        indexed, indexed_bytes = self._index_batches(stale, known, chunking, progress, done, total)
        return _stats(total, indexed, len(gone), indexed_bytes)

    def _changes(self, known: dict[str, FileRecord]) -> tuple[list[_Found], list[_Found], set[str]]:
        """(every file on disk, those that may differ from `known`, sources of `known` gone)."""
        found = list(self._walk())
        stale = [f for f in found if not _unchanged(known.get(f.source), f)]
        return found, stale, set(known) - {f.source for f in found}

    def _rebuild_aside(self, chunking: tuple[int, int], progress: Callable[[int, int], None] | None) -> dict:
        """A full rebuild by the engine's `rebuild()`: every file read and chunked into the new
        index, which then catches up with the writes made meanwhile and replaces the old one."""
        found = list(self._walk())
        log.info("memory reindex: rebuilding from %d files", len(found))
        indexed = indexed_bytes = unyielded_bytes = 0
        last_log = time.monotonic()
        with self.index.rebuild(_chunking_key(chunking),
                                lambda conn, index: self._catch_up(conn, index, chunking)) as build:
            for done, item in enumerate(found, 1):
                read = _read(item.path)
                if read is not None:
                    st, data = read
                    build.add(item.source, item.owner, st.st_mtime_ns, st.st_size, _digest(data), time.time_ns(),
                              chunk_text(data.decode("utf-8", errors="replace"), *chunking))
                    indexed, indexed_bytes = indexed + 1, indexed_bytes + st.st_size
                    unyielded_bytes += st.st_size
                _report(progress, done, len(found))
                if time.monotonic() - last_log >= PROGRESS_LOG_SECS:
                    last_log = time.monotonic()
                    log.info("memory reindex: %d/%d files", done, len(found))
                if unyielded_bytes >= BATCH_BYTES:  # let other greenlets run (outside gevent, a sleep)
                    unyielded_bytes = 0
                    time.sleep(0)
        return _stats(len(found), indexed + build.caught_up, 0, indexed_bytes)

    def _catch_up(self, conn, index: MemoryIndex, chunking: tuple[int, int]) -> int:
        """Inside a write transaction: index in `index` whatever changed on disk since it was
        indexed; returns the number of files re-chunked."""
        known = index.read_files(conn)
        _, stale, gone = self._changes(known)
        return sum(self._index_path(conn, index, found, known.get(found.source), chunking)
                   for found in [*stale, *(self._gone(source, known) for source in gone)])

    def _remove_gone(self, gone: set[str], known: dict[str, FileRecord]) -> None:
        if not gone:
            return
        with self.index.transaction() as conn:
            for source in gone:
                self._index_path(conn, self.index, self._gone(source, known), known[source], None)

    def _gone(self, source: str, known: dict[str, FileRecord]) -> _Found:
        """A file not found by the walk: indexed, not dropped, when a write recreated it since."""
        return _Found(source_path(self.home, source), source, known[source].owner, 0, 0)

    def _index_batches(self, stale: list[_Found], known: dict[str, FileRecord], chunking: tuple[int, int],
                       progress, done: int, total: int) -> tuple[int, int]:
        """Index `stale` in transactions of about BATCH_BYTES; returns (files re-chunked, their bytes)."""
        changed = changed_bytes = position = 0
        last_log = time.monotonic()
        while position < len(stale):
            batch_bytes = 0
            with self.index.transaction(bulk=True) as conn:
                for found in stale[position:]:
                    position += 1
                    if self._index_path(conn, self.index, found, known.get(found.source), chunking):
                        changed += 1
                        changed_bytes += found.size
                    batch_bytes += found.size
                    if batch_bytes >= BATCH_BYTES or position % BATCH_FILES == 0:
                        break
            _report(progress, done + position, total)
            if time.monotonic() - last_log >= PROGRESS_LOG_SECS:
                last_log = time.monotonic()
                log.info("memory reindex: %d/%d files", done + position, total)
            time.sleep(0)  # let other greenlets run between batches
        return changed, changed_bytes

    def _index_path(self, conn, index: MemoryIndex, found: _Found, record: FileRecord | None,
                    chunking: tuple[int, int] | None) -> bool:
        """Index one file in `index` inside a write transaction; True when its chunks were (re)written."""
        read = _read(found.path)
        if read is None:
            index.remove_file(conn, found.source)
            return False
        st, data = read
        digest = _digest(data)
        now_ns = time.time_ns()
        if record is not None and record.digest == digest and record.owner == found.owner:
            index.touch_file(conn, found.source, st.st_mtime_ns, st.st_size, now_ns)
            return False
        size, overlap = chunking or self._chunking()
        chunks = chunk_text(data.decode("utf-8", errors="replace"), size, overlap)
        index.replace_file(conn, found.source, found.owner, st.st_mtime_ns, st.st_size, digest, now_ns, chunks)
        return True

    def _walk(self) -> Iterator[_Found]:
        """Every indexable markdown file under home (no symlinks followed, EXCLUDED_DIRS skipped)."""
        pending = [self.home]
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                log.warning("memory reindex: skipping %s: %s", directory, exc)
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if not (directory == self.home and entry.name in EXCLUDED_DIRS):
                        pending.append(Path(entry.path))
                elif entry.name.endswith(".md") and entry.is_file(follow_symlinks=False):
                    identity = index_identity(self.home, Path(entry.path))
                    if identity is not None:
                        st = entry.stat(follow_symlinks=False)
                        yield _Found(Path(entry.path), *identity, st.st_mtime_ns, st.st_size)

    def _chunking(self) -> tuple[int, int]:
        settings = self.settings()
        return max(1, settings.chunk_size), max(0, settings.chunk_overlap)


def _read(path: Path) -> tuple[os.stat_result, bytes] | None:
    """A regular file's stat and content; None when it is gone or not a regular file."""
    try:
        st = os.lstat(path)
        return (st, path.read_bytes()) if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        return None


def _stats(files: int, indexed: int, removed: int, indexed_bytes: int) -> dict:
    return {"files": files, "indexed": indexed, "unchanged": files - indexed, "removed": removed,
            "bytes": indexed_bytes}


def _unchanged(record: FileRecord | None, found: _Found) -> bool:
    return (record is not None and record.owner == found.owner and record.mtime_ns == found.mtime_ns
            and record.size == found.size and found.mtime_ns < record.indexed_ns - RACY_WINDOW_NS)


def _recent_dailies(directory: str) -> list[tuple[str, str]]:
    """(name, path) of the MAX_DAILY_FILES last daily logs (`*.md` files, by name) in `directory`:
    plain strings, read on every chat (a Path per file cost more than its read from the cache)."""
    with os.scandir(directory) as entries:
        names = sorted((e.name for e in entries if e.name.endswith(".md") and e.is_file()), reverse=True)
    return [(name, os.path.join(directory, name)) for name in names[:MAX_DAILY_FILES]]


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _chunking_key(chunking: tuple[int, int]) -> str:
    return f"{chunking[0]}/{chunking[1]}"


def _report(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _role_and_text(message) -> tuple[str, str]:
    if isinstance(message, dict):
        return message.get("role", ""), message.get("content") or message.get("text") or ""
    role, text = message
    return role, text


def cap_bytes(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes of `text`, cut on a character boundary."""
    return text.encode("utf-8")[:max(0, limit)].decode("utf-8", errors="ignore")


def _section(label: str, content: str) -> str:
    return f"--- {label} ---\n{content}"


@contextmanager
def _file_errors() -> Iterator[None]:
    """A name that collides with a directory (or a file used as one) is the caller's mistake."""
    try:
        yield
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        raise MemoryPathError(f"File path is not usable: {exc.strerror}") from exc


