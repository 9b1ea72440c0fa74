"""The HTTP/1.1 transport under the provider SDKs' HTTP client: the standard library's `http.client`
with keep-alive connections pooled per origin.

The SDKs still build and send every request (headers, auth, endpoint, timeouts, status errors)
through their `httpx2` client; only the wire work below it is done here.  httpx2's default
transport (httpcore2 + h11) spent more CPU per provider call than everything else a chat does
around it, and `http.client` parses the same exchange for a fraction of that.

Semantics kept from httpcore2: the request's `timeout` extension (connect, then read/write per
socket operation), idle connections closed after `KEEPALIVE_EXPIRY` and checked before reuse (a
server that closed one makes it readable), the SDK's TCP keep-alive options, and failures raised
as the `httpx2` errors the SDKs turn into their connection and timeout errors.  Proxies from the
environment stay with httpx2's own transports (its client mounts them over this one).
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

import httpx2
from gevent.monkey import get_original

KEEPALIVE_EXPIRY = 5.0       # httpx2's default: idle connections older than this are not reused
MAX_IDLE_PER_ORIGIN = 100    # the SDKs' max_keepalive_connections
READ_SIZE = 65536
# The SDKs' own socket options: notice a dead peer on a long-idle or long-streaming connection.
SOCKET_OPTIONS = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)] + [
    (socket.IPPROTO_TCP, getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5)) if hasattr(socket, name)]
# The real poll, not gevent's: a zero-timeout look at an idle socket must not switch greenlets.
_poll = get_original("select", "poll")


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: EOF or stray bytes, either way unusable."""
    poller = _poll()
    poller.register(sock.fileno(), 0x001)  # POLLIN
    return bool(poller.poll(0))


class _Connection:
    """One `http.client` connection and when it went idle."""

    def __init__(self, scheme: str, host: str, port: int, ssl_context: ssl.SSLContext | None):
        if scheme == "https":
            self.http = http.client.HTTPSConnection(host, port, context=ssl_context)
        else:
            self.http = http.client.HTTPConnection(host, port)
        self.idle_since = 0.0

    def open(self, connect_timeout: float | None) -> None:
        self.http.timeout = connect_timeout
        self.http.connect()
        for option in SOCKET_OPTIONS:
            self.http.sock.setsockopt(*option)

    def reusable(self) -> bool:
        sock = self.http.sock
        return (sock is not None and time.monotonic() - self.idle_since < KEEPALIVE_EXPIRY
                and not _readable(sock))

    def close(self) -> None:
        self.http.close()


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


class _Body(httpx2.SyncByteStream):
    """A response body read as it arrives; a fully read one gives its connection back to the pool."""

    def __init__(self, transport: "PooledTransport", key: tuple, connection: _Connection,
                 response: http.client.HTTPResponse, request: httpx2.Request):
        self.transport, self.key, self.connection = transport, key, connection
        self.response, self.request = response, request
        self.done = self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            with _mapped(self.request, httpx2.ReadTimeout, httpx2.ReadError):
                while chunk := self.response.read1(READ_SIZE):
                    yield chunk
            if self.response.length:  # http.client ends a cut Content-Length body quietly
                raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body",
                                                 request=self.request)
            self.complete = True
            self.response.close()  # lets its http.client connection send the next request
        except (AttributeError, ValueError) as exc:
            if not self.done:
                raise
            # Closed by another greenlet (the call's deadline) between two reads: http.client
            # has dropped the file it reads from.
            raise httpx2.ReadError("the response was closed", request=self.request) from exc

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        if self.complete and not self.response.will_close:
            self.transport.release(self.key, self.connection)
        else:
            self.connection.close()


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
            connection.http.sock.settimeout(timeouts.get("read"))
            response = self._exchange(connection, request)
        except BaseException:
            connection.close()
            raise
        return httpx2.Response(response.status, headers=response.getheaders(),
                               stream=_Body(self, key, connection, response, request),
                               extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason.encode()})

    @staticmethod
    def _exchange(connection: _Connection, request: httpx2.Request) -> http.client.HTTPResponse:
        conn = connection.http
        with _mapped(request, httpx2.WriteTimeout, httpx2.WriteError):
            conn.putrequest(request.method, request.url.raw_path.decode("ascii"), skip_host=True,
                            skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
            conn.endheaders(request.read() or None)
        with _mapped(request, httpx2.ReadTimeout, httpx2.ReadError):
            return conn.getresponse()

    def _connection(self, key: tuple, request: httpx2.Request, connect_timeout: float | None) -> _Connection:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if connection.reusable():
                    return connection
                connection.close()
        connection = _Connection(*key, self._tls() if key[0] == "https" else None)
        with _mapped(request, httpx2.ConnectTimeout, httpx2.ConnectError):
            connection.open(connect_timeout)
        return connection

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
