"""The memory index in PostgreSQL (selected by `DATABASE_URL=postgresql://…`).

Same tables as the SQLite index (see `index.py`), in the connection's current schema (the URL
may choose it with `options=-csearch_path=…`) next to the relational tables, whose names they do
not share.  `memory_fts` is a plain table whose `tsvector` column has a GIN index and stays in the
row (STORAGE); ranking is `ts_rank_cd` (negated, so lower is better as with bm25) and temporal
decay is applied by the store exactly as for SQLite.

To search like FTS5's `porter` tokenizer (unicode61 + Porter stemming), text is tokenized here,
not by PostgreSQL's parser (which keeps `knowledge/rust.md` or `foo-bar` whole): a token is a run
of letters and digits, lower-cased, with diacritics removed from Latin letters.  The tokens are
then stemmed by the `starpod_english` search configuration — PostgreSQL's Snowball English
stemmer without a stop-word list, since FTS5 drops no words; a chunk's `tsvector` is built from
them in Python exactly as `to_tsvector` would (pgtsvector) and written with COPY.  A query is every
whitespace-separated term as a phrase of its tokens, all terms required; being built from tokens
only, it can never be a syntax error.

A full reindex builds new tables aside in one transaction and swaps them in at its end (`Rebuild`),
so searches on any server see the whole old index until then, and a rebuild cut short leaves it
as it was.

psycopg 3 is used directly: one connection per greenlet at a time from a small, bounded
per-process pool; its waits use select/poll, which gevent patches.  The write lock is a
transaction-scoped advisory lock, the reindex lock a session-scoped one (`locks.advisory_lock`, on
a connection of its own, outside the bounded pool), so both hold across servers.
"""
from __future__ import annotations

import copy
import re
import unicodedata
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from ..locks import advisory_lock
from . import index
from .chunker import Chunk
from .index import FILE_COLUMNS, MemoryIndex, _statements, chunk_rows
from .pgtsvector import Lexicon

SEARCH_CONFIG = "starpod_english"
WRITE_LOCK_KEY = 0x5350_4D45_4D57_5249   # pg_advisory_xact_lock key of index writes
REINDEX_LOCK = "memory:reindex"
CONNECT_TIMEOUT_SECS = 30
# A tsvector is at most 1 MiB; only this much of a chunk's tokens is indexed (a default chunk is
# 1600 bytes, so only a giant single-line chunk is ever cut).
MAX_INDEXED_CHARS = 256 * 1024

# How memory_fts keeps its rows (migration 0014 applies it to older tables): a search reads each
# candidate's tsvector, so it stays in the row, uncompressed up to TOAST_TUPLE_TARGET bytes a row,
# while the chunk text (read only for the results) moves out of line.  In the default layout
# both were compressed or out of line, and reading the tsvector dominated a broad search.
TOAST_TUPLE_TARGET = 4096
STORAGE = (f"ALTER TABLE memory_fts SET (toast_tuple_target = {TOAST_TUPLE_TARGET})",
           "ALTER TABLE memory_fts ALTER COLUMN tsv SET STORAGE MAIN",
           "ALTER TABLE memory_fts ALTER COLUMN chunk_text SET STORAGE EXTERNAL")

GIN_INDEX = "memory_fts_tsv"
GIN_INDEX_SQL = f"CREATE INDEX IF NOT EXISTS {GIN_INDEX} ON memory_fts USING GIN (tsv)"
GIN_BUILD_MEMORY = "256MB"   # maintenance_work_mem of a build: fewer, larger merges
# A full rebuild writes tables named with this prefix (their indexes and sequence get it too),
# which replace the live ones when it commits.
ASIDE = "next_"
SEND_CHUNKS = 1000   # chunks a rebuild tokenizes and sends at a time

TABLES_DDL = """
CREATE TABLE IF NOT EXISTS memory_files (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    size BIGINT NOT NULL,
    digest TEXT NOT NULL,
    indexed_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS memory_fts (
    rowid BIGINT PRIMARY KEY,
    source TEXT NOT NULL,
    chunk_text TEXT NOT NULL,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    owner TEXT NOT NULL,
    tsv TSVECTOR NOT NULL
);
""" + ";".join(STORAGE)

SCHEMA = f"""
DROP TEXT SEARCH CONFIGURATION IF EXISTS {SEARCH_CONFIG};
DROP TEXT SEARCH DICTIONARY IF EXISTS {SEARCH_CONFIG}_stem;
CREATE TEXT SEARCH DICTIONARY {SEARCH_CONFIG}_stem (TEMPLATE = snowball, LANGUAGE = english);
CREATE TEXT SEARCH CONFIGURATION {SEARCH_CONFIG} (COPY = english);
ALTER TEXT SEARCH CONFIGURATION {SEARCH_CONFIG}
    ALTER MAPPING FOR asciiword, word, asciihword, hword, hword_asciipart, hword_part WITH {SEARCH_CONFIG}_stem;
CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{TABLES_DDL};
{GIN_INDEX_SQL}
"""

_TOKEN = re.compile(r"[^\W_]+")
_ASCII_WORDS = bytes(code | 0x20 if chr(code).isalpha() else code if chr(code).isdigit() else 0x20
                     for code in range(128)) + b" " * 128
_QUERY = f"to_tsquery('{SEARCH_CONFIG}', ?)"


class PostgresIndex(MemoryIndex):
    SCHEMA = SCHEMA
    REBUILDS_ASIDE = True
    MATCH_SQL = f"tsv @@ {_QUERY}"
    RANK_SQL = f"-ts_rank_cd(tsv, {_QUERY}, 1)"  # 1: divided by 1 + log(length), as bm25 favours short chunks
    RANK_BINDS_QUERY = True
    # The table locked before the snapshot is taken (LOCK TABLE takes none): a search that waits
    # for a rebuild's swap then reads the new tables on a snapshot that sees their rows.
    READ_SNAPSHOT_SQL = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; LOCK TABLE memory_fts IN ACCESS SHARE MODE"
    # Writers queue for one advisory lock anyway; a few connections per process keep a server's
    # share of PostgreSQL's max_connections small next to the relational pool.
    MAX_OPEN_CONNECTIONS = 2

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.lexicon = Lexicon(SEARCH_CONFIG)

    def _connect(self) -> "PgConnection":
        return PgConnection(self._connect_raw())

    def _connect_raw(self):
        import psycopg  # imported late: after gevent's monkey-patching, so its waits cooperate

        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECS)

    def _reusable(self, conn: "PgConnection") -> bool:
        return not (conn.raw.closed or conn.raw.broken)

    def _begin_write(self, conn: "PgConnection", bulk: bool) -> None:
        # One round trip: a statement sent without parameters may be several.
        conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
                     + ("; SET LOCAL synchronous_commit = off" if bulk else ""))  # bulk: no wait for the WAL flush

    def _has_table(self, conn: "PgConnection", name: str) -> bool:
        return conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]

    def match_query(self, text: str) -> str:
        """Every whitespace-separated term → a phrase of its tokens; terms joined by AND."""
        phrases = [" <-> ".join(f"'{token}'" for token in tokens)
                   for tokens in map(tokenize, text.split()) if tokens]
        return " & ".join(f"({phrase})" for phrase in phrases)

    def ranked(self, conn: "PgConnection", text: str, owners: tuple[str, ...], fetch: int) -> list[tuple[int, str, float]]:
        """As `MemoryIndex.ranked`, in one statement.  For a broad query the planner walks the
        primary key backwards, checking the match row by row, so it reads only the RANK_CAP most
        recent matches, and ranks those of the owners' files (the others' rank is never used);
        for a selective one it takes the GIN index (it knows which from the statistics)."""
        match = self.match_query(text)
        if not match:
            return []
        marks = ", ".join("?" for _ in owners)
        return conn.execute(
            "SELECT rowid, source, score FROM ("
            f"SELECT rowid, source, CASE WHEN owner IN ({marks}) THEN {self.RANK_SQL} END AS score "
            f"FROM memory_fts WHERE {self.MATCH_SQL} ORDER BY rowid DESC LIMIT ?) AS recent "
            "WHERE score IS NOT NULL ORDER BY score LIMIT ?",
            (*owners, match, match, index.RANK_CAP, fetch),
            prepare=False).fetchall()  # a prepared, generic plan could not tell broad terms from selective

    def compact(self, changed: int, total: int) -> None:
        """After a reindex that changed more than autovacuum's analyze threshold (10 %): statistics
        for the planner's choice above and the GIN index's pending entries merged (every search
        would otherwise scan them)."""
        with self.connection() as conn:
            if changed > total // 10:
                conn.execute("ANALYZE memory_fts")
                conn.execute(f"SELECT gin_clean_pending_list('{GIN_INDEX}')")

    def _write_chunks(self, conn: "PgConnection", rows: list[tuple[int, str, str, int, int, str]]) -> None:
        """COPY the rows in, each with its tsvector built by the lexicon (pgtsvector)."""
        rows, tokens = _indexed(rows)
        vectors = self.lexicon.tsvectors(tokens, lambda unknown: self.lexicon.learn(conn.raw, unknown))
        conn.copy(self.copy_chunks_sql(), ((*row, vector) for row, vector in zip(rows, vectors)))

    def copy_chunks_sql(self) -> str:
        return f"COPY {self.chunks_table} (rowid, source, chunk_text, line_start, line_end, owner, tsv) FROM STDIN"

    @contextmanager
    def reindex_lock(self) -> Iterator[None]:
        with advisory_lock(REINDEX_LOCK, self._connect_raw):
            yield

    @contextmanager
    def rebuild(self, chunking_key: str,
                catch_up: Callable[["PgConnection", PostgresIndex], int]) -> Iterator["Rebuild"]:
        """A full rebuild (see `Rebuild`) on a connection of its own, outside the bounded pool:
        files `add`ed in the body, then at its end the new tables made live, with the chunking
        recorded as `chunking_key`.  Cut short (an error, a crash), it leaves nothing behind."""
        conn = PgConnection(self._connect_raw())
        try:
            conn.execute("BEGIN")
            conn.execute("SET LOCAL synchronous_commit = off")
            for statement in _statements(TABLES_DDL.replace("memory_", f"{ASIDE}memory_")):
                conn.execute(statement)
            aside = copy.copy(self)  # the same engine (pool, lexicon) writing to the tables aside
            aside.files_table, aside.chunks_table = f"{ASIDE}memory_files", f"{ASIDE}memory_fts"
            with conn.raw.cursor() as cursor, cursor.copy(aside.copy_chunks_sql()) as chunk_copy:
                build = Rebuild(aside, chunk_copy)
                yield build
                build.send()
            build.finish(conn, chunking_key, catch_up)
        finally:
            conn.close()  # rolls back whatever was not committed


class Rebuild:
    """A full rebuild: every file written to tables aside in one transaction, while searches and
    writes use the live tables, which `finish` replaces in the same transaction; so every search
    sees either the whole old index or the whole new one.

    The chunk rows stream in one COPY while files are read (file ids are counted here: the table
    is new), so that PostgreSQL works on them meanwhile; the GIN index is built once over all of
    them (half the cost of updating it row by row); then, holding the write lock, whatever writers
    changed since the files were read (in the live tables, about to be dropped) is indexed again
    by `catch_up`."""

    def __init__(self, index: PostgresIndex, chunk_copy):
        self.index, self.copy = index, chunk_copy
        self.caught_up = 0  # files `catch_up` indexed again
        self._files: list[tuple] = []
        self._rows: list[tuple[int, str, str, int, int, str]] = []

    def add(self, source: str, owner: str, mtime_ns: int, size: int, digest: str, indexed_ns: int,
            chunks: list[Chunk]) -> None:
        file_id = len(self._files) + 1
        self._files.append((file_id, source, owner, mtime_ns, size, digest, indexed_ns))
        self._rows += chunk_rows(file_id, 0, source, owner, chunks)
        if len(self._rows) >= SEND_CHUNKS:
            self.send()

    def send(self) -> None:
        """Send the chunks added so far, learning the tokens new to the lexicon in one query."""
        rows, tokens = _indexed(self._rows)
        self._rows = []
        for row, vector in zip(rows, self.index.lexicon.tsvectors(tokens, self._learn)):
            self.copy.write_row((*row, vector))

    def _learn(self, chunks: list[list[str]]) -> None:
        with self.index.connection() as conn:  # not this rebuild's own: it is busy with the COPY
            self.index.lexicon.learn(conn.raw, chunks)

    def finish(self, conn: "PgConnection", chunking_key: str,
               catch_up: Callable[["PgConnection", PostgresIndex], int]) -> None:
        """After the chunks' COPY: files, GIN index and statistics, catching up, the swap."""
        files, chunks = self.index.files_table, self.index.chunks_table
        conn.copy(f"COPY {files} ({FILE_COLUMNS}) FROM STDIN", self._files)
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{files}', 'id'), ?, false)", (len(self._files) + 1,))
        conn.execute(f"SET LOCAL maintenance_work_mem = '{GIN_BUILD_MEMORY}'")
        conn.execute(GIN_INDEX_SQL.replace("memory_fts", chunks))
        conn.execute(f"ANALYZE {chunks}")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
        self.caught_up = catch_up(conn, self.index)
        conn.execute("DROP TABLE memory_fts, memory_files")
        renamed = conn.execute("SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                               "AND starts_with(relname, ?)", (f"{ASIDE}memory_",)).fetchall()
        for (name,) in renamed:  # tables, their indexes and the id sequence
            conn.execute(f"ALTER TABLE {name} RENAME TO {name.removeprefix(ASIDE)}")
        self.index.set_meta(conn, "chunking", chunking_key)
        self.index.new_generation(conn)  # results cached from the old tables are retired with them
        conn.execute("COMMIT")


class PgConnection:
    """A psycopg connection (autocommit; transactions are explicit) speaking `?` placeholders."""

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, params: tuple = (), prepare: bool | None = None):
        return self.raw.execute(_placeholders(sql), params, prepare=prepare)

    def copy(self, sql: str, rows: Iterable[tuple]) -> None:
        """COPY … FROM STDIN of `rows` (sent as they come, so the server works on them meanwhile)."""
        with self.raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def rollback(self) -> None:
        if not (self.raw.closed or self.raw.broken):
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


def tokenize(text: str) -> list[str]:
    """FTS5 unicode61's tokens: runs of letters and digits, lower-cased, Latin diacritics removed."""
    if text.isascii():  # the common case, in one pass of C: letters lower-cased, all else a space
        return text.encode("ascii").translate(_ASCII_WORDS).decode("ascii").split()
    return _TOKEN.findall(_fold_latin_diacritics(text.lower()))


def _indexed(rows: list[tuple[int, str, str, int, int, str]]) -> tuple[list[tuple], list[list[str]]]:
    """The chunk rows as stored (text cannot hold NUL) and the tokens each one indexes."""
    rows = [(rowid, source, text.replace("\x00", "\ufffd"), start, end, owner)
            for rowid, source, text, start, end, owner in rows]
    # All four columns are searchable, as in the FTS5 table.
    return rows, [_indexed_tokens(f"{source} {text} {start} {end}") for _, source, text, start, end, _ in rows]


def _indexed_tokens(text: str) -> list[str]:
    """The tokens of `text` that are indexed: those of its first MAX_INDEXED_CHARS, space-separated."""
    tokens = tokenize(text)
    if text.isascii() and len(text) <= MAX_INDEXED_CHARS:  # then its tokens, space-separated, are no longer
        return tokens
    if sum(map(len, tokens)) + len(tokens) - 1 > MAX_INDEXED_CHARS:
        return " ".join(tokens)[:MAX_INDEXED_CHARS].split()
    return tokens


def _fold_latin_diacritics(text: str) -> str:
    if text.isascii():
        return text
    kept: list[str] = []
    for char in unicodedata.normalize("NFD", text):
        if unicodedata.combining(char) and kept and _is_latin(kept[-1]):
            continue
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


def _is_latin(char: str) -> bool:
    return char < "\u0250" or "\u1e00" <= char <= "\u1eff"


def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")
