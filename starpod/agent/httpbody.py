"""The body of a provider's streamed HTTP/1.1 response, read below httpx's per-chunk layers.

httpx hands every chunk of a body up through eight generators (decoders, byte chunker, the
transport's exception mapping, the pool's and the connection's streams) and three context managers
per read.  In an event stream every chunk is one small event, so those layers cost more than the
event itself.  `body_chunks(response)` drives the connection's own h11 parser over its socket
instead, with the request's read timeout and httpx's exceptions (one mapping for the whole body),
and leaves the connection as httpcore would: read to its end, it goes back to the pool for the
next request (keep-alive holds).  A response it cannot read that way (a content-encoded body,
HTTP/2, a proxy tunnel, another transport) is read with `iter_bytes()`.
"""
from __future__ import annotations

import socket
from typing import Iterator

import h11
import httpcore2
from httpcore2._backends.sync import SyncStream
from httpcore2._sync.http11 import HTTP11Connection, HTTP11ConnectionByteStream
from httpx2._transports.default import map_httpcore_exceptions

READ_BYTES = 64 * 1024


def body_chunks(response) -> Iterator[bytes]:
    """The bytes of a streamed httpx response's body as they arrive (content-decoded)."""
    stream = _connection_stream(response)
    if stream is None:
        return response.iter_bytes()
    return _read(stream._connection, stream._request)


def _connection_stream(response) -> HTTP11ConnectionByteStream | None:
    """The HTTP/1.1 connection stream under `response`, when its body may be read off the socket."""
    if response.headers.get("content-encoding", "identity") != "identity" or response.is_stream_consumed:
        return None
    stream = response.stream
    for attribute in ("_stream", "_httpcore_stream", "_stream"):  # httpx's bound and mapped streams, the pool's
        stream = getattr(stream, attribute, None)
    if not isinstance(stream, HTTP11ConnectionByteStream) or not isinstance(stream._connection, HTTP11Connection):
        return None
    return stream if type(stream._connection._network_stream) is SyncStream else None


def _read(connection: HTTP11Connection, request: httpcore2.Request) -> Iterator[bytes]:
    parser = connection._h11_state
    sock = connection._network_stream.get_extra_info("socket")
    timeout = request.extensions.get("timeout", {}).get("read")
    next_event, receive, data_type = parser.next_event, parser.receive_data, h11.Data
    with map_httpcore_exceptions():
        try:
            sock.settimeout(timeout)
            while True:
                event = next_event()
                if type(event) is data_type:
                    yield bytes(event.data)
                elif event is h11.NEED_DATA:
                    receive(sock.recv(READ_BYTES))
                else:  # EndOfMessage (or PAUSED, which a response never reaches)
                    return
        except h11.RemoteProtocolError as exc:
            raise httpcore2.RemoteProtocolError(str(exc)) from exc
        except socket.timeout as exc:
            raise httpcore2.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore2.ReadError(str(exc)) from exc
