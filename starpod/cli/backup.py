"""`starpod backup <file>`: one consistent .tar.gz of a data directory, safe while the server runs.

The database is copied with SQLite's online backup API (a consistent snapshot, whatever the
workers write meanwhile); every other file (config, memory markdown, users' spaces, skills,
workspace) is copied as it is.  Left out: the rest of `db/` (the memory index is rebuilt from the
markdown at start; the rest is per-process state), `run/` (sockets) and `instances/` (each
instance is a data directory of its own; back it up with `--home <home>/instances/<id>/.starpod`).

Restore: extract the archive into an empty directory and point the server at it:
`mkdir new-home && tar -xzf backup.tar.gz -C new-home && STARPOD_HOME=new-home starpod doctor`.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import tarfile
import tempfile
from pathlib import Path

from .common import CliError, add_command, data_directory, print_record, require_initialized

SKIPPED_DIRS = ("db", "run", "instances")


def register(subparsers, common) -> None:
    command = add_command(subparsers, "backup", common, run,
                          "Back up the data directory to FILE (.tar.gz), also while the server runs.",
                          "Restore: tar -xzf FILE -C <empty directory>, then use that directory as "
                          "STARPOD_HOME (the memory index is rebuilt at start).")
    command.add_argument("file", type=Path, help="archive to create (must not exist)")


def run(args: argparse.Namespace) -> int:
    config = data_directory(args)
    require_initialized(config)
    if config.database_url:
        raise CliError("the relational data lives in PostgreSQL (DATABASE_URL): back it up with pg_dump, "
                       f"and the files with an archive of {config.home}")
    target = args.file.expanduser().resolve()
    if target.exists():
        raise CliError(f"{target} already exists; choose another name")
    if not target.parent.is_dir():
        raise CliError(f"{target.parent} is not a directory")
    partial = target.with_name(target.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="starpod-backup-") as scratch:
        snapshot = Path(scratch) / "starpod.db"
        snapshot_database(config.db_path, snapshot)
        try:
            count = write_archive(partial, config.home, snapshot, skip={partial, target})
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    size = target.stat().st_size
    print_record(args, {"home": str(config.home), "file": str(target), "files": count, "bytes": size},
                 f"Backed up {config.home} ({count} files) to {target} ({size / 1e6:.1f} MB).")
    return 0


def snapshot_database(source: Path, target: Path) -> None:
    """Copy `source` to `target` with the online backup API, as one self-contained file."""
    src = sqlite3.connect(str(source), timeout=30)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)  # all pages in one step: one consistent read transaction
        dst.execute("PRAGMA journal_mode=DELETE")  # no -wal file beside the copy
    finally:
        dst.close()
        src.close()


def write_archive(path: Path, home: Path, snapshot: Path, skip: set[Path]) -> int:
    """The archive at `path`: the database snapshot as db/starpod.db plus home's other files."""
    count = 1
    path.unlink(missing_ok=True)  # a leftover of an interrupted run
    # Readable by this user only: the archive holds chats and key hashes.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as archive:
        archive.add(snapshot, arcname="db/starpod.db")
        for file in _files_to_copy(home, skip):
            archive.add(file, arcname=str(file.relative_to(home)), recursive=False)
            count += 1
    return count


def _files_to_copy(home: Path, skip: set[Path]):
    for root, dirs, files in os.walk(home):
        here = Path(root)
        if here == home:
            dirs[:] = [name for name in dirs if name not in SKIPPED_DIRS]
        for name in sorted(files):
            file = here / name
            if file not in skip:
                yield file
