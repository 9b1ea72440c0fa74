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

psycopg 3 is used directly: one connection per greenlet at a time from a small, bounded
per-process pool; its waits use select/poll, which gevent patches.  The write lock is a
transaction-scoped advisory lock, the reindex lock a session-scoped one (`locks.advisory_lock`, on
a connection of its own, outside the bounded pool), so both hold across servers.
"""
from __future__ import annotations

import re
import unicodedata
from contextlib import contextmanager
from typing import Iterable, Iterator

from ..locks import advisory_lock
from . import index
from .index import MemoryIndex
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

SCHEMA = f"""
DROP TEXT SEARCH CONFIGURATION IF EXISTS {SEARCH_CONFIG};
DROP TEXT SEARCH DICTIONARY IF EXISTS {SEARCH_CONFIG}_stem;
CREATE TEXT SEARCH DICTIONARY {SEARCH_CONFIG}_stem (TEMPLATE = snowball, LANGUAGE = english);
CREATE TEXT SEARCH CONFIGURATION {SEARCH_CONFIG} (COPY = english);
ALTER TEXT SEARCH CONFIGURATION {SEARCH_CONFIG}
    ALTER MAPPING FOR asciiword, word, asciihword, hword, hword_asciipart, hword_part WITH {SEARCH_CONFIG}_stem;
CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
{";".join(STORAGE)};
{GIN_INDEX_SQL}
"""

COPY_CHUNKS_SQL = "COPY memory_fts (rowid, source, chunk_text, line_start, line_end, owner, tsv) FROM STDIN"

_TOKEN = re.compile(r"[^\W_]+")
_ASCII_WORDS = bytes(code | 0x20 if chr(code).isalpha() else code if chr(code).isdigit() else 0x20
                     for code in range(128)) + b" " * 128
_QUERY = f"to_tsquery('{SEARCH_CONFIG}', ?)"


class PostgresIndex(MemoryIndex):
    SCHEMA = SCHEMA
    MATCH_SQL = f"tsv @@ {_QUERY}"
    RANK_SQL = f"-ts_rank_cd(tsv, {_QUERY}, 1)"  # 1: divided by 1 + log(length), as bm25 favours short chunks
    RANK_BINDS_QUERY = True
    READ_SNAPSHOT_SQL = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
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
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
        if bulk:  # no wait for the WAL flush at commit
            conn.execute("SET LOCAL synchronous_commit = off")

    def _has_table(self, conn: "PgConnection", name: str) -> bool:
        return conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]

    def _clear_chunks(self, conn: "PgConnection") -> None:
        # Building the GIN index once over every row (compact) costs half of updating it row by row.
        conn.execute(f"DROP INDEX IF EXISTS {GIN_INDEX}")
        conn.execute("TRUNCATE memory_fts")

    def match_query(self, text: str) -> str:
        """Every whitespace-separated term → a phrase of its tokens; terms joined by AND."""
        phrases = [" <-> ".join(f"'{token}'" for token in tokens)
                   for tokens in map(tokenize, text.split()) if tokens]
        return " & ".join(f"({phrase})" for phrase in phrases)

    def ranked(self, conn: "PgConnection", text: str, owners: tuple[str, ...], fetch: int) -> list[tuple[int, str, float]]:
        """As `MemoryIndex.ranked`, in one statement.  For a broad query the planner walks the
        primary key backwards, checking the match row by row, so it reads only the RANK_CAP most
        recent matches and ranks those; for a selective one it takes the GIN index (it knows which
        from the statistics)."""
        match = self.match_query(text)
        if not match:
            return []
        marks = ", ".join("?" for _ in owners)
        return conn.execute(
            "SELECT rowid, source, score FROM ("
            f"SELECT rowid, source, owner, {self.RANK_SQL} AS score FROM memory_fts "
            f"WHERE {self.MATCH_SQL} ORDER BY rowid DESC LIMIT ?) AS recent "
            f"WHERE owner IN ({marks}) ORDER BY score LIMIT ?",
            (match, match, index.RANK_CAP, *owners, fetch),
            prepare=False).fetchall()  # a prepared, generic plan could not tell broad terms from selective

    def compact(self, changed: int, total: int) -> None:
        """After a reindex: the GIN index built again when a full rebuild dropped it (searches in
        the meantime scan the table, so they are slower but see what is indexed so far); after one
        that changed more than autovacuum's analyze threshold (10 %), statistics for the planner's
        choice above and the GIN index's pending entries merged (every search would otherwise scan
        them)."""
        with self.connection() as conn:
            if not self._has_table(conn, GIN_INDEX):
                conn.execute("BEGIN")
                conn.execute(f"SET LOCAL maintenance_work_mem = '{GIN_BUILD_MEMORY}'")
                conn.execute(GIN_INDEX_SQL)
                conn.execute("COMMIT")
            if changed > total // 10:
                conn.execute("ANALYZE memory_fts")
                conn.execute(f"SELECT gin_clean_pending_list('{GIN_INDEX}')")

    def _write_chunks(self, conn: "PgConnection", rows: list[tuple[int, str, str, int, int, str]]) -> None:
        """COPY the rows in, each with its tsvector built by the lexicon (pgtsvector)."""
        rows = [(rowid, source, text.replace("\x00", "\ufffd"), start, end, owner)  # text cannot hold NUL
                for rowid, source, text, start, end, owner in rows]
        # All four columns are searchable, as in the FTS5 table.
        tokens = [_indexed_tokens(f"{source} {text} {start} {end}") for _, source, text, start, end, _ in rows]
        self.lexicon.learn(conn.raw, tokens)
        conn.copy(COPY_CHUNKS_SQL, ((*row, self.lexicon.tsvector(chunk)) for row, chunk in zip(rows, tokens)))

    @contextmanager
    def reindex_lock(self) -> Iterator[None]:
        with advisory_lock(REINDEX_LOCK, self._connect_raw):
            yield


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


def _indexed_tokens(text: str) -> list[str]:
    """The tokens of `text` that are indexed: those of its first MAX_INDEXED_CHARS, space-separated."""
    tokens = tokenize(text)
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
