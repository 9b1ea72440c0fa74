"""`starpod db migrate|copy`: the relational database from the shell.

`migrate` applies pending schema migrations to the data directory's database (SQLite under
`db/`, or PostgreSQL when DATABASE_URL is set; servers also migrate at start).  `copy` moves an
existing deployment between engines, e.g. `--from sqlite:///<home>/db/starpod.db --to
postgresql://…`: every table in foreign-key order, verified by row counts and checksums; a
non-empty target is refused unless `--force`.  Stop the servers while copying.
"""
from __future__ import annotations

import argparse

from .common import CliError, add_command, add_group, data_directory, print_record, print_rows, require_initialized

COPY_COLUMNS = [("table", "TABLE"), ("rows", "ROWS"), ("checksum", "CHECKSUM")]


def register(subparsers, common) -> None:
    group = add_group(subparsers, "db", common, "Migrate or copy the relational database.")
    add_command(group, "migrate", common, migrate, "Apply pending schema migrations to this data directory's database.")
    copy = add_command(group, "copy", common, copy_database, "Copy every table from one database to another.",
                       "URLs: sqlite:///path/to/starpod.db or postgresql://user@host:port/name. "
                       "Stop the servers first.")
    copy.add_argument("--from", dest="source", required=True, metavar="URL")
    copy.add_argument("--to", dest="target", required=True, metavar="URL")
    copy.add_argument("--force", action="store_true", help="replace the rows of a non-empty target")


def migrate(args: argparse.Namespace) -> int:
    from ..db import open_database
    from ..migrations import migrate as apply_migrations

    config = data_directory(args)
    require_initialized(config)
    applied = apply_migrations(open_database(config.db_path, config.database_url))
    print_record(args, {"applied": applied},
                 f"Applied {', '.join(applied)}." if applied else "Database schema is up to date.")
    return 0


def copy_database(args: argparse.Namespace) -> int:
    from ..dbcopy import CopyError, copy_database as copy

    try:
        tables = copy(args.source, args.target, force=args.force)
    except (CopyError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print_rows(args, COPY_COLUMNS, ({"table": t.table, "rows": t.rows, "checksum": t.checksum} for t in tables))
    return 0
