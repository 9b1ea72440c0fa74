"""Moving a deployment between databases: `starpod db migrate` and `starpod db copy` (no Flask).

`migrate_url(url)` brings the database at `url` (`sqlite:///path` or `postgresql://…`) up to the
current schema.  `copy_database(source, target)` migrates both, copies every table of
`starpod.models` in foreign-key order (values passed through the model fields so booleans and numbers arrive in the target's own types), moves PostgreSQL id
sequences past the copied ids, and verifies each table by row count and a checksum of its rows.
A target holding any row is refused unless `force`, which empties it first.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from peewee import AutoField, BigAutoField, Database, sort_models

from . import models
from .db import is_postgresql, is_postgresql_url, open_postgresql, open_sqlite, placeholders
from .migrations import migrate

BATCH_ROWS = 500


class CopyError(Exception):
    """The copy cannot start or did not produce an identical target."""


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    checksum: str


def open_url(url: str) -> Database:
    """A database for `url`: `sqlite:///relative/or//absolute/path` or `postgresql://…`."""
    if is_postgresql_url(url):
        return open_postgresql(url, max_connections=2)
    if url.startswith("sqlite:///"):
        return open_sqlite(Path(url[len("sqlite:///"):]))
    raise CopyError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://…")


def all_models() -> list:
    """Every model of `starpod.models`, parents before the tables that reference them."""
    found, pending = [], list(models.BaseModel.__subclasses__())
    while pending:
        model = pending.pop()
        found.append(model)
        pending.extend(model.__subclasses__())
    return sort_models(found)


@contextmanager
def _bound(db: Database):
    """The models (normally bound to the shared proxy) bound to `db` for the duration."""
    with db.bind_ctx(all_models(), bind_refs=False, bind_backrefs=False), db.connection_context():
        yield db


def migrate_url(url: str) -> list[str]:
    """Apply the pending migrations to the database at `url`; the names applied."""
    db = open_url(url)
    try:
        with _bound(db):
            return migrate(db)
    finally:
        db.close_all()


def _columns(model) -> list:
    return list(model._meta.sorted_fields)


def _select_sql(model) -> str:
    columns = ", ".join(f'"{field.column_name}"' for field in _columns(model))
    order = ", ".join(f'"{field.column_name}"' for field in model._meta.get_primary_keys())
    return f'SELECT {columns} FROM "{model._meta.table_name}" ORDER BY {order}'


def _rows(db: Database, model):
    """The table's rows in primary-key order, as Python values of the model's fields."""
    fields = _columns(model)
    cursor = db.execute_sql(_select_sql(model))
    while batch := cursor.fetchmany(BATCH_ROWS):
        for raw in batch:
            yield tuple(field.python_value(value) for field, value in zip(fields, raw))


def _insert_batch(db: Database, model, rows: list[tuple]) -> None:
    fields = _columns(model)
    columns = ", ".join(f'"{field.column_name}"' for field in fields)
    sql = placeholders(f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES '
                       f'({", ".join("?" for _ in fields)})', db)
    db.cursor().executemany(sql, [tuple(f.db_value(v) for f, v in zip(fields, row)) for row in rows])


def _row_text(row: tuple) -> str:
    return json.dumps(row, default=str, separators=(",", ":"))


def table_summary(db: Database, model) -> TableCopy:
    """Row count and checksum of the model's table in `db`.

    The checksum is the sum of the rows' SHA-256 values (mod 2**256), so it does not depend on
    row order, which differs between engines for text keys (PostgreSQL sorts by its collation).
    """
    total, count = 0, 0
    for row in _rows(db, model):
        total += int.from_bytes(hashlib.sha256(_row_text(row).encode()).digest(), "big")
        count += 1
    return TableCopy(model._meta.table_name, count, f"{total % 2 ** 256:064x}")


def _non_empty_tables(db: Database) -> list[str]:
    return [m._meta.table_name for m in all_models()
            if db.execute_sql(f'SELECT 1 FROM "{m._meta.table_name}" LIMIT 1').fetchone()]


def _reset_sequences(db: Database) -> None:
    """Move PostgreSQL's id sequences past the copied ids, so new rows do not collide."""
    for model in all_models():
        key = model._meta.primary_key
        if isinstance(key, (AutoField, BigAutoField)):
            table, column = model._meta.table_name, key.column_name
            db.execute_sql(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), "
                           f'COALESCE((SELECT MAX("{column}") FROM "{table}"), 0) + 1, false)')


def _copy_table(source: Database, target: Database, model) -> None:
    batch = []
    for row in _rows(source, model):
        batch.append(row)
        if len(batch) >= BATCH_ROWS:
            _insert_batch(target, model, batch)
            batch = []
    if batch:
        _insert_batch(target, model, batch)


def copy_database(source_url: str, target_url: str, force: bool = False) -> list[TableCopy]:
    """Copy every Starpod table from `source_url` to `target_url`; the verified per-table summary.

    Raises CopyError when the target already holds rows (and not `force`) or when a table's count
    or checksum differs after the copy (the target is then left as copied, for inspection).
    """
    if source_url == target_url:
        raise CopyError("source and target are the same database")
    migrate_url(source_url)
    migrate_url(target_url)
    source, target = open_url(source_url), open_url(target_url)
    try:
        with source.connection_context(), target.connection_context():
            _copy_all(source, target, force)
            return _verify(source, target)
    finally:
        source.close_all()
        target.close_all()


def _copy_all(source: Database, target: Database, force: bool) -> None:
    occupied = _non_empty_tables(target)
    if occupied and not force:
        raise CopyError(f"the target is not empty ({', '.join(occupied)}); pass force to replace its rows")
    with target.atomic():
        for model in reversed(all_models()):
            target.execute_sql(f'DELETE FROM "{model._meta.table_name}"')
        for model in all_models():
            _copy_table(source, target, model)
        if is_postgresql(target):
            _reset_sequences(target)


def _verify(source: Database, target: Database) -> list[TableCopy]:
    summaries = []
    for model in all_models():
        expected, copied = table_summary(source, model), table_summary(target, model)
        if expected != copied:
            raise CopyError(f"table {expected.table}: source has {expected.rows} rows ({expected.checksum[:12]}), "
                            f"target {copied.rows} ({copied.checksum[:12]})")
        summaries.append(expected)
    return summaries
