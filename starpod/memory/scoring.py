"""Ranking helpers: plain-text queries for FTS5 and temporal decay of daily logs (spec §1.7)."""
from __future__ import annotations

import functools
import math
import re
from datetime import date

from .paths import space_relative

EVERGREEN = frozenset({"SOUL.md", "USER.md", "MEMORY.md", "HEARTBEAT.md"})
DEFAULT_FACTOR = 0.8
DEFAULT_HALF_LIFE = 30.0
_DAILY_RE = re.compile(r"^memory/(\d{4})-(\d{2})-(\d{2})\.md$")


def fts_query(text: str) -> str:
    """Plain user text → an FTS5 expression: every whitespace-separated term quoted, implicit AND.

    Quoting makes operators, apostrophes, hyphens and column prefixes plain words, so no input is
    a syntax error; a term with no word characters becomes an empty phrase that matches nothing.
    NUL (which ends an FTS5 string) and unpaired surrogates (not encodable) are dropped first.
    """
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")
    return " ".join('"' + term.replace('"', '""') + '"' for term in text.split())


@functools.lru_cache(maxsize=4096)  # every search hit asks; the same files keep coming back
def decay_factor(source: str, half_life_days: float, today: date) -> float:
    """1.0 for evergreen files, halving per `half_life_days` for dated daily logs, 0.8 otherwise.

    Files in a user's space decay like the same name in the shared space.
    """
    name = space_relative(source)
    if name in EVERGREEN:
        return 1.0
    match = _DAILY_RE.match(name)
    if not match:
        return DEFAULT_FACTOR
    try:
        day = date(*(int(part) for part in match.groups()))
    except ValueError:
        return DEFAULT_FACTOR
    if not (half_life_days > 0 and math.isfinite(half_life_days)):
        half_life_days = DEFAULT_HALF_LIFE
    age = max(0, (today - day).days)
    return 0.5 ** (age / half_life_days)


def apply_decay(rank: float, factor: float) -> float:
    """bm25 ranks are negative (lower = better); a factor < 1 moves a rank towards 0."""
    return rank * factor if factor > 0 else rank
