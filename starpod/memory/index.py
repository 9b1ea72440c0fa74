"""The full-text index in its own SQLite file `<home>/db/memory.db` (FTS5, porter stemming).

Tables
- `files`: one row per indexed markdown file — source key, owner, and the stat signature and
  digest it was indexed from (what makes reindex incremental).
- `memory_fts`: the chunks; columns `source, chunk_text, line_start, line_end` are indexed (as in
  the reference) and `owner` (`""` = shared, else the user id) is stored unindexed to filter
  results by space.  A chunk's rowid is `file_id << 32 | chunk number`, so a file's chunks are one
  rowid range to delete; a file gets a new id whenever its content is re-indexed from scratch, so
  rowid order is the order in which files last changed (a file that only grew, like a daily log,
  keeps its id and gets its new chunks appended).

Search cost grows with the number of matching chunks (bm25 is computed for every match), so a
query matching more than RANK_CAP chunks ranks only the RANK_CAP most recently changed ones: a
broad query stays fast on a large index and favours recent material, as temporal decay does.
- `meta`: schema version and the chunk parameters the index was built with.

WAL mode and a busy timeout let several worker processes read and write at once; writers take
the write lock up front (`BEGIN IMMEDIATE`) so a transaction never fails half-way on a busy lock.
Connections are pooled per process; each is used by one thread/greenlet at a time.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..lockwait import retry_while_locked
from .chunker import Chunk

SCHEMA_VERSION = "3"
ROWID_SHIFT = 32
MAX_IDLE_CONNECTIONS = 8
RANK_CAP = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    indexed_ns INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(
    source, chunk_text, line_start, line_end, owner UNINDEXED, tokenize = 'porter'
);
"""
TABLES = ("meta", "files", "memory_fts")


@dataclass(frozen=True)
class FileRecord:
    id: int
    source: str
    owner: str
    mtime_ns: int
    size: int
    digest: str
    indexed_ns: int


class MemoryIndex:
    def __init__(self, path: Path):
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        # No SQLite busy timeout (it sleeps in C, freezing a gevent worker): lock waits are
        # cooperative retries (lockwait), here and on BEGIN IMMEDIATE.
        conn = sqlite3.connect(str(self.path), timeout=0, isolation_level=None, check_same_thread=False)
        try:
            retry_while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self) -> None:
        """Create the tables; an index of another schema version is dropped (reindex rebuilds it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as conn:
            if _schema_version(conn) != SCHEMA_VERSION:
                for table in TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in _statements(SCHEMA):
                    conn.execute(statement)
                self.set_meta(conn, "schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.rollback()
            with self._lock:
                keep = not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database write lock from its first statement."""
        with self.connection() as conn:
            retry_while_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.connection() as conn:
            return self.read_meta(conn, key)

    @staticmethod
    def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # --- files -----------------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        with self.connection() as conn:
            rows = conn.execute("SELECT id, source, owner, mtime_ns, size, digest, indexed_ns FROM files")
            return {row[1]: FileRecord(*row) for row in rows}

    @staticmethod
    def replace_file(conn: sqlite3.Connection, source: str, owner: str, mtime_ns: int, size: int,
                     digest: str, indexed_ns: int, chunks: Iterable[Chunk]) -> None:
        """Replace every chunk of `source` (inside the caller's transaction) under a new file id."""
        MemoryIndex.remove_file(conn, source)
        file_id = conn.execute(
            "INSERT INTO files (source, owner, mtime_ns, size, digest, indexed_ns) VALUES (?, ?, ?, ?, ?, ?)",
            (source, owner, mtime_ns, size, digest, indexed_ns)).lastrowid
        _insert_chunks(conn, file_id, 0, source, owner, chunks)

    @staticmethod
    def chunk_spans(conn: sqlite3.Connection, file_id: int) -> list[tuple[int, int, int]]:
        """(chunk number, line_start, line_end) of a file's chunks, in order."""
        base = file_id << ROWID_SHIFT
        rows = conn.execute("SELECT rowid, line_start, line_end FROM memory_fts WHERE rowid >= ? AND rowid < ? "
                            "ORDER BY rowid", (base, base + (1 << ROWID_SHIFT)))
        return [(rowid - base, int(start), int(end)) for rowid, start, end in rows]

    @staticmethod
    def extend_file(conn: sqlite3.Connection, record: FileRecord, keep: int, mtime_ns: int, size: int,
                    digest: str, indexed_ns: int, chunks: Iterable[Chunk]) -> None:
        """Keep a file's first `keep` chunks, replace the rest with `chunks` and record its new state."""
        _delete_chunks(conn, record.id, keep)
        _insert_chunks(conn, record.id, keep, record.source, record.owner, chunks)
        conn.execute("UPDATE files SET mtime_ns = ?, size = ?, digest = ?, indexed_ns = ? WHERE id = ?",
                     (mtime_ns, size, digest, indexed_ns, record.id))

    @staticmethod
    def file_record(conn: sqlite3.Connection, source: str) -> FileRecord | None:
        row = conn.execute("SELECT id, source, owner, mtime_ns, size, digest, indexed_ns FROM files WHERE source = ?",
                           (source,)).fetchone()
        return FileRecord(*row) if row else None

    @staticmethod
    def touch_file(conn: sqlite3.Connection, source: str, mtime_ns: int, size: int, indexed_ns: int) -> None:
        """Record a new stat signature for a file whose content did not change."""
        conn.execute("UPDATE files SET mtime_ns = ?, size = ?, indexed_ns = ? WHERE source = ?",
                     (mtime_ns, size, indexed_ns, source))

    @staticmethod
    def remove_file(conn: sqlite3.Connection, source: str) -> None:
        row = conn.execute("SELECT id FROM files WHERE source = ?", (source,)).fetchone()
        if row:
            _delete_chunks(conn, row[0])
            conn.execute("DELETE FROM files WHERE id = ?", (row[0],))

    @staticmethod
    def clear(conn: sqlite3.Connection) -> None:
        """Empty the index; recreating the FTS table is much faster than deleting every row."""
        conn.execute("DROP TABLE memory_fts")
        conn.execute(next(s for s in _statements(SCHEMA) if "memory_fts" in s))
        conn.execute("DELETE FROM files")

    # --- search ----------------------------------------------------------------------------

    def search(self, match: str, owners: tuple[str, ...], fetch: int) -> list[tuple]:
        """(source, chunk_text, line_start, line_end, rank) rows, best bm25 first, of the given owners."""
        marks = ", ".join("?" for _ in owners)
        with self.connection() as conn:
            bound = conn.execute("SELECT rowid FROM memory_fts WHERE memory_fts MATCH ? "
                                 "ORDER BY rowid DESC LIMIT 1 OFFSET ?", (match, RANK_CAP)).fetchone()
            return conn.execute(
                "SELECT source, chunk_text, line_start, line_end, rank FROM memory_fts "
                f"WHERE memory_fts MATCH ? AND rowid > ? AND owner IN ({marks}) ORDER BY rank LIMIT ?",
                (match, bound[0] if bound else -1, *owners, fetch)).fetchall()

    def chunk_count(self) -> int:
        with self.connection() as conn:
            return conn.execute("SELECT count(*) FROM memory_fts").fetchone()[0]


def _schema_version(conn: sqlite3.Connection) -> str | None:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return row[0] if row else None


def _delete_chunks(conn: sqlite3.Connection, file_id: int, keep: int = 0) -> None:
    base = file_id << ROWID_SHIFT
    conn.execute("DELETE FROM memory_fts WHERE rowid >= ? AND rowid < ?", (base + keep, base + (1 << ROWID_SHIFT)))


def _insert_chunks(conn: sqlite3.Connection, file_id: int, first: int, source: str, owner: str,
                   chunks: Iterable[Chunk]) -> None:
    base = (file_id << ROWID_SHIFT) + first
    conn.executemany(
        "INSERT INTO memory_fts (rowid, source, chunk_text, line_start, line_end, owner) VALUES (?, ?, ?, ?, ?, ?)",
        ((base + n, source, c.text, c.line_start, c.line_end, owner) for n, c in enumerate(chunks)))


def _statements(script: str) -> list[str]:
    return [stmt.strip() for stmt in script.split(";") if stmt.strip()]
