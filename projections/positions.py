"""Tracking positions: per (projection, topic, partition), the first offset not yet applied.

Owns every read and write of `projection_positions`. Positions only move forward (`advance` keeps
the greater offset), so a slower writer never undoes a faster one. `lock` takes the rows FOR
UPDATE in one fixed order: the runner's batch transactions and the rebuild's swap serialize on them
without deadlocking (measured, it costs about one round trip per batch). `advance` is one
statement of constant text, the rows as arrays, so it is compiled once rather than per batch.
Imports `projections.tables`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from sqlalchemy import Connection, TextClause, select, text
from sqlalchemy.dialects.postgresql import insert

from projections.tables import Tables

Positions = dict[tuple[str, int], int]  # (projection, partition) -> next offset


def load(conn: Connection, tables: Tables, topic: str, projections: Iterable[str],
         partitions: Iterable[int] | None = None) -> Positions:
    """The stored positions (of `partitions` only, when given)."""
    parts = None if partitions is None else sorted(set(partitions))
    return _select(conn, tables, topic, list(projections), parts, for_update=False)


def lock(conn: Connection, tables: Tables, topic: str, projections: Iterable[str],
         partitions: Iterable[int] | None = None) -> Positions:
    """The stored positions, locked until the transaction ends (rows that do not exist are absent)."""
    parts = None if partitions is None else sorted(set(partitions))
    return _select(conn, tables, topic, sorted(projections), parts, for_update=True)


def _select(conn: Connection, tables: Tables, topic: str, projections: list[str],
            partitions: list[int] | None, *, for_update: bool) -> Positions:
    p = tables.positions
    query = select(p.c.projection, p.c.partition, p.c.next_offset).where(
        p.c.topic == topic, p.c.projection.in_(projections))
    if partitions is not None:
        query = query.where(p.c.partition.in_(partitions))
    query = query.order_by(p.c.projection, p.c.partition)
    if for_update:
        query = query.with_for_update()
    return {(row.projection, row.partition): row.next_offset for row in conn.execute(query)}


def advance(conn: Connection, tables: Tables, topic: str, positions: Positions) -> None:
    """Store `positions`, keeping any greater offset already stored (one statement of constant text,
    the rows as arrays: it runs once per batch)."""
    if not positions:
        return
    rows = sorted(positions.items())
    conn.execute(_advance_sql(tables.positions.name), {
        "topic": topic,
        "projections": [proj for (proj, _part), _offset in rows],
        "partitions": [part for (_proj, part), _offset in rows],
        "offsets": [offset for _key, offset in rows],
    })


@functools.cache
def _advance_sql(table: str) -> TextClause:
    return text(
        f'INSERT INTO "{table}" AS p (projection, topic, partition, next_offset) '
        "SELECT v.projection, :topic, v.partition, v.next_offset "
        "FROM unnest(CAST(:projections AS TEXT[]), CAST(:partitions AS INTEGER[]), CAST(:offsets AS BIGINT[])) "
        "AS v(projection, partition, next_offset) "
        "ON CONFLICT (projection, topic, partition) "
        "DO UPDATE SET next_offset = GREATEST(p.next_offset, EXCLUDED.next_offset)")


def ensure(conn: Connection, tables: Tables, topic: str, projections: Iterable[str],
           partitions: Iterable[int]) -> None:
    """Create missing rows at offset 0 (the beginning), so that `lock` has rows to lock."""
    p = tables.positions
    rows = [{"projection": proj, "topic": topic, "partition": part, "next_offset": 0}
            for proj in sorted(projections) for part in sorted(partitions)]
    if rows:
        conn.execute(insert(p).values(rows).on_conflict_do_nothing())


def start_offsets(stored: Positions, projections: Iterable[str], partitions: Iterable[int]) -> dict[int, int | None]:
    """Where to start reading each partition: the smallest position of the projections (None, the
    beginning, when one of them has none)."""
    names = list(projections)
    starts: dict[int, int | None] = {}
    for part in partitions:
        offsets = [stored.get((name, part)) for name in names]
        starts[part] = None if any(o is None for o in offsets) else min(o for o in offsets if o is not None)
    return starts
