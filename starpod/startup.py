"""Start-up work a gunicorn worker defers until it is serving: warming the configured provider.

Importing a provider SDK takes about a second of CPU, so the app never imports one while it loads
(the first `/api/health` answers without it); instead each worker imports the configured
provider's SDK and builds its client in a greenlet shortly after it starts serving, so the first
chat costs what later ones do.
"""
from __future__ import annotations

import logging

from .config import Config

log = logging.getLogger(__name__)

# Lets the worker answer the connections already queued (health checks) before the import,
# which holds the worker's one thread for its duration.
WARM_UP_DELAY_SECS = 0.3


def warm_up_in_background(config: Config) -> None:
    """Schedule `warm_up(config)` in a greenlet of this (gevent) worker."""
    import gevent

    gevent.spawn_later(WARM_UP_DELAY_SECS, warm_up, config)


def warm_up(config: Config) -> None:
    """Import the configured provider's SDK and build its client; a failure only costs the warm-up."""
    from .agent.providers import warm_up as warm_up_provider

    try:
        warm_up_provider(config)
    except Exception:  # the first chat will report any real problem with the provider
        log.exception("provider warm-up failed")
