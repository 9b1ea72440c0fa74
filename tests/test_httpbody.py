"""Reading a streamed provider response off its connection (starpod/agent/httpbody.py): the chunked
decoder against h11 (every split of a body, every prefix completed), and against a real HTTP/1.1
server on loopback: the body as sent, the connection kept alive, httpx's errors."""
from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler

import h11
import httpcore2
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


# --- the chunked decoder -----------------------------------------------------------------------

WIRE = (b"5\r\nhello\r\n1a;name=value\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n"
        b"3 \r\n\r\n\n\r\n0\r\nExpires: never\r\nX-Note: \r\n\r\n")
DECODED = b"hello" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n\n"


@pytest.mark.parametrize("wire, decoded", [(WIRE, DECODED), (b"0\r\n\r\n", b""), (b"2\r\nok\r\n0\r\n\n", b"ok")])
def test_chunked_body_decodes_however_it_is_split(wire, decoded):
    for split in range(len(wire) + 1):
        for second in range(split, len(wire) + 1):
            body = httpbody.ChunkedBody()
            data = b"".join(body.feed(part) for part in (wire[:split], wire[split:second], wire[second:]))
            assert (data, body.done, body.overrun) == (decoded, True, False), (split, second)


def test_bytes_after_the_body_are_an_overrun():
    body = httpbody.ChunkedBody()
    assert body.feed(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1") == b"ok"
    assert body.done and body.overrun


@pytest.mark.parametrize("wire", [b"zz\r\n", b"0x5\r\nhello\r\n", b"5\r\nhelloXX", b"+5\r\n"])
def test_malformed_chunked_coding_is_a_protocol_error(wire):
    with pytest.raises(httpcore2.RemoteProtocolError):
        httpbody.ChunkedBody().feed(wire)


def h11_after_response_head() -> h11.Connection:
    """A client-side h11 parser that sent a request and received a chunked response's head."""
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
    parser.send(h11.EndOfMessage())
    parser.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert type(parser.next_event()) is h11.Response
    return parser


def test_every_prefix_completed_by_rest_is_a_whole_message_to_h11():
    trailer = WIRE.index(b"0\r\n") + 3
    for cut in range(len(WIRE) + 1):
        body = httpbody.ChunkedBody()
        body.feed(WIRE[:cut])
        rest = body.rest()
        if rest is None:  # only in the middle of a trailer field
            assert cut > trailer and WIRE[cut - 1:cut] not in (b"\r", b"\n"), cut
            continue
        parser = h11_after_response_head()
        parser.receive_data(WIRE[:cut] + rest)
        events = []
        while not events or type(events[-1]) is h11.Data:
            events.append(parser.next_event())
        assert type(events[-1]) is h11.EndOfMessage, (cut, events[-1])
        assert parser.their_state is h11.DONE and parser.trailing_data == (b"", False), cut
