"""The HTTP/1.1 transport under the provider SDKs' HTTP client: keep-alive sockets pooled per
origin, each request written in one piece, its response head parsed here; a chunked body (every
event stream) is decoded here too, a Content-Length or until-close one read by the standard
library's `http.client.HTTPResponse`.

The SDKs still build and send every request (headers, auth, endpoint, timeouts, status errors)
through their `httpx2` client; only the wire work below it is done here.  httpx2's default
transport (httpcore2 + h11) spent more CPU per provider call than everything else a chat does
around it, and this does the same exchange for a fraction of that.

Semantics kept from httpcore2: the request's `timeout` extension (connect, then read/write per
socket operation), idle connections closed after `KEEPALIVE_EXPIRY` and checked before reuse (a
server that closed one makes it readable), the SDK's TCP keep-alive options, and failures raised
as the `httpx2` errors the SDKs turn into their connection and timeout errors.  Proxies from the
environment stay with httpx2's own transports (its client mounts them over this one).
"""
from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

import httpx2

from ..concurrency import gevent_active, readable_now

KEEPALIVE_EXPIRY = 5.0       # httpx2's default: idle connections older than this are not reused
MAX_IDLE_PER_ORIGIN = 100    # the SDKs' max_keepalive_connections
READ_SIZE = 65536
# No Nagle delay on small writes (as httpcore2), and the SDKs' own keep-alive probes: notice a
# dead peer on a long-idle or long-streaming connection.
SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)] + [
    (socket.IPPROTO_TCP, getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5)) if hasattr(socket, name)]
_NOT_IN_HEADERS = re.compile(rb"[\r\n\0]")
MAX_LINE = 65536     # http.client's limits on a response head: bytes per line
MAX_HEADERS = 100    # and header fields
# A header line: its name and its value without surrounding blanks.
_FIELD = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[^\r\n\0]*[^ \t\r\n\0])?)[ \t]*\r?\n",
                    re.MULTILINE)
_FOLD = re.compile(rb"[ \t]*\r?\n[ \t]+")
_FRAMING = (b"transfer-encoding", b"content-length", b"connection")
_STATUS = re.compile(rb"HTTP/1\.([0-9]) ([1-9][0-9]{2})(?: ([^\r\n\0]*?))?[ \t]*\r?\n")
_END_OF_HEAD = (b"\r\n", b"\n")
# A chunk's size line (RFC 9112 §7.1): hexadecimal digits, then extensions (ignored); after the
# CRLF that ends the data of the chunk before.  The trailers after the last chunk end with a blank line.
_CHUNK_HEAD = re.compile(rb"(?:\r\n)?([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
_END_OF_TRAILERS = re.compile(rb"\r?\n")
_NO_BODY = (204, 304)


class _Connection:
    """One keep-alive socket to an origin, and when it went idle."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.idle_since = 0.0

    @classmethod
    def open(cls, scheme: str, host: str, port: int, timeout: float | None,
             ssl_context: ssl.SSLContext | None) -> "_Connection":
        sock = socket.create_connection((host, port), timeout)
        try:
            for option in SOCKET_OPTIONS:
                sock.setsockopt(*option)
            if scheme == "https":
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def send(self, request: httpx2.Request, read_timeout: float | None) -> None:
        """The request's head and body in one write (two would wait on each other's ACK)."""
        self.sock.settimeout(read_timeout)
        self.sock.sendall(_head(request) + request.read())

    def reusable(self) -> bool:
        return time.monotonic() - self.idle_since < KEEPALIVE_EXPIRY and not readable_now(self.sock.fileno())

    def close(self) -> None:
        """Close at once; a greenlet blocked reading from it wakes up to the end of its data."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _head(request: httpx2.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if _NOT_IN_HEADERS.search(name) or _NOT_IN_HEADERS.search(value):
            raise httpx2.LocalProtocolError(f"illegal header {name!r}", request=request)
        lines.append(b"%s: %s" % (name, value))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


class _Response(http.client.HTTPResponse):
    """A response whose head is parsed here; a body that is not chunked is read by `http.client`
    (a chunked one by `_Body`, with `dechunked`).

    `http.client` runs every header block through the `email` package, which cost more CPU than
    the rest of a provider call's wire work.  `headers` is the list of raw (name, value) pairs;
    the framing follows RFC 9112 as h11 (httpx2's own parser) does.
    """

    def begin(self) -> None:
        minor, status, reason = _status_line(self.fp)
        while status < 200:  # interim answers (100 Continue, 103 Early Hints) before the real one
            _fields(self.fp)
            minor, status, reason = _status_line(self.fp)
        self.code = self.status = status
        self.reason = reason.decode("latin-1")
        self.version = 11 if minor else 10
        self.headers = self.msg = _fields(self.fp)
        framing = _framing(self.headers)
        codings, lengths = framing[b"transfer-encoding"], set(framing[b"content-length"])
        self.chunked, self.chunk_left, self.length = bool(codings) and codings[-1] == b"chunked", None, None
        if status in _NO_BODY or self._method == "HEAD":
            self.chunked, self.length = False, 0
        elif lengths and not codings:  # a Transfer-Encoding overrides any Content-Length
            length = lengths.pop()
            if lengths or not length.isdigit():  # several differing ones would be a guess
                raise http.client.HTTPException(f"bad Content-Length: {sorted(lengths | {length})}")
            self.length = int(length)
        # HTTP/1.0 connections are not reused (as h11), nor those whose body ends with the connection
        self.will_close = (not minor or b"close" in framing[b"connection"]
                           or (not self.chunked and self.length is None))


def _line(fp) -> bytes:
    line = fp.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("response head line")
    return line


def _status_line(fp) -> tuple[int, int, bytes]:
    """The HTTP/1 minor version, status code and reason phrase of the next status line."""
    line = _line(fp)
    if not line:
        raise http.client.RemoteDisconnected("Remote end closed connection without response")
    match = _STATUS.fullmatch(line)
    if match is None:
        raise http.client.BadStatusLine(repr(line))
    return int(match[1]), int(match[2]), match[3] or b""


def _fields(fp) -> list[tuple[bytes, bytes]]:
    """The header fields up to the blank line that ends a head; a folded line (obs-fold) joins
    the one before with a space.  One regular expression over the whole block costs a fraction
    of a Python step per line."""
    lines = []
    while (line := _line(fp)) not in _END_OF_HEAD:
        if not line:
            raise http.client.HTTPException("connection closed in the middle of the response head")
        if len(lines) == MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        lines.append(line)
    block = b"".join(lines)
    if b"\n " in block or b"\n\t" in block:
        block = _FOLD.sub(b" ", block)
    fields = _FIELD.findall(block)
    if len(fields) != block.count(b"\n"):  # a line that is no field (each match is a whole line)
        bad = next((line for line in block.splitlines(keepends=True) if not _FIELD.fullmatch(line)), block)
        raise http.client.HTTPException(f"bad response header line {bad[:100]!r}")
    return fields


def _framing(fields: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """The lower-cased comma-separated items of the fields that frame a body and its connection."""
    framing: dict[bytes, list[bytes]] = {name: [] for name in _FRAMING}
    for name, value in fields:
        if (name := name.lower()) in framing:
            framing[name].extend(item.strip(b" \t").lower() for item in value.split(b",") if item.strip(b" \t"))
    return framing


@contextmanager
def _mapped(request: httpx2.Request, timeout: type[httpx2.TimeoutException],
            failure: type[httpx2.TransportError]) -> Iterator[None]:
    """Socket and protocol failures as the httpx2 errors its own transport raises."""
    try:
        yield
    except socket.timeout as exc:
        raise timeout(str(exc) or "timed out", request=request) from exc
    except (http.client.HTTPException, ssl.SSLError) as exc:
        raise (httpx2.RemoteProtocolError if isinstance(exc, http.client.HTTPException) else failure)(
            str(exc) or type(exc).__name__, request=request) from exc
    except OSError as exc:
        raise failure(str(exc) or type(exc).__name__, request=request) from exc


def dechunked(read: Callable[[], bytes]) -> Iterator[bytes]:
    """The data of a chunked body (RFC 9112 §7.1) as `read` gives its bytes: each time, the data of
    every chunk those bytes complete or continue, in one piece.  Unlike http.client's decoder (a
    line read, a data read and a CRLF read per chunk) it takes a whole read at once: a stream of
    small events, each its own chunk, costs one read and one pattern match per event."""
    unparsed = b""  # the start of a size line (or of the CRLF before it) not complete yet
    left = 0        # data bytes still to come of a chunk whose start was given
    while more := read():
        pieces: list[bytes] = []
        if left:
            piece = more[:left]
            pieces.append(piece)
            left -= len(piece)
            more = more[len(piece):]
        data = unparsed + more if unparsed else more
        position, end = 0, len(data)
        while not left and (head := _CHUNK_HEAD.match(data, position)):
            start = head.end()
            stop = start + int(head[1], 16)
            if stop == start:  # the last chunk: the body ends after its trailers
                yield from _data_before_trailers(b"".join(pieces), data[start:], read)
                return
            if stop > end:
                left = stop - end
                stop = end
            pieces.append(data[start:stop])
            position = stop
        unparsed = data[position:] if position < end else b""
        if len(unparsed) > 2 and not left:
            _check_chunk_head(unparsed)
        elif unparsed == b"\r\n":  # a chunk's end: the next size line may come without it
            unparsed = b""
        if data := pieces[0] if len(pieces) == 1 else b"".join(pieces):
            yield data
    raise http.client.IncompleteRead(b"")


def _data_before_trailers(data: bytes, trailers: bytes, read: Callable[[], bytes]) -> Iterator[bytes]:
    """`data` (if any), once the trailer lines that follow the last chunk have ended with a blank one."""
    while not (_END_OF_TRAILERS.match(trailers) or b"\n\r\n" in trailers or b"\n\n" in trailers):
        if len(trailers) > MAX_LINE * 4:
            raise http.client.LineTooLong("trailers")
        more = read()
        if not more:
            raise http.client.IncompleteRead(b"")
        trailers += more
    if data:
        yield data


def _check_chunk_head(unparsed: bytes) -> None:
    """Bytes where a chunk's size line should start: wrong if they hold a whole line that is none,
    or more than a line may."""
    line_end = unparsed.find(b"\n", 2 if unparsed.startswith(b"\r\n") else 0)
    if line_end >= 0:
        raise http.client.HTTPException(f"bad chunk size line {unparsed[:min(line_end, 100)]!r}")
    if len(unparsed) > MAX_LINE:
        raise http.client.LineTooLong("chunk size line")


class _IdleLimit:
    """The read timeout of a response body under gevent: one event-loop timer per body, checked
    against the time of the last read when it fires, instead of the timer gevent arms and cancels
    around every read of a socket that has a timeout (for a stream of small events, more CPU than
    the read).  A read that waited `seconds` has `expire` called (from a greenlet of its own)."""

    def __init__(self, seconds: float, expire: Callable[[], None]):
        import gevent

        self.seconds, self.expire, self._spawn = seconds, expire, gevent.spawn
        self._loop = gevent.get_hub().loop
        self.last_read = time.monotonic()
        self.expired = False
        self._arm(seconds)

    def _arm(self, seconds: float) -> None:
        self._timer = self._loop.timer(seconds)
        self._timer.start(self._check)

    def _check(self) -> None:
        waited = time.monotonic() - self.last_read
        if waited < self.seconds:
            self._timer.close()
            self._arm(self.seconds - waited)
            return
        self.expired = True
        self._spawn(self.expire)

    def cancel(self) -> None:
        self._timer.close()


class _Readable:
    """Waiting for a socket to become readable under gevent, on one event-loop watcher for the
    whole body.  A read straight after one that drained the socket would only fail (EAGAIN, for
    TLS SSLWantReadError) and wait anyway: a failed call and an exception per streamed event.
    Closing the socket wakes the waiter (gevent wakes every watcher of a closing descriptor, TLS
    or not), whose read then fails."""

    def __init__(self, fileno: int, tls: ssl.SSLSocket | None):
        import gevent

        self._hub = gevent.get_hub()
        self._fileno, self._tls = fileno, tls
        self._watcher = self._hub.loop.io(fileno, 1)

    @classmethod
    def of(cls, sock: socket.socket) -> "_Readable | None":
        """One for a socket of gevent's (TCP or TLS); None for any other, whose reads wait by themselves."""
        import gevent.socket
        import gevent.ssl

        if type(sock) is gevent.ssl.SSLSocket:
            return cls(sock.fileno(), sock)
        return cls(sock.fileno(), None) if type(sock) is gevent.socket.socket else None

    def wait(self) -> None:
        """Until the socket has something to read.  A TLS read gives one record at most, so a short
        one does not tell the socket is drained: it is not waited for while it holds decrypted
        bytes (which the kernel no longer has) or the kernel has some.  (A readable socket with
        only part of a record is no harm: gevent's TLS read waits for the rest itself.)"""
        if self._tls is not None and (self._tls.pending() or readable_now(self._fileno)):
            return
        self._hub.wait(self._watcher)

    def close(self) -> None:
        self._watcher.close()


class _Body(httpx2.SyncByteStream):
    """A response body read as it arrives; a fully read one gives its connection back to the pool.
    A chunked one (every event stream) is read straight from the socket and decoded here."""

    def __init__(self, transport: "PooledTransport", key: tuple, connection: _Connection,
                 response: _Response, request: httpx2.Request):
        self.transport, self.key, self.connection = transport, key, connection
        self.response, self.request = response, request
        self.done = self.complete = False
        self._head_reader_drained = False
        self._idle_limit: _IdleLimit | None = None
        self._readable: _Readable | None = None  # under gevent, once the head's reader is drained
        self._drained = False  # the last read took all the socket had (was shorter than asked; TLS: _Readable.wait)

    def __iter__(self) -> Iterator[bytes]:
        try:
            with _mapped(self.request, httpx2.ReadTimeout, httpx2.ReadError):
                if self.response.chunked:
                    yield from dechunked(self._read)
                else:
                    while chunk := self.response.read1(READ_SIZE):
                        yield chunk
        except (AttributeError, ValueError, httpx2.TransportError) as exc:
            if self._idle_limit is not None and self._idle_limit.expired:
                raise httpx2.ReadTimeout("timed out", request=self.request) from exc
            if not self.done:
                raise
            raise self._closed() from exc  # the response was closed meanwhile (dropped its file, cut its data)
        finally:
            self._stop_idle_limit()
            if self._readable is not None:  # (not in close(): a reader waiting on it would never wake)
                self._readable.close()
        if self.done:  # an end of data that closing it (the call's deadline) caused is no end
            raise self._closed()
        if self.response.length:  # http.client ends a cut Content-Length body quietly
            raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body",
                                             request=self.request)
        self.complete = True
        self.response.close()  # its buffered reader: the socket stays open for the next request

    def _read(self) -> bytes:
        """The next bytes of a chunked body: first what the head's reader buffered past the head,
        then straight from the socket (under gevent without a timeout of its own: `_IdleLimit`)."""
        sock = self.connection.sock
        if self._head_reader_drained:
            if self._drained and self._readable is not None:
                self._readable.wait()
            data = sock.recv(READ_SIZE)
            self._drained = len(data) < READ_SIZE
            if self._idle_limit is not None:
                self._idle_limit.last_read = time.monotonic()
            return data
        self._head_reader_drained = True  # READ_SIZE is more than it buffers: read1 gives it all
        if gevent_active():
            self._readable = _Readable.of(sock)
            timeout = sock.gettimeout()
            if timeout:
                self._idle_limit = _IdleLimit(timeout, self._cut)
                sock.settimeout(None)  # the next request sets its own
        data = self.response.fp.read1(READ_SIZE)
        self._drained = bool(data)  # what the head's reader held came in with the head: the rest is later
        return data

    def _cut(self) -> None:
        """A read waited past the read timeout: close the connection (its reader wakes up to fail),
        unless the body was read to its end meanwhile."""
        if not self.complete and not self.done:
            self.connection.close()

    def _stop_idle_limit(self) -> None:
        if self._idle_limit is not None:
            self._idle_limit.cancel()

    def _closed(self) -> httpx2.ReadError:
        return httpx2.ReadError("the response was closed while it was read", request=self.request)

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        self._stop_idle_limit()
        if self.complete and not self.response.will_close:
            self.transport.release(self.key, self.connection)
        else:
            self.connection.close()
            self.response.close()


class PooledTransport(httpx2.BaseTransport):
    """Keep-alive HTTP/1.1 connections per (scheme, host, port), shared by the greenlets of a worker."""

    def __init__(self):
        self._idle: dict[tuple, deque[_Connection]] = {}
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        connection = self._connection(key, request, timeouts.get("connect"))
        try:
            with _mapped(request, httpx2.WriteTimeout, httpx2.WriteError):
                connection.send(request, timeouts.get("read"))
            with _mapped(request, httpx2.ReadTimeout, httpx2.ReadError):
                response = _Response(connection.sock, method=request.method)
                response.begin()
        except BaseException:
            connection.close()
            raise
        return httpx2.Response(response.status, headers=response.headers,
                               stream=_Body(self, key, connection, response, request),
                               extensions={"http_version": b"HTTP/1.1",
                                           "reason_phrase": response.reason.encode("latin-1")})

    def _connection(self, key: tuple, request: httpx2.Request, connect_timeout: float | None) -> _Connection:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if connection.reusable():
                    return connection
                connection.close()
        with _mapped(request, httpx2.ConnectTimeout, httpx2.ConnectError):
            return _Connection.open(*key, connect_timeout, self._tls() if key[0] == "https" else None)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx2.create_ssl_context()
        return self._ssl_context

    def release(self, key: tuple, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(key, deque())
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            pools, self._idle = self._idle, {}
        for idle in pools.values():
            for connection in idle:
                connection.close()
