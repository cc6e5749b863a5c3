"""Writing a batch's changes to one read model with set-based statements: a few per batch, not one
per event.

Owns `write(conn, table, changes)`. The changes are folded per row (`projections.fold`), then:

- whole rows (the usual case: a row created, or replaced, by the batch's last change to it) go in
  ONE `INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE t.version < EXCLUDED.version`, the upsert a
  single event does, for the whole batch;
- other net changes (columns changed by the batch, or a row created and then changed) go in ONE
  `UPDATE ... FROM` the batch, where the stored row is older than `top`, each column taking the
  batch's value only if the change that set it is newer than the stored row (`<column>__since`),
  then ONE `INSERT ... ON CONFLICT DO NOTHING` of the rows they create where none is stored.

That is, for every stored row, what applying the changes one by one does (see `projections.fold`);
the rare chains no net change describes are written change by change. Rows travel as one array
parameter per column (`unnest`, binary format), so the statement text, hence its prepared plan,
does not depend on the batch size, and the key index is probed row by row (no join to plan, so no
scan of a large table). Statements are built once per table from its definition.
Imports SQLAlchemy and `projections.fold`, `.projectors`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from projections.fold import Net, fold
from projections.projectors import Change, write_one

_SINCE = "__since"


def write(conn: Connection, table: Table, changes: Sequence[Change]) -> None:
    """Apply `changes` (in log order) to `table`, as applying them one by one would."""
    folded = fold(changes)
    whole = [n for n in folded.nets if n.whole]
    other = [n for n in folded.nets if not n.whole]
    if whole:
        conn.exec_driver_sql(_statements(table).upsert, _arrays(table, whole))
    if other:
        conn.exec_driver_sql(_statements(table).update, _arrays(table, other, since=True))
    if creating := [n for n in other if n.creates]:
        conn.exec_driver_sql(_statements(table).insert, _arrays(table, creating))
    for chain in folded.chains:
        for change in chain:
            write_one(conn, table, change)


@dataclass(frozen=True)
class Statements:
    """The set-based statements of one table; their parameters are arrays (see `_arrays`)."""

    upsert: str  # whole rows: inserted, or replacing an older row
    update: str  # net changes to stored rows older than `top`, column by column
    insert: str  # rows created by net changes, where none is stored


@lru_cache(maxsize=64)
def _columns(table: Table) -> tuple[Column, ...]:
    """The columns a change sets: all but the key and the version."""
    return tuple(c for c in table.columns if c.name not in ("id", "version"))


@lru_cache(maxsize=64)
def _statements(table: Table) -> Statements:
    names = [c.name for c in _columns(table)]
    types = [c.type.compile(dialect=postgresql.dialect()) for c in _columns(table)]
    row = [("id", "TEXT"), *zip(names, types, strict=True), ("top", "BIGINT")]
    since = [(f"{name}{_SINCE}", "BIGINT") for name in names]
    target = f'"{table.name}" AS t ({_quoted(["id", *names, "version"])})'
    return Statements(
        upsert=f"INSERT INTO {target} SELECT * FROM {_unnest(row)} "
               f"ON CONFLICT (id) DO UPDATE SET {_quoted_pairs(names, 'EXCLUDED')}, version = EXCLUDED.version "
               f"WHERE t.version < EXCLUDED.version",
        update=f'UPDATE "{table.name}" AS t SET '
               + ", ".join(f'"{c}" = CASE WHEN t.version < v."{c}{_SINCE}" THEN v."{c}" ELSE t."{c}" END'
                           for c in names)
               + f", version = v.top FROM {_unnest(row + since)} WHERE t.id = v.id AND t.version < v.top",
        insert=f"INSERT INTO {target} SELECT * FROM {_unnest(row)} ON CONFLICT (id) DO NOTHING",
    )


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _quoted_pairs(names: Iterable[str], source: str) -> str:
    return ", ".join(f'"{name}" = {source}."{name}"' for name in names)


def _unnest(source: list[tuple[str, str]]) -> str:
    """`unnest(<one array parameter per column>) AS v(<columns>)`; arrays go in the binary format."""
    arrays = ", ".join(f"%({name})b::{sql_type}[]" for name, sql_type in source)
    return f"unnest({arrays}) AS v({_quoted(name for name, _ in source)})"


def _arrays(table: Table, nets: list[Net], *, since: bool = False) -> dict[str, list[Any]]:
    """One list per source column: `id`, the columns, `top` (and with `since`, each column's
    `__since`). A column a net does not set is NULL, and so is its `__since`: the stored value stays
    (`t.version < NULL` is not true)."""
    columns = _columns(table)
    params: dict[str, list[Any]] = {"id": [n.key for n in nets], "top": [n.top for n in nets]}
    if all(n.whole for n in nets):  # every net sets every column: transpose the rows at C speed
        row = itemgetter(*(c.name for c in columns))
        by_column: Iterable[Sequence[Any]] = zip(*(row(n.values) for n in nets), strict=True)
    else:
        by_column = ([n.values.get(c.name) for n in nets] for c in columns)
    for column, values in zip(columns, by_column, strict=True):
        if isinstance(column.type, JSONB):  # as text, which the cast parses: no JSON adapter needed
            values = [None if v is None else json.dumps(v) for v in values]
        params[column.name] = list(values)
        if since:
            params[f"{column.name}{_SINCE}"] = [n.since.get(column.name) for n in nets]
    return params
