"""Database leases: exactly one holder of a named job across every worker and server.

A lease is a row (`models.Lease`) with an expiry.  The holder renews it well before it expires; a
holder that dies simply stops renewing, and any other process takes the lease over once it has
expired.  Every change is one short write transaction, so the database decides races.
"""
from __future__ import annotations

import os
import socket
import time
import uuid

from .db import database, write_transaction
from .models import Lease


def new_holder_id() -> str:
    """A holder id that names this process (for logs) and is unique even after pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(name: str, holder: str, ttl: float) -> bool:
    """Take or renew lease `name` for `ttl` seconds; True if `holder` holds it afterwards."""
    now = time.time()
    with database.connection_context(), write_transaction(f"lease:{name}"):
        renewed = (Lease.update(holder=holder, expires_at=now + ttl)
                   .where((Lease.name == name) & ((Lease.holder == holder) | (Lease.expires_at < now)))
                   .execute())
        if renewed:
            return True
        if Lease.get_or_none(Lease.name == name) is None:
            Lease.insert(name=name, holder=holder, expires_at=now + ttl, acquired_at=now).execute()
            return True
        return False


def release(name: str, holder: str) -> None:
    """Give lease `name` up at once (if `holder` holds it), so a successor need not wait for expiry."""
    with database.connection_context(), write_transaction(f"lease:{name}"):
        Lease.delete().where((Lease.name == name) & (Lease.holder == holder)).execute()


def current_holder(name: str) -> str | None:
    """Who holds lease `name` now, or None when it is free or expired."""
    with database.connection_context():
        lease = Lease.get_or_none(Lease.name == name)
    if lease is None or lease.expires_at < time.time():
        return None
    return lease.holder
