"""WAL checkpoints of a SQLite database, off a gevent worker's event loop.

SQLite checkpoints a WAL database itself (every 1000 pages, `wal_autocheckpoint`) inside the call
that commits: it copies the WAL into the database file and fdatasyncs both.  On a gevent worker's
event loop that stalls every greenlet of the worker (under 200 streaming chats: 222 stalls in
20 s, median 2.4 ms, worst 14 ms).

Where gevent is active, connections therefore run with `wal_autocheckpoint = 0`
(`disable_automatic`), and whoever commits on them calls `Checkpointer.wrote`, which looks at the
WAL's size (one `os.stat`).  Once it passes CHECKPOINT_BYTES, a greenlet runs the checkpoint in
gevent's native thread pool on a connection only that thread uses: sqlite3 releases the GIL while
it copies and syncs, so the loop runs on.

The checkpoint is TRUNCATE with a busy timeout (a C-level wait, but in the native thread): it
takes the write lock, copies every frame, waits for readers to leave the WAL and empties it, so
the WAL resets while greenlets keep writing, and its size on disk is its content (what `wrote`
looks at).  Meanwhile writers get SQLITE_BUSY and retry cooperatively (lockwait): storage waits a
few ms (a checkpoint of 1000 pages took 7-27 ms), the loop does not.  A PASSIVE checkpoint never
catches up with writers that do not pause, so the WAL is never reset (8 greenlets committing 38 MB
back to back: PASSIVE left a 58 MB WAL, TRUNCATE kept it under 5 MB); RESTART resets it but leaves
the file at its largest size, which then no longer tells how much it holds.  The thread then
writes the new WAL's first frame itself (`_start_wal`), as SQLite syncs a restarted WAL's header
in the commit that restarts it.

Processes without gevent (the CLI, plain tests) keep SQLite's automatic checkpoints.  The
checkpoint greenlet is started only from a greenlet other than the main one, i.e. by a process
whose loop serves greenlets: never in the gunicorn master, whose start-up writes run in its main
greenlet before it forks the workers (it closes its connections then, which checkpoints).  Commits
made in native threads do not start one either (none write today); the loop's next commit does.
The memory index's SQLite file (memory/index.py) is handled the same way.
"""
from __future__ import annotations

import logging
import os
import sqlite3

from .concurrency import gevent_active, run_blocking

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 1000 * 4096  # SQLite's own bound: wal_autocheckpoint's 1000 pages of 4 KiB
BUSY_TIMEOUT_SECS = 2.0  # how long the checkpoint waits for the write lock, then for readers


def disable_automatic(conn: sqlite3.Connection) -> None:
    """Turn SQLite's automatic checkpoints off on `conn` where `Checkpointer` takes them over
    (where gevent is active)."""
    if gevent_active():
        conn.execute("PRAGMA wal_autocheckpoint = 0")


class Checkpointer:
    """Checkpoints of the SQLite database at `path` for this process, in gevent's thread pool."""

    def __init__(self, path: str):
        self.path = path
        self.wal_path = path + "-wal"
        self._running = False
        self._conn: sqlite3.Connection | None = None  # used in the thread pool only

    def wrote(self) -> None:
        """After a commit: start a checkpoint when the WAL has passed CHECKPOINT_BYTES."""
        if self._running or not _serving_greenlets():
            return
        try:
            size = os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return
        if size >= CHECKPOINT_BYTES:
            import gevent
            self._running = True
            gevent.spawn(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            busy, _frames, _copied = run_blocking(self._checkpoint_in_thread)
            if busy:
                log.info("WAL checkpoint of %s gave way to a long reader or writer; retried later", self.path)
        except sqlite3.Error:
            log.warning("WAL checkpoint of %s failed", self.path, exc_info=True)
        finally:
            self._running = False

    def _checkpoint_in_thread(self) -> tuple[int, int, int]:
        if self._conn is None:
            self._conn = self._connect()
        outcome = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not outcome[0]:
            self._start_wal()
        return outcome

    def _start_wal(self) -> None:
        """Write the emptied WAL's first frame here: SQLite syncs the header of a WAL that starts
        over in the writer that starts it, which would otherwise be the loop's next commit.  The
        write sets the database's application_id to what it is (a page written, nothing changed)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        with conn:  # commits, or rolls back on an error
            (application_id,) = conn.execute("PRAGMA application_id").fetchone()
            conn.execute(f"PRAGMA application_id = {int(application_id)}")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECS, isolation_level=None,
                               check_same_thread=False)


def _serving_greenlets() -> bool:
    """Whether this runs in a greenlet the gevent loop schedules (not in the main greenlet nor in
    a native thread), in a process where gevent is active."""
    if not gevent_active():
        return False
    import gevent
    return gevent.getcurrent().parent is not None
