"""Server-sent events read straight off a provider's HTTP response.

The SDKs' stream helpers decode every event line by line into objects and then validate each
event into a pydantic model: most of the CPU a streamed answer costs.  The providers send the
request through their SDK and read the answer here instead: the WHATWG event-stream format
(LF, CRLF or CR line ends, `event:` and `data:` fields, comments), data left as bytes for the
JSON parser.  `id:` and `retry:` only matter to a reconnecting browser and are ignored.
"""
from __future__ import annotations

from typing import Iterable, Iterator

Event = tuple[str | None, bytes]  # (event name or None, data lines joined by "\n")


def events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Each complete event in a stream of byte chunks, as it completes."""
    pending = b""
    name: str | None = None
    data: list[bytes] = []
    for chunk in chunks:
        pending += chunk
        if b"\r" in pending:
            pending = _normalize_line_ends(pending)
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line:
                field, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if field == b"data":
                    data.append(value)
                elif field == b"event":
                    name = value.decode("utf-8", "replace")
            elif data or name is not None:
                yield name, b"\n".join(data)
                name, data = None, []


def _normalize_line_ends(text: bytes) -> bytes:
    """CRLF and CR as LF; a CR at the very end stays (its LF may start the next chunk)."""
    held = text.endswith(b"\r")
    if held:
        text = text[:-1]
    text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text + b"\r" if held else text
