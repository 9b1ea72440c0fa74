"""Stopping one streamed reply on request: a flag the agent loop checks between steps, plus cutting
the steps that wait right now (the provider's stream, running tools).

A step is cut the way `gevent.Timeout` cuts a wait: `RunStopped` is raised inside the greenlet at
the point where it waits, so the provider's HTTP response is closed by its own `with` block and a
tool's child process is killed by the code that waits for it (see tools/bounded.py).  Only the
waits inside `cuttable()` are cut; the loop's own bookkeeping (storing rows) never is.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

import gevent
from gevent import getcurrent

T = TypeVar("T")

STOPPED = "Run stopped: the reply was stopped before it finished"
TOOL_STOPPED = "Tool execution was stopped before it returned a result."


class RunStopped(BaseException):
    """Raised into a cut step.  A BaseException, like gevent's Timeout, so that code catching
    `Exception` (provider retries, tool error handling) lets it through."""


class StopSignal:
    """The stop request of one stream; `stop()` may be called from any greenlet of the worker."""

    def __init__(self) -> None:
        self.requested = False
        self._waiting: set = set()  # greenlets inside cuttable() right now

    def stop(self) -> None:
        if self.requested:
            return
        self.requested = True
        loop = gevent.get_hub().loop
        for waiter in list(self._waiting):
            loop.run_callback(self._cut, waiter)

    def _cut(self, waiter) -> None:
        if waiter in self._waiting:  # it may have left its cuttable step since stop() was called
            waiter.throw(RunStopped())

    @contextmanager
    def cuttable(self) -> Iterator[None]:
        """A step that a stop cuts short with RunStopped (at once when already requested)."""
        if self.requested:
            raise RunStopped()
        current = getcurrent()
        self._waiting.add(current)
        try:
            yield
        finally:
            self._waiting.discard(current)

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, where only waiting for the next item is cuttable (not the consumer's work).

        `cuttable()` inlined: this runs once per streamed text delta, where a context manager
        would cost ten times more than the rest of the step."""
        iterator = iter(items)
        current, waiting = getcurrent(), self._waiting
        while True:
            if self.requested:
                raise RunStopped()
            waiting.add(current)
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                waiting.discard(current)
            yield item
