"""The memory full-text index: one interface, two engines.

`open_index(home, database_url)` picks the engine: an FTS5 index in its own SQLite file
`<home>/db/memory.db` (the default), or tables in PostgreSQL when `database_url` is a
`postgresql://` URL (`pgindex.PostgresIndex`).  Both keep the same tables, written here once:

- `memory_files`: one row per indexed markdown file — source key, owner, and the stat signature and
  digest it was indexed from (what makes reindex incremental).
- `memory_fts`: the chunks — `source, chunk_text, line_start, line_end` are searchable (as in
  the reference) and `owner` (`""` = shared, else the user id) filters results by space.  A
  chunk's rowid is `file_id << 32 | chunk number`, so a file's chunks are one rowid range to
  delete; a file gets a new id whenever its content is re-indexed from scratch, so rowid order is
  the order in which files last changed (a file that only grew, like a daily log, keeps its id and
  gets its new chunks appended).
- `memory_meta`: schema version, the chunk parameters the index was built with, and the index's
  *generation*: a fresh random token written by every write transaction as it commits, so a
  reader that finds the token it saw before knows the index did not change in between, whichever
  process or server wrote (what the search result cache is keyed on).

An engine supplies only what differs: connecting, taking the write lock, the chunk table's DDL,
how a plain-text query matches and ranks, and how a chunk row is written.  SQL here uses `?`
placeholders (the PostgreSQL connection translates them).

Search cost grows with the number of matching chunks (every match is ranked), so a query matching
more than RANK_CAP chunks ranks only the RANK_CAP most recently changed ones: a broad query stays
fast on a large index and favours recent material, as temporal decay does.

Writers take the whole index's write lock up front, so a transaction never fails half-way on a
busy lock and whichever process indexes a file last indexes what is on disk now.  Connections are
pooled per process; each is used by one thread/greenlet at a time.
"""
from __future__ import annotations

import functools
import logging
import os
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..filelock import exclusive
from ..lockwait import retry_while_locked
from ..walcheckpoint import Checkpointer, disable_automatic
from .chunker import Chunk
from .scoring import fts_query

log = logging.getLogger(__name__)

SCHEMA_VERSION = "4"
ROWID_SHIFT = 32
MAX_IDLE_CONNECTIONS = 8
RANK_CAP = 10_000
MAX_SEGMENTS = 8  # FTS5 b-trees an index may hold before `compact` merges them
MERGE_PAGES = 500
GENERATION = "generation"  # memory_meta key of the token every write transaction replaces

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memory_files (
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
TABLES = ("memory_meta", "memory_files", "memory_fts")
FILE_COLUMNS = "id, source, owner, mtime_ns, size, digest, indexed_ns"


@dataclass(frozen=True)
class FileRecord:
    id: int
    source: str
    owner: str
    mtime_ns: int
    size: int
    digest: str
    indexed_ns: int


class MemoryIndex(ABC):
    """The engine-independent part of the index; subclasses fill in the class attributes and hooks."""

    SCHEMA: str                 # DDL creating the tables (statements separated by ";")
    MATCH_SQL: str              # WHERE condition matching one bound query
    RANK_SQL: str               # rank expression (lower is better); may bind the query once more
    RANK_BINDS_QUERY: bool
    READ_SNAPSHOT_SQL: str      # starts a transaction whose reads all see one snapshot
    # (rowid, chunk_text, line_start, line_end) of chunks, completed by " IN (<rowids>)"
    CHUNK_ROWS_SQL = "SELECT rowid, chunk_text, line_start, line_end FROM memory_fts WHERE rowid"
    OBSOLETE_TABLES: tuple[str, ...] = ()  # tables of older schema versions, dropped on upgrade
    # The tables that the file and chunk writes below go to: a rebuild aside (PostgreSQL) writes
    # to others; searches always read the live ones.
    files_table = "memory_files"
    chunks_table = "memory_fts"
    MAX_OPEN_CONNECTIONS: int | None = None  # per process, None: unbounded; more callers wait their turn
    # A full rebuild: False, in place (`clear`, then files indexed as by any reindex); True, aside
    # by the engine's `rebuild()`, so that searches meanwhile see the whole old index.
    REBUILDS_ASIDE = False

    def __init__(self) -> None:
        self._idle: list = []
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._slots = self._new_slots()

    def _new_slots(self) -> threading.BoundedSemaphore | None:
        return threading.BoundedSemaphore(self.MAX_OPEN_CONNECTIONS) if self.MAX_OPEN_CONNECTIONS else None

    # --- engine hooks ------------------------------------------------------------------------

    @abstractmethod
    def _connect(self):
        """A new connection whose `execute`/`executemany` take `?` placeholders."""

    @abstractmethod
    def _begin_write(self, conn, bulk: bool) -> None:
        """Start a transaction that holds the index's write lock from its first statement; `bulk`:
        one of a reindex's, which a crash may lose (the next reindex redoes it)."""

    @abstractmethod
    def _has_table(self, conn, name: str) -> bool:
        """Whether the index's table `name` exists."""

    def _create_storage(self) -> None:
        """Whatever must exist before the tables can be created (a directory, a search config)."""

    def _clear_chunks(self, conn) -> None:
        """Delete every chunk (inside the caller's transaction), the engine's fastest way; a full
        rebuild follows, which ends with `compact`."""
        conn.execute(f"DELETE FROM {self.chunks_table}")

    @abstractmethod
    def match_query(self, text: str) -> str:
        """Plain user text → the engine's query; "" when it can match nothing."""

    def compact(self, changed: int, total: int) -> None:
        """Tidy the index after a reindex that wrote or removed `changed` of `total` files, so that
        searches stay fast; engines that need no upkeep do nothing."""

    @abstractmethod
    def _write_chunks(self, conn, rows: list[tuple[int, str, str, int, int, str]]) -> None:
        """Insert chunk rows (rowid, source, chunk_text, line_start, line_end, owner)."""

    @abstractmethod
    def reindex_lock(self):
        """A context manager held by a whole reindex, so one walks the tree at a time."""

    def _committed(self) -> None:
        """After a write transaction committed: upkeep of the engine's log, if it needs any."""

    def _reusable(self, conn) -> bool:
        """Whether a connection may go back to the pool (not broken)."""
        return True

    # --- connections -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the tables; an index of another schema version is dropped (reindex rebuilds it)."""
        self._create_storage()
        with self.transaction() as conn:
            if self._schema_version(conn) != SCHEMA_VERSION:
                for table in (*TABLES, *self.OBSOLETE_TABLES):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in _statements(self.SCHEMA):
                    conn.execute(statement)
                self.set_meta(conn, "schema_version", SCHEMA_VERSION)

    def _schema_version(self, conn) -> str | None:
        return self.read_meta(conn, "schema_version") if self._has_table(conn, "memory_meta") else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextmanager
    def connection(self) -> Iterator:
        with self._lock:
            if self._pid != os.getpid():  # inherited over a fork: the parent's connections are not ours
                self._idle, self._pid, self._slots = [], os.getpid(), self._new_slots()
            slots = self._slots
        with slots if slots is not None else nullcontext():
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            finally:
                self._give_back(conn)

    def _give_back(self, conn) -> None:
        """Back to the idle connections, or closed (broken, too many idle, or the index closed)."""
        keep = False
        try:
            if conn.in_transaction:
                conn.rollback()
            with self._lock:
                keep = (not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS
                        and self._reusable(conn))
                if keep:
                    self._idle.append(conn)
        finally:
            if not keep:
                conn.close()

    @contextmanager
    def transaction(self, bulk: bool = False) -> Iterator:
        """A write transaction holding the index's write lock from its first statement (`bulk`:
        see `_begin_write`); it commits a new generation with whatever it wrote."""
        with self.connection() as conn:
            self._begin_write(conn, bulk)
            try:
                yield conn
                self.new_generation(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._committed()

    # --- meta ------------------------------------------------------------------------------

    def new_generation(self, conn) -> None:
        """Mark what `conn`'s transaction writes as a new state of the index (before its commit)."""
        self.set_meta(conn, GENERATION, secrets.token_hex(8))

    def get_meta(self, key: str) -> str | None:
        with self.connection() as conn:
            return self.read_meta(conn, key)

    @staticmethod
    def read_meta(conn, key: str) -> str | None:
        row = conn.execute("SELECT value FROM memory_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @classmethod
    def generation(cls, conn) -> str | None:
        """The token of the index's last committed write (None before the first)."""
        return cls.read_meta(conn, GENERATION)

    @staticmethod
    def set_meta(conn, key: str, value: str) -> None:
        conn.execute("INSERT INTO memory_meta (key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # --- files -----------------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        with self.connection() as conn:
            return self.read_files(conn)

    def read_files(self, conn) -> dict[str, FileRecord]:
        rows = conn.execute(f"SELECT {FILE_COLUMNS} FROM {self.files_table}").fetchall()
        return {row[1]: FileRecord(*row) for row in rows}

    def replace_file(self, conn, source: str, owner: str, mtime_ns: int, size: int,
                     digest: str, indexed_ns: int, chunks: Iterable[Chunk]) -> None:
        """Replace every chunk of `source` (inside the caller's transaction) under a new file id."""
        self.remove_file(conn, source)
        file_id = conn.execute(
            f"INSERT INTO {self.files_table} (source, owner, mtime_ns, size, digest, indexed_ns) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id", (source, owner, mtime_ns, size, digest, indexed_ns)).fetchone()[0]
        self._insert_chunks(conn, file_id, 0, source, owner, chunks)

    def chunk_spans(self, conn, file_id: int) -> list[tuple[int, int, int]]:
        """(chunk number, line_start, line_end) of a file's chunks, in order."""
        base = file_id << ROWID_SHIFT
        rows = conn.execute(f"SELECT rowid, line_start, line_end FROM {self.chunks_table} "
                            "WHERE rowid >= ? AND rowid < ? ORDER BY rowid", (base, base + (1 << ROWID_SHIFT))).fetchall()
        return [(rowid - base, int(start), int(end)) for rowid, start, end in rows]

    def extend_file(self, conn, record: FileRecord, keep: int, mtime_ns: int, size: int,
                    digest: str, indexed_ns: int, chunks: Iterable[Chunk]) -> None:
        """Keep a file's first `keep` chunks, replace the rest with `chunks` and record its new state."""
        self._delete_chunks(conn, record.id, keep)
        self._insert_chunks(conn, record.id, keep, record.source, record.owner, chunks)
        conn.execute(f"UPDATE {self.files_table} SET mtime_ns = ?, size = ?, digest = ?, indexed_ns = ? WHERE id = ?",
                     (mtime_ns, size, digest, indexed_ns, record.id))

    def file_record(self, conn, source: str) -> FileRecord | None:
        row = conn.execute(f"SELECT {FILE_COLUMNS} FROM {self.files_table} WHERE source = ?", (source,)).fetchone()
        return FileRecord(*row) if row else None

    def touch_file(self, conn, source: str, mtime_ns: int, size: int, indexed_ns: int) -> None:
        """Record a new stat signature for a file whose content did not change."""
        conn.execute(f"UPDATE {self.files_table} SET mtime_ns = ?, size = ?, indexed_ns = ? WHERE source = ?",
                     (mtime_ns, size, indexed_ns, source))

    def remove_file(self, conn, source: str) -> None:
        row = conn.execute(f"SELECT id FROM {self.files_table} WHERE source = ?", (source,)).fetchone()
        if row:
            self._delete_chunks(conn, row[0])
            conn.execute(f"DELETE FROM {self.files_table} WHERE id = ?", (row[0],))

    def clear(self, conn) -> None:
        """Empty the index (inside the caller's transaction)."""
        self._clear_chunks(conn)
        conn.execute(f"DELETE FROM {self.files_table}")

    def _delete_chunks(self, conn, file_id: int, keep: int = 0) -> None:
        """Delete a file's chunks from its `keep`-th on."""
        base = file_id << ROWID_SHIFT
        conn.execute(f"DELETE FROM {self.chunks_table} WHERE rowid >= ? AND rowid < ?",
                     (base + keep, base + (1 << ROWID_SHIFT)))

    def _insert_chunks(self, conn, file_id: int, first: int, source: str, owner: str,
                       chunks: Iterable[Chunk]) -> None:
        rows = chunk_rows(file_id, first, source, owner, chunks)
        if rows:
            self._write_chunks(conn, rows)

    # --- search ----------------------------------------------------------------------------

    @contextmanager
    def reading(self, conn) -> Iterator[str | None]:
        """A read transaction on `conn`: its statements inside all read one state of the index,
        whose generation it yields."""
        conn.execute(self.READ_SNAPSHOT_SQL)
        yield self.generation(conn)
        conn.execute("COMMIT")

    def ranked(self, conn, text: str, owners: tuple[str, ...], fetch: int) -> list[tuple[int, str, float]]:
        """(chunk rowid, source, rank) of the best `fetch` matches of plain-text `text` in the files
        of `owners`, best (lowest) rank first.  Reads no chunk text: a chunk's file (its owner and
        source) is the high half of its rowid, so only the chunks finally shown are read, by
        `chunks`, on the same snapshot (`reading`)."""
        match = self.match_query(text)
        if not match:
            return []
        rank_binds = (match,) if self.RANK_BINDS_QUERY else ()
        return conn.execute(self._ranked_sql(len(owners)),
                            (*owners, *rank_binds, match, RANK_CAP, fetch)).fetchall()

    @classmethod
    @functools.cache
    def _ranked_sql(cls, owner_count: int) -> str:
        """One statement matching once: the RANK_CAP most recent matches (the match walks rowids
        backwards), each ranked only when its file belongs to one of the owners; ties go to the
        older chunk."""
        marks = ", ".join("?" for _ in range(owner_count))
        return ("SELECT rowid, source, score FROM ("
                "SELECT memory_fts.rowid AS rowid, f.source AS source, "
                f"CASE WHEN f.owner IN ({marks}) THEN {cls.RANK_SQL} END AS score FROM memory_fts "
                f"JOIN memory_files f ON f.id = (memory_fts.rowid >> {ROWID_SHIFT}) "
                f"WHERE {cls.MATCH_SQL} ORDER BY memory_fts.rowid DESC LIMIT ?) "
                "WHERE score IS NOT NULL ORDER BY score, rowid LIMIT ?")

    def chunks(self, conn, rowids: list[int]) -> dict[int, tuple[str, int, int]]:
        """rowid → (chunk_text, line_start, line_end) of the given chunks."""
        if not rowids:
            return {}
        rows = conn.execute(f"{self.CHUNK_ROWS_SQL} IN ({', '.join('?' for _ in rowids)})", tuple(rowids)).fetchall()
        return {rowid: (text, int(start), int(end)) for rowid, text, start, end in rows}

    def has_tables(self) -> bool:
        with self.connection() as conn:
            return self._has_table(conn, "memory_meta")

    def chunk_count(self) -> int:
        with self.connection() as conn:
            return conn.execute("SELECT count(*) FROM memory_fts").fetchone()[0]


class SqliteIndex(MemoryIndex):
    """FTS5 with the porter tokenizer in `<home>/db/memory.db`.

    WAL mode lets several worker processes read and write at once; writers take the write lock
    with `BEGIN IMMEDIATE`, retried cooperatively (lockwait) rather than by SQLite's busy timeout.
    Under gevent, WAL checkpoints run in a native thread (walcheckpoint), as the main database's.
    """

    SCHEMA = SQLITE_SCHEMA
    MATCH_SQL = "memory_fts MATCH ?"
    # bm25 (negative, more negative is better) sorted by SQLite itself: `ORDER BY rank` would have
    # FTS5 prepare a sorting statement of its own on every query.
    RANK_SQL = "bm25(memory_fts)"
    READ_SNAPSHOT_SQL = "BEGIN"  # WAL: a read transaction keeps the snapshot of its first read
    RANK_BINDS_QUERY = False
    INSERT_CHUNK_SQL = ("INSERT INTO memory_fts (rowid, source, chunk_text, line_start, line_end, owner) "
                        "VALUES (?, ?, ?, ?, ?, ?)")
    # Chunk columns straight from FTS5's own content table (`<table>_content`: `id` = rowid, then
    # `c0`, `c1`… in column order), part of FTS5's stable on-disk format: looked up through the
    # virtual table, each row costs about twice as much (FTS5 seeks the same table through a
    # statement of its own per row).
    CHUNK_ROWS_SQL = "SELECT id, c1, c2, c3 FROM memory_fts_content WHERE id"
    OBSOLETE_TABLES = ("meta", "files")  # version 3 (the file holds nothing but the index)

    def __init__(self, path: Path, lock_path: Path):
        super().__init__()
        self.path = path
        self.lock_path = lock_path
        self.checkpoints = Checkpointer(str(path))

    def _connect(self) -> sqlite3.Connection:
        # No SQLite busy timeout (it sleeps in C, freezing a gevent worker): lock waits are
        # cooperative retries (lockwait), here and on BEGIN IMMEDIATE.
        conn = sqlite3.connect(str(self.path), timeout=0, isolation_level=None, check_same_thread=False)
        try:
            retry_while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
            disable_automatic(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_storage(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _committed(self) -> None:
        self.checkpoints.wrote()

    def _begin_write(self, conn, bulk: bool) -> None:
        retry_while_locked(lambda: conn.execute("BEGIN IMMEDIATE"))

    def _write_chunks(self, conn, rows: list[tuple[int, str, str, int, int, str]]) -> None:
        conn.executemany(self.INSERT_CHUNK_SQL, rows)

    def _has_table(self, conn, name: str) -> bool:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None

    def _clear_chunks(self, conn) -> None:
        # Recreating the FTS table is much faster than deleting every row.
        conn.execute("DROP TABLE memory_fts")
        conn.execute(next(s for s in _statements(self.SCHEMA) if "memory_fts" in s))

    def match_query(self, text: str) -> str:
        return fts_query(text)

    def compact(self, changed: int, total: int) -> None:
        """Merge the index's b-trees into one once writes left more than MAX_SEGMENTS.

        Every query term is looked up in each b-tree (FTS5 adds one per write transaction and only
        merges groups of them by level), so a 100k-chunk index built file by file answers a
        selective search in about 40 % less time merged.  The merge runs as FTS5's incremental
        'merge' command, MERGE_PAGES pages per write transaction, yielding between them.
        """
        with self.connection() as conn:
            if conn.execute("SELECT count(DISTINCT segid) FROM memory_fts_idx").fetchone()[0] <= MAX_SEGMENTS:
                return
        log.info("memory index: merging its b-trees")
        while True:
            with self.transaction() as conn:
                changes = conn.total_changes
                conn.execute("INSERT INTO memory_fts (memory_fts, rank) VALUES ('merge', ?)", (-MERGE_PAGES,))
                merged = conn.total_changes - changes >= 2  # FTS5: fewer changes means nothing left
            if not merged:
                return
            time.sleep(0)  # let other greenlets run between merge steps

    @contextmanager
    def reindex_lock(self) -> Iterator[None]:
        with exclusive(self.lock_path):
            yield


def open_index(home: Path, database_url: str | None = None) -> MemoryIndex:
    """The index for data directory `home`: in PostgreSQL for a `postgresql://` URL, else SQLite."""
    if database_url and database_url.split(":", 1)[0] in ("postgresql", "postgres"):
        from .pgindex import PostgresIndex
        return PostgresIndex(database_url)
    return SqliteIndex(home / "db" / "memory.db", home / "db" / "memory.lock")


def chunk_rows(file_id: int, first: int, source: str, owner: str,
               chunks: Iterable[Chunk]) -> list[tuple[int, str, str, int, int, str]]:
    """The rows (rowid, source, chunk_text, line_start, line_end, owner) of a file's chunks, the
    first being its chunk number `first`."""
    base = (file_id << ROWID_SHIFT) + first
    return [(base + n, source, c.text, c.line_start, c.line_end, owner) for n, c in enumerate(chunks)]


def _statements(script: str) -> list[str]:
    return [stmt.strip() for stmt in script.split(";") if stmt.strip()]
