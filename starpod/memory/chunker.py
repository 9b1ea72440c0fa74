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
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def chunk_text(text: str, size: int = 1600, overlap: int = 320) -> list[Chunk]:
    # size 0 would never take a line; at least one line per chunk keeps the loop finite.
    size = max(1, size)
    lines = split_lines(text)
    lengths = [len(line.encode("utf-8")) + 1 for line in lines]
    chunks: list[Chunk] = []
    n = len(lines)
    start = 0
    while start < n:
        count, end = 0, start
        while end < n and count < size:
            count += lengths[end]
            end += 1
        body = "\n".join(lines[start:end])
        if body.strip():
            chunks.append(Chunk(body, start + 1, end))
        ov_chars = ov_lines = 0
        for i in range(end - 1, start - 1, -1):
            ov_chars += lengths[i]
            ov_lines += 1
            if ov_chars >= overlap:
                break
        start = end if end - start <= ov_lines else end - ov_lines
    return chunks
