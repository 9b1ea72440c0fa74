"""A fake HTTP server on 127.0.0.1 in a daemon thread: the base of the tests' fake peers
(LLM providers, the Telegram Bot API), which speak those services' real wire formats."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # a burst of connections (many chats starting at once) is not refused


class LoopbackServer:
    """Serves `handler_class` on a free loopback port once started; `url` is its address."""

    def _listen(self, handler_class, poll_interval: float) -> None:
        self._server = _Server(("127.0.0.1", 0), handler_class)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": poll_interval},
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"
