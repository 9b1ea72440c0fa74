"""The pooled `http.client` transport under the provider SDKs (starpod/agent/transport.py).

Against a raw HTTP/1.1 peer on 127.0.0.1 that counts its connections and can close one after
answering (as a provider's idle timeout does), and through a real provider call against the fake
provider: connections are reused, never reused when unusable, and failures come out as the httpx2
errors the SDKs turn into their own.
"""
from __future__ import annotations

import gzip
import os
from http.client import IncompleteRead
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import httpx2
import pytest

from starpod.agent import providers, transport
from starpod.agent.providers import ProviderError, make_provider
from starpod.agent.transport import PooledTransport
from tests.conftest import make_config
from tests.fake_provider import FAKE_KEY, Reply
from tests.support import REPO, free_port, wait_until


class RawPeer:
    """Answers each request on a connection with `body` (chunked when `chunked`), or with the
    bytes of `answer` as they are; when `close_after_answer`, closes the connection after each
    answer without saying so."""

    def __init__(self, body: bytes = b"hello", chunked: bool = False, close_after_answer: bool = False,
                 stall_after: int | None = None, headers: bytes = b"", answer: bytes | None = None):
        self.body, self.chunked, self.close_after_answer = body, chunked, close_after_answer
        self.answer = answer
        self.headers = headers  # more header lines of the answer, each ending in CRLF
        self.stall_after = stall_after  # send only this many bytes of the answer, then nothing more
        self.released = threading.Event()
        self.connections = self.closed = 0
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._answer_each(conn)
        except ConnectionError:  # the client hung up mid-answer
            pass
        finally:
            self.closed += 1

    def _answer_each(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + reader.read(length))
                self.conn = conn
                conn.sendall(self._answer()[:self.stall_after])
                if self.stall_after is not None:
                    self.released.wait()
                    return
                if self.close_after_answer:
                    return

    def _answer(self) -> bytes:
        if self.answer is not None:
            return self.answer
        if self.chunked:
            middle = len(self.body) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (self.body[:middle], self.body[middle:]))
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n%s0\r\n\r\n" % (self.headers, chunks)
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(self.body), self.headers, self.body)

    def send_more(self, data: bytes) -> None:
        """More bytes of a stalled answer (`stall_after`)."""
        self.conn.sendall(data)

    def close(self) -> None:
        self.released.set()
        self.listener.close()


@pytest.fixture
def http():
    client = httpx2.Client(transport=PooledTransport())
    yield client
    client.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_sequential_requests_share_one_connection(http, chunked):
    peer = RawPeer(b"0123456789" * 1000, chunked=chunked)
    for _ in range(3):
        response = http.post(peer.url + "/v1/messages", content=b'{"a": 1}', headers={"x-key": "k"})
        assert (response.status_code, response.content) == (200, b"0123456789" * 1000)
    assert peer.connections == 1
    assert len(peer.requests) == 3 and peer.requests[-1].endswith(b'\r\n\r\n{"a": 1}')
    assert b"x-key: k\r\n" in peer.requests[-1] and b"\r\nhost: 127.0.0.1:" in peer.requests[-1].lower()
    peer.close()


def test_a_connection_the_peer_closed_is_not_reused(http):
    peer = RawPeer(close_after_answer=True)
    for _ in range(2):
        assert http.post(peer.url, content=b"x").content == b"hello"
        wait_until(lambda: peer.closed == peer.connections, "the peer closed its end")
    assert peer.connections == 2
    peer.close()


def test_a_response_closed_before_its_end_does_not_give_its_connection_back(http):
    peer = RawPeer(b"x" * 200_000)
    with http.stream("POST", peer.url, content=b"x") as response:
        next(response.iter_raw(1024))
    assert http.post(peer.url, content=b"x").content == b"x" * 200_000
    assert peer.connections == 2
    peer.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_response_closed_while_read_ends_in_an_error_not_a_short_answer(http, chunked):
    """As the provider deadline closes a stream from another greenlet: the reader must fail."""
    peer = RawPeer(b"x" * 1000, chunked=chunked, stall_after=200)
    with http.stream("POST", peer.url, content=b"x") as response:
        threading.Timer(0.3, response.close).start()
        with pytest.raises(httpx2.TransportError):
            for _ in response.iter_raw():
                pass
    peer.close()


def test_a_content_encoded_provider_body_is_decoded(http):
    events = b'data: {"n": 1}\n\n' * 50
    for headers, wire in ((b"", events), (b"Content-Encoding: gzip\r\n", gzip.compress(events))):
        peer = RawPeer(wire, chunked=True, headers=headers)
        with http.stream("POST", peer.url, content=b"x") as response:
            assert b"".join(providers.body_chunks(response)) == events
        peer.close()


def test_a_response_head_is_read_as_http_1_1_frames_it(http):
    """Interim 1xx answers skipped, folded and repeated fields kept, `Connection: close` obeyed."""
    peer = RawPeer(answer=b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                          b"HTTP/1.1 201 Made It\r\nX-Folded: one\r\n \t two\r\nSet-Cookie: a=1\r\n"
                          b"set-cookie: b=2\r\nContent-Length: 5, 5\r\nConnection: Keep-Alive, Close\r\n\r\nhello")
    for _ in range(2):
        response = http.post(peer.url, content=b"x")
        assert (response.status_code, response.reason_phrase, response.content) == (201, "Made It", b"hello")
        assert response.headers["x-folded"] == "one two"
        assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert "link" not in response.headers
    assert peer.connections == 2
    peer.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
])
def test_an_answer_framed_without_a_body_keeps_its_connection(http, answer):
    peer = RawPeer(answer=answer)
    assert [http.post(peer.url, content=b"x").content for _ in range(2)] == [b"", b""]
    assert peer.connections == 1
    peer.close()


def test_an_http_1_0_answer_is_read_to_its_end_and_its_connection_not_reused(http):
    peer = RawPeer(answer=b"HTTP/1.0 200 OK\r\n\r\nall of it", close_after_answer=True)
    assert [http.post(peer.url, content=b"x").content for _ in range(2)] == [b"all of it", b"all of it"]
    assert peer.connections == 2
    peer.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"y" * 70_000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: z\r\n" * 101 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"",
], ids=["differing-lengths", "negative-length", "bad-name", "long-line", "many-fields", "cut-head", "http2",
        "no-answer"])
def test_a_malformed_response_head_is_a_protocol_error(http, answer):
    peer = RawPeer(answer=answer, close_after_answer=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        http.post(peer.url, content=b"x")
    peer.close()


def _chunked_wire(parts: list[bytes], trailers: bytes = b"") -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n" + trailers + b"\r\n"


def test_a_chunked_body_is_decoded_wherever_its_reads_split_it():
    rng = random.Random(7)
    for _ in range(500):
        parts = [rng.randbytes(rng.randrange(1, 40)) for _ in range(rng.randrange(0, 6))]
        wire = _chunked_wire(parts, rng.choice([b"", b"X-Trailer: 1\r\n", b"A: 1\r\nB: 2\r\n"]))
        cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randrange(0, 10))))
        reads = iter([wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])])
        decoded = list(transport.dechunked(lambda: next(reads, b"")))
        assert b"".join(decoded) == b"".join(parts) and all(decoded)
        assert next(reads, None) is None  # nothing read past the body's end
        cut = iter([wire[:-1]])
        with pytest.raises(IncompleteRead):
            list(transport.dechunked(lambda: next(cut, b"")))


@pytest.mark.parametrize("body", [b"zz\r\nabc", b"5\r\nhelloXX0\r\n\r\n", b"-1\r\n", b"5\r\nhello\r\n" + b"7" * 70_000])
def test_a_malformed_chunked_body_is_a_protocol_error(http, body):
    peer = RawPeer(answer=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, close_after_answer=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        http.post(peer.url, content=b"x")
    peer.close()


# The start of every script `run_under_gevent` runs: a client, the head of a chunked answer, a
# profile hook collecting failed reads, and `fails_soon`.
GEVENT_PRELUDE = """
from gevent import monkey; monkey.patch_all()
import sys, time, gevent, httpx2
from starpod.agent.transport import PooledTransport
from tests.test_provider_transport import RawPeer, TlsPeer

head = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
client = httpx2.Client(transport=PooledTransport())  # over TLS trusting the test's certificate (SSL_CERT_FILE)
failed_reads = []

def count_failed_reads(frame, event, arg):
    if event == "c_exception" and getattr(arg, "__name__", "") in ("read", "recv", "recv_into"):
        failed_reads.append(arg)

def fails_soon(error, read):
    started = time.monotonic()
    try:
        read()
        sys.exit(f"no {error.__name__}")
    except error:
        assert time.monotonic() - started < 5
"""


def run_under_gevent(script: str, *args: str, env: dict | None = None) -> None:
    """Run GEVENT_PRELUDE + `script` in a gevent-patched interpreter; it prints "ok" when all held."""
    done = subprocess.run([sys.executable, "-c", GEVENT_PRELUDE + script, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.stdout.strip() == "ok", done.stderr


GEVENT_READ_TIMEOUT = """
# a body that keeps coming, each read within the timeout though the whole takes longer: no timeout
peer = RawPeer(answer=head, stall_after=len(head))
with client.stream("POST", peer.url, content=b"x", timeout=0.3) as response:
    for _ in range(8):
        peer.send_more(b"1\\r\\nx\\r\\n")
        time.sleep(0.1)
    peer.send_more(b"0\\r\\n\\r\\n")
    assert b"".join(response.iter_raw()) == b"x" * 8
peer.close()
# a body that stops coming: a read timeout
peer = RawPeer(answer=head + b"64\\r\\n" + b"y" * 100 + b"\\r\\n0\\r\\n\\r\\n", stall_after=len(head) + 20)
with client.stream("POST", peer.url, content=b"x", timeout=0.3) as response:
    fails_soon(httpx2.ReadTimeout, lambda: b"".join(response.iter_raw()))
peer.close()
print("ok")
"""


def test_under_gevent_a_chunked_body_times_out_when_a_read_waits_too_long_not_when_it_lasts_long():
    """The read timeout of a streamed body is one timer per body there (transport._IdleLimit)."""
    run_under_gevent(GEVENT_READ_TIMEOUT)


GEVENT_READS = """
# events that each come after the reader has taken all there was: one read each, none failing
# (after the first, which the head's reader reads)
peer = RawPeer(answer=head, stall_after=len(head))
with client.stream("POST", peer.url, content=b"x", timeout=5) as response:
    chunks = response.iter_raw()
    for event in range(11):
        gevent.spawn_later(0.02, peer.send_more, b"1\\r\\nx\\r\\n")
        sys.setprofile(count_failed_reads if event else None)
        assert next(chunks) == b"x"
    sys.setprofile(None)
    peer.send_more(b"0\\r\\n\\r\\n")
    assert list(chunks) == []
peer.close()
assert failed_reads == [], failed_reads
# a response closed by another greenlet while its reader waits for the next event: the reader fails at once
peer = RawPeer(answer=head + b"1\\r\\nx\\r\\n", stall_after=len(head) + 6)
with client.stream("POST", peer.url, content=b"x", timeout=30) as response:
    gevent.spawn_later(0.2, response.close)
    fails_soon(httpx2.ReadError, lambda: b"".join(response.iter_raw()))
peer.close()
print("ok")
"""


def test_under_gevent_a_streamed_event_costs_one_read_and_a_close_wakes_the_reader():
    """A read right after one that took all the socket had would fail (EAGAIN) and wait anyway:
    the body waits for the socket first (transport._Readable), and closing it wakes that wait."""
    run_under_gevent(GEVENT_READS)


def test_refused_connection_is_a_connect_error(http):
    with pytest.raises(httpx2.ConnectError):
        http.post(f"http://127.0.0.1:{free_port()}/", content=b"x")


def test_silent_peer_is_a_read_timeout(http):
    listener = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(httpx2.ReadTimeout):
        http.post(f"http://127.0.0.1:{listener.getsockname()[1]}/", content=b"x", timeout=0.2)
    listener.close()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_provider_calls_go_through_the_pooled_transport(tmp_path, fake_provider, kind):
    fake_provider.script(Reply("first", chunks=3), Reply("second"))
    config = make_config(tmp_path / ".starpod", environ=fake_provider.environ())
    provider = make_provider(config, kind, "a-model")
    texts = []
    for _ in range(2):
        items = list(provider.stream(system="s", messages=[{"role": "user", "content": [{"type": "text", "text": "q"}]}],
                                     tools=[], max_tokens=10))
        texts.append(items[-1].text)
    assert texts == ["first", "second"]
    assert FAKE_KEY in " ".join(fake_provider.requests[-1].headers.values())
    idle = providers._shared_transport()._idle[("http", "127.0.0.1", int(fake_provider.url.rsplit(":", 1)[1]))]
    assert len(idle) == 1  # both calls went through one pooled connection


def test_provider_unreachable_fails_as_provider_error(tmp_path, monkeypatch):
    monkeypatch.setattr(providers.RETRY_POLICY, "max_retries", 1)
    monkeypatch.setattr(providers.RETRY_POLICY, "base_delay", 0.01)
    environ = {"ANTHROPIC_API_KEY": "sk-x", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    provider = make_provider(make_config(tmp_path / ".starpod", environ=environ))
    with pytest.raises(ProviderError, match="Connection error"):
        list(provider.stream(system=None, messages=[{"role": "user", "content": [{"type": "text", "text": "q"}]}],
                             tools=[], max_tokens=10))


def test_header_with_a_line_break_is_refused_before_anything_is_sent(http):
    peer = RawPeer()
    with pytest.raises(httpx2.LocalProtocolError):
        http.post(peer.url, content=b"x", headers={"x-key": "k\r\nx-injected: 1"})
    assert peer.requests == []
    peer.close()


def test_environment_proxy_is_still_used(tmp_path, monkeypatch):
    proxy = RawPeer(b"data: {}\n\n")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    environ = {"ANTHROPIC_API_KEY": "sk-x", "ANTHROPIC_BASE_URL": "http://provider.invalid"}
    provider = make_provider(make_config(tmp_path / ".starpod", environ=environ))
    list(provider.stream(system=None, messages=[{"role": "user", "content": [{"type": "text", "text": "q"}]}],
                         tools=[], max_tokens=10))
    assert proxy.requests[0].startswith(b"POST http://provider.invalid/v1/messages HTTP/1.1\r\n")
    proxy.close()


@pytest.fixture
def certificate(tmp_path):
    """The files of a fresh self-signed certificate for 127.0.0.1 and its key (needs `openssl`)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_peer(certificate):
    """An HTTPS echo server on 127.0.0.1 with a fresh self-signed certificate."""
    cert, key = certificate

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_https_is_verified_and_its_connection_reused(tls_peer, monkeypatch):
    url, cert = tls_peer
    with httpx2.Client(transport=PooledTransport()) as untrusting, pytest.raises(httpx2.ConnectError):
        untrusting.post(url, content=b"x")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    transport = PooledTransport()
    with httpx2.Client(transport=transport) as trusting:
        assert [trusting.post(url, content=b"ping %d" % i).content for i in range(3)] == [b"ping 0", b"ping 1", b"ping 2"]
        assert [len(idle) for idle in transport._idle.values()] == [1]  # one connection, kept for the next


class TlsPeer:
    """One TLS connection on 127.0.0.1 answering one request with the TLS record of `answer`, then
    with what the test sends: its TLS work is done in memory, so the bytes of a record may be cut
    anywhere between TCP writes."""

    def __init__(self, cert: str, key: str, answer: bytes):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.answered = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, args=(answer,), daemon=True).start()

    def _serve(self, answer: bytes) -> None:
        self.conn, _ = self.listener.accept()
        self._fed(self.tls.do_handshake)
        request = b""
        while b"\r\n\r\n" not in request:
            request += self._fed(self.tls.read)
        self.conn.sendall(self.record(answer))
        self.answered.set()

    def _fed(self, step: Callable[[], bytes]) -> bytes:
        """What a step of the TLS work gives once the client has sent it enough bytes."""
        while True:
            try:
                done = step()
                break
            except ssl.SSLWantReadError:
                self.conn.sendall(self.outgoing.read())
                more = self.conn.recv(65536)
                if not more:
                    raise ConnectionError("the client hung up")
                self.incoming.write(more)
        self.conn.sendall(self.outgoing.read())
        return done

    def record(self, data: bytes) -> bytes:
        """`data` (at most 16 KiB) as the bytes of one TLS record."""
        self.tls.write(data)
        return self.outgoing.read()

    def send(self, wire: bytes) -> None:
        self.answered.wait()
        self.conn.sendall(wire)

    def close(self) -> None:
        self.listener.close()
        self.conn.close()


GEVENT_TLS_READS = """
cert, key = sys.argv[1:]

def sent_in_pieces(peer, wire, size):
    for start in range(0, len(wire), size):
        peer.send(wire[start:start + size])
        gevent.sleep(0.005)

def read_until(chunks, total):
    data = b""
    while len(data) < total:
        data += next(chunks)
    return data

peer = TlsPeer(cert, key, head)
with client.stream("POST", peer.url, content=b"x", timeout=30) as response:
    chunks = response.iter_raw()
    # events that each come after the reader has taken all there was: one read each, none failing
    # (after the first, which the head's reader reads)
    for event in range(11):
        gevent.spawn_later(0.02, peer.send, peer.record(b"1\\r\\nx\\r\\n"))
        sys.setprofile(count_failed_reads if event else None)
        assert next(chunks) == b"x"
    sys.setprofile(None)
    # TLS records cut anywhere on the way (the socket readable before a record is whole), chunks across records
    wire = peer.record(b"5\\r\\nhello\\r\\n3\\r\\nab") + peer.record(b"c\\r\\n2\\r\\nyz\\r\\n")
    gevent.spawn(sent_in_pieces, peer, wire, 7)
    assert read_until(chunks, 10) == b"helloabcyz"
    peer.send(peer.record(b"0\\r\\n\\r\\n"))
    assert list(chunks) == []
peer.close()
assert failed_reads == [], failed_reads
# a record the head's reader took only part of: the rest is decrypted already, the socket has nothing more
peer = TlsPeer(cert, key, head + b"%x\\r\\n%s\\r\\n" % (12000, b"y" * 12000))
with client.stream("POST", peer.url, content=b"x", timeout=5) as response:  # (waiting for the socket: a timeout)
    chunks = response.iter_raw()
    assert read_until(chunks, 12000) == b"y" * 12000
    peer.send(peer.record(b"0\\r\\n\\r\\n"))
    assert list(chunks) == []
peer.close()
# a response closed by another greenlet while its reader waits for the next event: the reader fails at once
peer = TlsPeer(cert, key, head + b"1\\r\\nx\\r\\n")
with client.stream("POST", peer.url, content=b"x", timeout=30) as response:
    chunks = response.iter_raw()
    assert next(chunks) == b"x"
    gevent.spawn_later(0.2, response.close)
    fails_soon(httpx2.ReadError, lambda: next(chunks))  # (not the ReadTimeout of a reader that slept through it)
peer.close()
# a stream that stops coming: the read timeout closes the connection, which wakes the waiting reader
peer = TlsPeer(cert, key, head + b"1\\r\\nx\\r\\n")
with client.stream("POST", peer.url, content=b"x", timeout=0.5) as response:
    fails_soon(httpx2.ReadTimeout, lambda: b"".join(response.iter_raw()))
peer.close()
print("ok")
"""


def test_under_gevent_a_tls_streamed_event_costs_one_read_and_a_close_wakes_the_reader(certificate):
    """Over TLS too the body waits for the socket after a read that took all there was, unless the
    TLS object still holds decrypted bytes; a TLS record that is not whole yet still reads right,
    and closing the connection (the response's close, the read timeout) wakes the waiting reader."""
    cert, key = certificate
    run_under_gevent(GEVENT_TLS_READS, str(cert), str(key), env={**os.environ, "SSL_CERT_FILE": str(cert)})
