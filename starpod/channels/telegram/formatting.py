"""Turning the agent's Markdown into Telegram messages: HTML formatting and 4,096-char splitting.

Telegram counts its length limit on the visible text, so chunks are cut from the Markdown source
(markers only shrink when rendered).  Cuts prefer paragraph, then line, then word boundaries and
avoid fenced code blocks; a block too long for one message is closed and reopened around the cut.
"""
from __future__ import annotations

import html
import re

MESSAGE_LIMIT = 4096
FENCE = "```"
# Room kept for the fence closed at the end of one chunk and reopened (with its language) in the next.
FENCE_RESERVE = 32

_FENCED = re.compile(r"```([\w+-]*)\n?(.*?)(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__", re.S)
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
_PLACEHOLDER = "\x00{}\x00"


def to_html(markdown: str) -> str:
    """Telegram HTML for common Markdown: code blocks, inline code, bold, italic, strike, links,
    headings.  Everything else is escaped text."""
    protected: list[str] = []

    def protect(rendered: str) -> str:
        protected.append(rendered)
        return _PLACEHOLDER.format(len(protected) - 1)

    def fenced(match: re.Match) -> str:
        language, code = match.group(1), match.group(2).rstrip("\n")
        attr = f' class="language-{language}"' if language else ""
        return protect(f"<pre><code{attr}>{html.escape(code, quote=False)}</code></pre>")

    text = _FENCED.sub(fenced, markdown)
    text = _INLINE_CODE.sub(lambda m: protect(f"<code>{html.escape(m.group(1), quote=False)}</code>"), text)
    text = _LINK.sub(lambda m: protect(f'<a href="{html.escape(m.group(2))}">{html.escape(m.group(1), quote=False)}</a>'),
                     text)
    text = html.escape(text, quote=False)
    text = _HEADING.sub(r"<b>\1</b>", text)
    text = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", text)
    text = _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", text)
    text = _STRIKE.sub(r"<s>\1</s>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: protected[int(m.group(1))], text)


def _fence_states(text: str) -> list[str | None]:
    """For each offset of `text`: the opening fence line of the code block it lies in, or None.

    A fence line belongs to its block, except the line break after a closing fence."""
    inside: list[str | None] = [None] * (len(text) + 1)
    opener: str | None = None
    position = 0
    for line in text.splitlines(keepends=True):
        is_fence = line.lstrip().startswith(FENCE)
        if is_fence and opener is None:
            opener = line.strip()
            marks = [opener] * len(line)
        elif is_fence:
            marks = [opener] * len(line.rstrip("\n")) + [None] * (len(line) - len(line.rstrip("\n")))
            opener = None
        else:
            marks = [opener] * len(line)
        inside[position:position + len(line)] = marks
        position += len(line)
    inside[len(text)] = opener
    return inside


def _cut_point(text: str, limit: int, inside: list[str | None]) -> tuple[int, int]:
    """(end of this chunk, start of the next) for the best boundary within `limit`."""
    window = text[:limit]
    for separator in ("\n\n", "\n", " "):
        position = window.rfind(separator)
        while position > 0:
            if inside[position] is None:
                return position, position + len(separator)
            position = window.rfind(separator, 0, position)
    for separator in ("\n", " "):  # no boundary outside code: cut inside the block at a line or word
        position = window.rfind(separator)
        if position > 0:
            return position, position + len(separator)
    return limit, limit


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """`text` in order, as chunks of at most `limit` characters (none empty)."""
    chunks: list[str] = []
    reopen = ""
    remaining = text.strip()
    while remaining:
        remaining = reopen + remaining
        if len(remaining) <= limit:
            chunks.append(remaining)
            break
        inside = _fence_states(remaining)
        end, start = _cut_point(remaining, limit - FENCE_RESERVE, inside)
        chunk = remaining[:end].rstrip()
        opener = inside[end]
        if opener is not None:
            chunk += "\n" + FENCE
        reopen = opener + "\n" if opener is not None else ""
        if chunk.strip():
            chunks.append(chunk)
        remaining = remaining[start:] if opener is not None else remaining[start:].lstrip("\n")
    return chunks
