"""Chunk `tsvector`s built in Python, equal to what PostgreSQL's `to_tsvector(config, words)` makes of
the same space-separated tokens (pgindex.tokenize), at a fraction of its cost.

PostgreSQL's text parser dominated a reindex (it parses about 5 MB/s on one core), so each distinct
token is parsed once, by PostgreSQL, and remembered: `Lexicon.learn` asks for the lexemes
`to_tsvector` makes of the token alone and their positions within it (a number, like the line
numbers every chunk has, is known without asking: it is its own lexeme).  A chunk's vector is
then its tokens' lexemes at the positions `to_tsvector` counts (a token takes as many positions
as its last lexeme's; one it drops entirely, like a word over 2,047 characters, takes none).  A
space always ends one of the parser's tokens, so a token parses alone as it does among others.

The vector goes to PostgreSQL as `tsvector` input text, one `'lexeme':position` entry per token
as a rule: the input function merges repeated lexemes and caps positions at MAX_POSITION as
`to_tsvector` does, but keeps one position more per lexeme (MAXNUMPOS, not MAXNUMPOS - 1), so a
chunk with a lexeme more often than that is merged here (as is one with a token of several
lexemes, which is rare).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

MAX_POSITION = 16383        # MAXENTRYPOS - 1: later positions count as this one
MAX_POSITIONS = 255         # MAXNUMPOS - 1: positions to_tsvector keeps per lexeme
MAX_WORD_CHARS = 2047       # longer words are not indexed at all
MAX_LEARNED = 500_000       # tokens remembered per process before the lexicon starts afresh

_POSITION_TEXTS = [f"{position} " for position in range(1, MAX_POSITION + 1)]

LEXEMES_SQL = ("SELECT token, lexeme, positions FROM unnest(%s::text[]) AS token "
               "LEFT JOIN LATERAL unnest(to_tsvector(%s::regconfig, token)) ON true")


class Lexicon:
    """What `to_tsvector(config, token)` makes of each token seen so far (one per index)."""

    def __init__(self, config: str):
        self.config = config
        self._single: dict[str, str] = {}  # token → "'lexeme':" of a token that is one lexeme at position 1
        # Any other token → ((("'lexeme':", position within the token), ...), positions it takes).
        self._several: dict[str, tuple[tuple[tuple[str, int], ...], int]] = {}

    def learn(self, conn, chunks: Iterable[list[str]]) -> None:
        """Ask PostgreSQL (on `conn`, a psycopg connection) about the chunks' tokens not learned yet."""
        tokens = set().union(*chunks)
        if len(self._single) + len(self._several) + len(tokens) > MAX_LEARNED:
            self._single.clear()
            self._several.clear()
        unknown = tokens.difference(self._single).difference(self._several)
        for token in [token for token in unknown if _is_number(token)]:  # line numbers, times, dates
            self._single[token] = _entry(token)
            unknown.discard(token)
        if not unknown:
            return
        found: dict[str, list[tuple[str, int]]] = {token: [] for token in unknown}
        for token, lexeme, positions in conn.execute(LEXEMES_SQL, (list(unknown), self.config)):
            if lexeme is not None:
                found[token] += ((_entry(lexeme), position) for position in positions)
        for token, pairs in found.items():
            if len(pairs) == 1 and pairs[0][1] == 1:
                self._single[token] = pairs[0][0]
            else:
                pairs.sort(key=lambda pair: pair[1])
                self._several[token] = tuple(pairs), max((position for _, position in pairs), default=0)

    def tsvectors(self, chunks: list[list[str]], learn: Callable[[list[list[str]]], None]) -> list[str]:
        """The `tsvector` input texts of the chunks' tokens.  `learn(chunks)` (which calls `learn` on
        a connection of the caller's choice) runs once, with the chunks holding tokens not learned
        yet, if any: most tokens are known, and looking each up costs less than collecting them."""
        vectors: list[str | None] = []
        unknown: list[list[str]] = []
        for tokens in chunks:
            try:
                vectors.append(self.tsvector(tokens))
            except KeyError:  # a token not learned yet
                vectors.append(None)
                unknown.append(tokens)
        if unknown:
            learn(unknown)
        return [self.tsvector(tokens) if vector is None else vector for vector, tokens in zip(vectors, chunks)]

    def tsvector(self, tokens: list[str]) -> str:
        """The `tsvector` input text of `tokens` (every one learned, else KeyError)."""
        try:
            entries = list(map(self._single.__getitem__, tokens))
        except KeyError:  # a token of several lexemes (or one not learned: KeyError again)
            return self._merged(tokens)
        if len(entries) <= MAX_POSITIONS or max(Counter(entries).values()) <= MAX_POSITIONS:
            return _interleaved(entries)
        return self._merged(tokens)

    def _merged(self, tokens: list[str]) -> str:
        positions: dict[str, list[int]] = {}
        at = 0
        for token in tokens:
            pairs, width = self._several.get(token) or (((self._single[token], 1),), 1)
            for entry, position in pairs:
                positions.setdefault(entry, []).append(at + position)
            at += width
        return " ".join(entry + _positions(found) for entry, found in positions.items())


def _interleaved(entries: list[str]) -> str:
    """`'lexeme':1 'lexeme':2 …` of the entries, built by slice assignments (a loop per token
    would cost more than PostgreSQL's parser)."""
    count = len(entries)
    positions = _POSITION_TEXTS[:count]
    positions += [_POSITION_TEXTS[-1]] * (count - len(positions))
    text = [""] * (2 * count)
    text[0::2] = entries
    text[1::2] = positions
    return "".join(text)


def _positions(found: list[int]) -> str:
    """`to_tsvector`'s position list of a lexeme found at `found` (ascending)."""
    if found[-1] > MAX_POSITION or len(found) > MAX_POSITIONS:
        found = sorted({min(position, MAX_POSITION) for position in found})[:MAX_POSITIONS]
    return ",".join(map(str, found))


def _is_number(token: str) -> bool:
    """ASCII digits short enough to index, which `to_tsvector` keeps as they are (`simple`)."""
    return token.isascii() and token.isdigit() and len(token) <= MAX_WORD_CHARS


def _entry(lexeme: str) -> str:
    """`'lexeme':`, quoted for tsvector input (a position follows)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "':"
