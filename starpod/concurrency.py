"""Running CPU-bound or blocking C calls without stalling the gevent loop."""
from __future__ import annotations

import select
from typing import Any, Callable

from gevent.monkey import get_original

# The real poll, not gevent's: a zero-timeout look must not switch greenlets (nor cost a hub trip).
_poll = get_original("select", "poll")


def gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("threading")


def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn(*args)` in gevent's native thread pool when gevent is active, else inline.

    Used for argon2 (which releases the GIL), so one verification does not freeze every other
    greenlet of the worker for ~20 ms.
    """
    if gevent_active():
        import gevent
        return gevent.get_hub().threadpool.apply(fn, args)
    return fn(*args)


class SharedCalls:
    """Blocking calls by key, each running once at a time: a caller asking for a key whose call is
    still running (in gevent's thread pool) waits for that call's result instead of making it
    again.  Without gevent each caller makes its own call, as `run_blocking` does."""

    def __init__(self) -> None:
        self._running: dict = {}

    def call(self, key: Any, fn: Callable[..., Any], *args: Any) -> Any:
        if not gevent_active():
            return fn(*args)
        running = self._running.get(key)
        if running is not None:
            return running.get()
        import gevent
        running = self._running[key] = gevent.get_hub().threadpool.spawn(fn, *args)
        try:
            return running.get()
        finally:
            del self._running[key]


def in_background(delay: float, fn: Callable[..., Any], *args: Any) -> None:
    """`fn(*args)`, which nobody waits for: under gevent in a greenlet of its own, started after
    `delay` seconds; else now (a process without gevent's loop has nothing to come back to it)."""
    if gevent_active():
        import gevent
        gevent.spawn_later(delay, fn, *args)
    else:
        fn(*args)


def readable_now(fd: int) -> bool:
    """Whether `fd` has something to read (data, EOF or an error), asked without waiting.  Used on
    idle pooled connections: one that is readable was closed by its peer, or holds stray bytes."""
    poller = _poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
