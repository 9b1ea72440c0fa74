"""The body of a provider's streamed HTTP/1.1 response, read below httpx's per-chunk layers.

httpx hands every chunk of a body up through eight generators (decoders, byte chunker, the
transport's exception mapping, the pool's and the connection's streams), three context managers
and h11's parser, which builds, validates and state-checks an event per chunk.  In an event stream
every chunk is one small event, so all that costs several times the event itself.
`body_chunks(response)` reads a chunked body off the connection's socket and decodes the chunked
coding itself (`ChunkedBody`), with httpx's exceptions and the request's read timeout (or none,
for a caller that closes the response at a deadline of its own), yielding once per read.  At the
end it hands h11 the end of the message it saw the start of, so the connection goes back to the
pool as httpcore would leave it (keep-alive holds).  Any other response (a content-encoded or
unchunked body, HTTP/2, a proxy tunnel, another transport) is read with `iter_bytes()`.
"""
from __future__ import annotations

import re
import socket
from typing import Iterator

import h11
import httpcore2
from httpcore2._backends.sync import SyncStream
from httpcore2._sync.http11 import HTTP11Connection, HTTP11ConnectionByteStream
from httpx2._transports.default import map_httpcore_exceptions

READ_BYTES = 64 * 1024
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,20}")
BLANK_LINE = re.compile(rb"\n\r?\n")


def body_chunks(response, read_timeout: bool = True) -> Iterator[bytes]:
    """The bytes of a streamed httpx response's body as they arrive (content-decoded).

    `read_timeout=False`: reads off the socket wait without the request's read timeout, for a
    caller that closes the response at its deadline instead (under gevent a timeout is a timer
    started and stopped for every read that waits: as much CPU as decoding the chunk)."""
    stream = _connection_stream(response)
    if stream is None:
        return response.iter_bytes()
    timeout = stream._request.extensions.get("timeout", {}).get("read") if read_timeout else None
    return _read(stream._connection, timeout)


def _connection_stream(response) -> HTTP11ConnectionByteStream | None:
    """The HTTP/1.1 connection stream under `response`, when its body may be read off the socket."""
    headers = response.headers
    if (headers.get("content-encoding", "identity") != "identity"
            or headers.get("transfer-encoding", "").lower() != "chunked"
            or response.is_stream_consumed or response.request.method == "HEAD"):
        return None
    stream = response.stream
    for attribute in ("_stream", "_httpcore_stream", "_stream"):  # httpx's bound and mapped streams, the pool's
        stream = getattr(stream, attribute, None)
    if not isinstance(stream, HTTP11ConnectionByteStream) or not isinstance(stream._connection, HTTP11Connection):
        return None
    connection = stream._connection
    if type(connection._network_stream) is not SyncStream or connection._h11_state.their_state is not h11.SEND_BODY:
        return None
    return stream


def _read(connection: HTTP11Connection, timeout: float | None) -> Iterator[bytes]:
    parser = connection._h11_state
    sock = connection._network_stream.get_extra_info("socket")
    body = ChunkedBody()
    early, _ = parser.trailing_data  # what came with the headers, still in h11's buffer
    with map_httpcore_exceptions():
        try:
            sock.settimeout(timeout)
            data = body.feed(early)
            rest = body.rest()  # what ends the message for a parser that saw only `early`
            if data:
                yield data
            while not body.done:
                received = sock.recv(READ_BYTES)
                if not received:
                    raise httpcore2.RemoteProtocolError(
                        "peer closed connection without sending complete message body (incomplete chunked read)")
                data = body.feed(received)
                if data:
                    yield data
        except socket.timeout as exc:
            raise httpcore2.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore2.ReadError(str(exc)) from exc
    if rest is not None and not body.overrun:
        _end_message(parser, rest)


def _end_message(parser: h11.Connection, rest: bytes) -> None:
    """Let h11 parse the message to its end, from its buffered start plus `rest`, so that httpcore
    finds it complete when the response closes and keeps the connection.  Should that fail, h11 is
    left mid-message and httpcore closes the connection instead (nothing else is lost)."""
    try:
        if rest:
            parser.receive_data(rest)
        event = parser.next_event()
        while type(event) is h11.Data:
            event = parser.next_event()
    except h11.RemoteProtocolError:
        pass


class ChunkedBody:
    """The chunked transfer coding (RFC 9112 §7.1) decoded as bytes arrive, accepting what h11
    accepts (chunk extensions and trailer fields are skipped)."""

    def __init__(self):
        self._pending = b""      # a chunk header, a chunk's CRLF or trailer lines not yet complete
        self._left = 0           # bytes of the current chunk's data still to come
        self._crlf = False       # the CRLF closing a chunk's data is next
        self._trailer = False    # the last chunk came: trailer lines up to a blank line are next
        self.done = False
        self.overrun = False     # bytes came after the end of the body

    def feed(self, data: bytes) -> bytes:
        """The chunk data in `data`, the bytes that followed those of earlier calls."""
        buffer = self._pending + data if self._pending else data
        size, position, out = len(buffer), 0, []
        while position < size:
            if self._left:
                end = min(position + self._left, size)
                out.append(buffer[position:end])
                self._left -= end - position
                self._crlf = not self._left
                position = end
            elif self._crlf:
                if size - position < 2:
                    break
                if buffer[position:position + 2] != b"\r\n":
                    raise httpcore2.RemoteProtocolError("malformed chunk footer")
                self._crlf = False
                position += 2
            elif self._trailer:
                end = self._trailer_end(buffer, position)
                if end is None:
                    break
                self.done, self.overrun = True, end < size
                position = size
            else:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    break
                self._left = chunk_size(buffer[position:line_end])
                self._trailer = not self._left
                position = line_end + 2
        self._pending = buffer[position:]
        return out[0] if len(out) == 1 else b"".join(out)

    @staticmethod
    def _trailer_end(buffer: bytes, position: int) -> int | None:
        """Where the trailer section starting at `position` ends (after its blank line), if it does."""
        if buffer.startswith(b"\r\n", position):
            return position + 2
        if buffer.startswith(b"\n", position):
            return position + 1
        blank = BLANK_LINE.search(buffer, position)
        return blank.end() if blank else None

    def rest(self) -> bytes | None:
        """Bytes that complete the body after what was fed so far (chunk data as zeros), for
        another parser that saw the same bytes; None when the bytes so far cannot be completed."""
        pending = self._pending
        if self.done:
            return b""
        if self._trailer:
            if pending == b"" or pending.endswith(b"\n"):
                return b"\r\n"
            if pending == b"\r" or pending.endswith(b"\n\r"):  # the blank line has begun
                return b"\n"
            # in the middle of a trailer field, which would have to be completed as a valid one
            return b"\n\r\n" if pending.endswith(b"\r") else None
        if self._left:
            return bytes(self._left) + b"\r\n0\r\n\r\n"
        if self._crlf:
            return b"\r\n"[len(pending):] + b"0\r\n\r\n"
        if not pending:
            return b"0\r\n\r\n"
        header = pending[:-1] if pending.endswith(b"\r") else pending
        try:
            size = chunk_size(header)
        except httpcore2.RemoteProtocolError:
            return None
        line_end = b"\n" if pending.endswith(b"\r") else b"\r\n"
        return line_end + (bytes(size) + b"\r\n0\r\n\r\n" if size else b"\r\n")


def chunk_size(header: bytes) -> int:
    """The size a chunk header line (without its CRLF) announces: hex digits, then optionally
    `;extensions` and whitespace."""
    digits = header.split(b";", 1)[0].rstrip(b" \t")
    if not CHUNK_SIZE.fullmatch(digits):
        raise httpcore2.RemoteProtocolError(f"illegal chunk header: {header!r}")
    return int(digits, 16)
