"""WAL checkpoints of the SQLite databases (the main one, the memory index): under gevent in a
native thread, the WAL staying bounded while greenlets keep writing; without gevent, SQLite's
automatic checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from starpod.db import open_sqlite
from starpod.walcheckpoint import CHECKPOINT_BYTES

from .support import REPO

ROW = b"x" * 3000
WAL_HEADER, WAL_FRAME_HEADER, PAGE = 32, 24, 4096


def write_rows(db, transactions: int, pause=lambda: None) -> list[int]:
    """`transactions` commits of 4 rows each; the WAL's size after each."""
    sizes = []
    with db.connection_context():
        for _ in range(transactions):
            with db.atomic():
                for _ in range(4):
                    db.execute_sql("INSERT INTO t (blob) VALUES (?)", (ROW,))
            sizes.append(os.stat(db.database + "-wal").st_size)
            pause()
    return sizes


GEVENT_WRITERS = """
from gevent import monkey; monkey.patch_all()
import json, sys, gevent
from pathlib import Path
from gevent.monkey import get_original
from starpod import walcheckpoint
from starpod.db import open_sqlite
from starpod.memory.index import SqliteIndex
from tests.test_wal_checkpoint import ROW, write_rows

thread_id = get_original("_thread", "get_ident")
checkpoint_threads = []
connect = walcheckpoint.Checkpointer._connect

def traced_connect(self):
    conn = connect(self)
    conn.set_trace_callback(lambda sql: checkpoint_threads.append((self.path, thread_id())))
    return conn

walcheckpoint.Checkpointer._connect = traced_connect
db = open_sqlite(Path(sys.argv[1]))
with db.connection_context():
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)")
    autocheckpoint = db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0]
main_greenlet_sizes = write_rows(db, 400)  # start-up writes, as the gunicorn master's: no checkpointer
started_by_main_greenlet = bool(checkpoint_threads) or db.checkpoints._running
writers = [gevent.spawn(write_rows, db, 400, lambda: gevent.sleep(0.001)) for _ in range(5)]
gevent.joinall(writers, raise_error=True)
while db.checkpoints._running:  # the last one started, still in its thread
    gevent.sleep(0.01)
gevent.spawn(db.checkpoints._checkpoint).get()  # writers done: the WAL emptied, then started anew
restarted_wal_size = Path(sys.argv[1] + "-wal").stat().st_size

index = SqliteIndex(Path(sys.argv[2]), Path(sys.argv[2] + ".lock"))
index.open()

def write_index():
    for n in range(1000):
        with index.transaction() as conn:
            conn.execute("INSERT INTO memory_meta (key, value) VALUES (?, ?)", (str(n), ROW.decode()))

gevent.spawn(write_index).get()
while index.checkpoints._running:  # the last one started, still in its thread
    gevent.sleep(0.01)
with index.connection() as conn:
    index_autocheckpoint = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
print(json.dumps({"autocheckpoint": autocheckpoint, "restarted_wal_size": restarted_wal_size, "index_autocheckpoint": index_autocheckpoint,
                  "index_wal_size": Path(sys.argv[2] + "-wal").stat().st_size, "main_greenlet_sizes": main_greenlet_sizes,
                  "started_by_main_greenlet": started_by_main_greenlet,
                  "sizes": [size for writer in writers for size in writer.value],
                  "loop_thread": thread_id(), "checkpoint_threads": checkpoint_threads}))
"""


def test_under_gevent_checkpoints_run_in_a_native_thread_and_keep_the_wal_bounded(tmp_path):
    main, index = tmp_path / "starpod.db", tmp_path / "memory.db"
    done = subprocess.run([sys.executable, "-c", GEVENT_WRITERS, str(main), str(index)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["autocheckpoint"] == 0
    assert not seen["started_by_main_greenlet"]
    assert max(seen["main_greenlet_sizes"]) >= CHECKPOINT_BYTES  # SQLite did not checkpoint either
    sizes = seen["sizes"]  # 5 writers x 400 commits x 12 kB: 24 MB written
    assert any(later < earlier for earlier, later in zip(sizes, sizes[1:]))  # the WAL was reset
    assert max(sizes) < 4 * CHECKPOINT_BYTES
    assert seen["restarted_wal_size"] == WAL_HEADER + WAL_FRAME_HEADER + PAGE  # its first frame written
    checkpoints = {(path, thread) for path, thread in seen["checkpoint_threads"]}
    assert {path for path, _thread in checkpoints} == {str(main), str(index)}
    assert seen["loop_thread"] not in {thread for _path, thread in checkpoints}
    assert seen["index_autocheckpoint"] == 0
    assert seen["index_wal_size"] < 2 * CHECKPOINT_BYTES  # 1000 transactions of 3 kB and more written


def test_without_gevent_sqlite_checkpoints_by_itself(tmp_path):
    db = open_sqlite(tmp_path / "starpod.db")
    with db.connection_context():
        db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)")
        assert db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    sizes = write_rows(db, 1000)  # 12 MB
    assert max(sizes) < 2 * CHECKPOINT_BYTES
    assert not db.checkpoints._running
