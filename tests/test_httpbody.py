"""Reading a streamed provider response off its connection (starpod/agent/httpbody.py), against a
real HTTP/1.1 server on loopback: the body as sent, the connection kept alive, httpx's errors."""
from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler

import httpx2
import pytest

from starpod.agent import httpbody

from .loopback import LoopbackServer

EVENTS = [f"event: content_block_delta\ndata: {{\"n\": {i}}}\n\n".encode() for i in range(50)]


class RawServer(LoopbackServer):
    """Answers each POST with the next scripted raw body (after the status line and headers given);
    records the client port of every request, to tell a reused connection from a new one."""

    def __init__(self):
        self.script: list[tuple[dict, list[bytes], bool]] = []
        self.ports: list[int] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.ports.append(self.client_address[1])
                headers, pieces, close = server.script.pop(0)
                self.send_response(200)
                for name, value in {"Content-Type": "text/event-stream", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                for piece in pieces:
                    if piece is None:
                        server.release.wait(5)
                        continue
                    self.wfile.write(piece)
                    self.wfile.flush()
                self.close_connection = close

        self._listen(Handler, 0.05)


def chunked(parts: list[bytes]) -> list[bytes]:
    """`parts` as HTTP chunks, each written on its own (the last-chunk marker too)."""
    return [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts] + [b"0\r\n\r\n"]


@pytest.fixture
def server():
    raw = RawServer().start()
    yield raw
    raw.release.set()
    raw.stop()


def post(client: httpx2.Client, server: RawServer, **kwargs):
    return client.stream("POST", f"{server.url}/v1/messages", content=b"{}", **kwargs)


def test_chunked_body_is_read_off_the_connection_which_stays_alive(server):
    server.script = [({"Transfer-Encoding": "chunked"}, chunked(EVENTS), False),
                     ({"Content-Length": "2"}, [b"ok"], False)]
    with httpx2.Client() as client:
        with post(client, server) as response:
            assert httpbody._connection_stream(response) is not None
            assert b"".join(httpbody.body_chunks(response)) == b"".join(EVENTS)
        with post(client, server) as response:
            assert response.read() == b"ok"
    assert server.ports[0] == server.ports[1]


def test_content_encoded_body_is_decoded(server):
    body = b"".join(EVENTS)
    squeezed = gzip.compress(body)
    server.script = [({"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"},
                      chunked([squeezed[:40], squeezed[40:]]), False)]
    with httpx2.Client() as client, post(client, server) as response:
        assert httpbody._connection_stream(response) is None
        assert b"".join(httpbody.body_chunks(response)) == body


def test_body_cut_short_is_an_httpx_error(server):
    server.script = [({"Transfer-Encoding": "chunked"}, chunked(EVENTS[:3])[:3] + [b"40\r\nevent: co"], True)]
    with httpx2.Client() as client, post(client, server) as response:
        chunks = httpbody.body_chunks(response)
        with pytest.raises(httpx2.RemoteProtocolError):
            for _ in chunks:
                pass


def test_stalled_body_times_out_as_httpx_read_timeout(server):
    server.script = [({"Transfer-Encoding": "chunked"}, chunked(EVENTS[:1])[:1] + [None], True)]
    with httpx2.Client(timeout=httpx2.Timeout(5, read=0.2)) as client, post(client, server) as response:
        chunks = httpbody.body_chunks(response)
        assert next(chunks) == EVENTS[0]
        with pytest.raises(httpx2.ReadTimeout):
            next(chunks)
