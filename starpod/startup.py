"""Start-up work a gunicorn worker defers until it is serving: warming the configured provider.

Importing a provider SDK takes about a second of CPU, so the app never imports one while it loads
(the first `/api/health` answers without it); instead each worker imports the configured
provider's SDK and builds its client in a greenlet shortly after it starts serving, so the first
chat costs what later ones do.  That greenlet lets the others run before each module it imports
(`_YieldBetweenImports`): one import statement of a whole SDK would otherwise hold the worker's
event loop for its full second (streams stall, WebSocket pongs go unread).  A native thread is no
way out: some imports start subprocesses, which gevent supports only on the loop's own thread.

Once warm, the worker's long-lived objects (the app, the SDK's modules and models: some 200,000)
are frozen out of the garbage collector (`gc.freeze`): every full collection would otherwise walk
them all, holding the event loop for 100-200 ms each time, mid-stream.
"""
from __future__ import annotations

import gc
import logging
import sys
import time

from .config import Config

log = logging.getLogger(__name__)

# Lets the worker answer the connections already queued (health checks) before warming up.
WARM_UP_DELAY_SECS = 0.3


def warm_up_in_background(config: Config) -> None:
    """Schedule `warm_up(config)` in a greenlet of this (gevent) worker."""
    import gevent

    gevent.spawn_later(WARM_UP_DELAY_SECS, _warm_up_cooperatively, config)


class _YieldBetweenImports:
    """A meta-path finder that finds nothing; it yields to the event loop before each module the
    warm-up greenlet imports.  Other greenlets that import a module meanwhile wait for it on
    importlib's module lock, which is greenlet-aware in a patched worker."""

    def __init__(self, greenlet):
        self.greenlet = greenlet

    def find_spec(self, name, path, target=None):
        import gevent

        if gevent.getcurrent() is self.greenlet:
            gevent.sleep(0)
        return None


def _warm_up_cooperatively(config: Config) -> None:
    import gevent

    started = time.monotonic()
    finder = _YieldBetweenImports(gevent.getcurrent())
    sys.meta_path.insert(0, finder)
    try:
        warmed = warm_up(config)
    finally:
        sys.meta_path.remove(finder)
    gc.collect()  # once, so that no garbage of the start is frozen with the rest (and never freed)
    gc.freeze()
    if warmed:
        log.info("provider SDK warmed up in %.1f s", time.monotonic() - started)


def warm_up(config: Config) -> bool:
    """Import the configured provider's SDK and build its client; a failure only costs the warm-up
    (False)."""
    from .agent.providers import warm_up as warm_up_provider

    try:
        warm_up_provider(config)
    except Exception:  # the first chat will report any real problem with the provider
        log.exception("provider warm-up failed")
        return False
    return True
