"""Splitting markdown into overlapping line-based chunks (spec §1.5, exact algorithm).

Sizes are UTF-8 byte counts.  A chunk takes whole lines until it holds at least `size` bytes; the
next chunk starts far enough back to repeat at least `overlap` bytes (always at least one line when
a chunk has two or more lines).  Whitespace-only chunks are skipped but still advance.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    text: str
    line_start: int  # 1-based, inclusive
    line_end: int


def split_lines(text: str) -> list[str]:
    """Lines on `\\n`; a final newline adds no empty line; one trailing `\\r` per line is dropped."""
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if "\r" not in text:
        return lines
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def chunk_text(text: str, size: int = 1600, overlap: int = 320) -> list[Chunk]:
    return chunk_lines(split_lines(text), size, overlap)


def chunk_lines(lines: list[str], size: int, overlap: int, start: int = 0) -> list[Chunk]:
    """The chunks of `lines` from line index `start` on (0, or where an earlier chunk's successor
    begins, which is how an appended file is re-chunked from its last complete chunk)."""
    # size 0 would never take a line; at least one line per chunk keeps the loop finite.
    size = max(1, size)
    lengths = [0] * start + [len(line.encode("utf-8")) + 1 for line in lines[start:]]
    chunks: list[Chunk] = []
    n = len(lines)
    while start < n:
        count, end = 0, start
        while end < n and count < size:
            count += lengths[end]
            end += 1
        body = "\n".join(lines[start:end])
        if body.strip():
            chunks.append(Chunk(body, start + 1, end))
        start = _next_start(lengths, start, end, overlap)
    return chunks


def next_start(lines: list[str], line_start: int, line_end: int, overlap: int) -> int:
    """Line index where the chunk after the one spanning lines `line_start..line_end` begins."""
    start, end = line_start - 1, line_end
    lengths = [0] * start + [len(line.encode("utf-8")) + 1 for line in lines[start:end]]
    return _next_start(lengths, start, end, overlap)


def _next_start(lengths: list[int], start: int, end: int, overlap: int) -> int:
    ov_chars = ov_lines = 0
    for i in range(end - 1, start - 1, -1):
        ov_chars += lengths[i]
        ov_lines += 1
        if ov_chars >= overlap:
            break
    return end if end - start <= ov_lines else end - ov_lines
