"""Running CPU-bound or blocking C calls without stalling the gevent loop."""
from __future__ import annotations

from typing import Any, Callable


def _gevent_active() -> bool:
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
    if _gevent_active():
        import gevent
        return gevent.get_hub().threadpool.apply(fn, args)
    return fn(*args)
