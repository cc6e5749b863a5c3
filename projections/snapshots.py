"""Snapshots of an organization's read-model rows, so that time travel replays a short tail of the
log instead of all of it.

Owns the writing side (`record`, called by the projector inside each batch's transaction) and the
reading side (`latest`, for `projections.timetravel`). Per organization the projector counts the
events it sees (`tenant_snapshot_marks`: how many, the latest `occurred_at` among them) and, once
`every` events have passed since the last snapshot, copies the organization's rows of every read
model into `tenant_snapshots` (one row per read model: row id -> row, built by PostgreSQL with
`to_jsonb`), tagged with the offset in the organization's partition that every event before it is
in. A replay to moment T starts from the latest snapshot whose events all occurred at or before T
and folds the events after its offset (an organization's events share one partition, in order).

Exactly the replay's rows: a snapshot is taken only where every projection applied the whole batch
(their positions agree), the trace id the live rows keep is left out (a replay has none), and only
for partitions counted from their first offset (`tenant_snapshot_partitions.counted_from = 0`):
otherwise an organization's earlier events are uncounted and its `occurred_until` could be too early.
A rebuild deletes the snapshots (their rows may be what the old projections made) and the
organizations get new ones as their events come. Imports SQLAlchemy and `projections.tables`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Double, Table, TextClause, text

from projections.positions import Positions
from projections.stream import Item
from projections.tables import READ_MODELS, Tables

EVERY = 1000  # events of an organization between two of its snapshots (DBAAS_PROJECTIONS_SNAPSHOT_EVERY)
Rows = dict[str, dict[str, dict[str, Any]]]  # read model -> row id -> row


@dataclass(frozen=True)
class Snapshot:
    """An organization's rows before `next_offset` of its partition: `events` events, the latest of
    which occurred at `occurred_until`. `read_until`: the offset after which none of its events
    occurred at or before the moment asked about (None: read to the log's end). With `next_offset` 0
    and no rows it stands for the beginning of the partition: no snapshot precedes the moment, yet
    the partition and the end to read to are known."""

    partition: int
    next_offset: int
    events: int
    occurred_until: datetime | None
    rows: Rows
    read_until: int | None = None


# -- writing ------------------------------------------------------------------------------------

def record(conn: Connection, tables: Tables, topic: str, items: Sequence[Item], stored: Positions,
           projections: Sequence[str], every: int) -> int:
    """Count the batch's events per organization and snapshot those `every` events past their last
    snapshot; the number of snapshots taken. Runs in the batch's transaction, after its rows."""
    if every <= 0:
        return 0
    seen: dict[str, list[Any]] = {}  # tenant -> [partition, events, occurred_until, next offset, earliest]
    ahead: dict[int, int] = {}  # partition -> the furthest projection's position: before it, counted already
    for item in items:
        env = item.envelope
        if item.partition not in ahead:
            ahead[item.partition] = max(stored.get((name, item.partition), 0) for name in projections)
        if env is None or item.offset < ahead[item.partition]:
            continue
        counted = seen.get(env.tenant_id)
        if counted is None:
            seen[env.tenant_id] = [item.partition, 1, env.occurred_at, item.offset + 1, env.occurred_at]
        else:
            counted[1] += 1
            counted[2] = max(counted[2], env.occurred_at)
            counted[3] = max(counted[3], item.offset + 1)
            counted[4] = min(counted[4], env.occurred_at)
    if not seen:
        return 0
    partitions = sorted({c[0] for c in seen.values()})
    tenants = sorted(seen)
    due = _due(conn.execute(_sql(tables, "marks"), {
        "topic": topic, "parts": partitions, "starts": [min(stored.get((name, p), 0) for name in projections)
                                                        for p in partitions],
        "tenants": tenants, "partitions": [seen[t][0] for t in tenants],
        "events": [seen[t][1] for t in tenants], "until": [seen[t][2] for t in tenants],
        "earliest": [seen[t][4] for t in tenants], "every": every}))
    whole = {p for p in partitions if len({stored.get((name, p)) for name in projections}) == 1}
    taken = 0
    for tenant, events, occurred_until, segment_min in due:
        partition, _n, _at, next_offset, _min = seen[tenant]
        if partition not in whole:
            continue
        for name in READ_MODELS:
            conn.execute(_sql(tables, name), {"topic": topic, "tenant": tenant, "next_offset": next_offset,
                                              "partition": partition, "events": events, "until": occurred_until,
                                              "segment_min": segment_min})
        conn.execute(_sql(tables, "taken"), {"topic": topic, "tenant": tenant, "events": events})
        taken += 1
    return taken


@functools.cache
def _statements(tables: Tables) -> dict[str, TextClause]:
    marks, parts, snaps = (tables.snapshot_marks.name, tables.snapshot_partitions.name, tables.snapshots.name)
    statements = {
        # ONE statement per batch: the partitions' counting starts (kept from the first), and the
        # marks of the batch's organizations; those due for a snapshot come back (when their
        # partition is counted from its first offset; a partition first seen in this very batch is
        # not visible to it yet, and its organizations are snapshotted at their next batch)
        "marks": text(
            f'WITH parts AS (INSERT INTO "{parts}" (topic, partition, counted_from) '
            "SELECT :topic, p, s FROM unnest(CAST(:parts AS INTEGER[]), CAST(:starts AS BIGINT[])) AS v(p, s) "
            "ON CONFLICT DO NOTHING) "
            f'INSERT INTO "{marks}" AS m (topic, tenant_id, partition, events, snapshotted, occurred_until, '
            "since_min) SELECT :topic, t, p, n, 0, u, e FROM unnest(CAST(:tenants AS TEXT[]), "
            "CAST(:partitions AS INTEGER[]), CAST(:events AS BIGINT[]), CAST(:until AS TIMESTAMPTZ[]), "
            "CAST(:earliest AS TIMESTAMPTZ[])) AS v(t, p, n, u, e) "
            "ON CONFLICT (topic, tenant_id) DO UPDATE SET events = m.events + EXCLUDED.events, "
            "partition = EXCLUDED.partition, occurred_until = GREATEST(m.occurred_until, EXCLUDED.occurred_until), "
            "since_min = LEAST(m.since_min, EXCLUDED.since_min) "
            "RETURNING m.tenant_id, m.events, m.occurred_until, m.since_min, "
            "m.events - m.snapshotted >= :every AND EXISTS ("
            f'SELECT 1 FROM "{parts}" c WHERE c.topic = m.topic AND c.partition = m.partition AND c.counted_from = 0)'),
        "taken": text(f'UPDATE "{marks}" SET snapshotted = :events, since_min = NULL '
                      "WHERE topic = :topic AND tenant_id = :tenant"),
    }
    for name in READ_MODELS:
        table = tables.read_model(name)
        row = 'to_jsonb(r) || \'{"trace_id": null}\'' if "trace_id" in table.c else "to_jsonb(r)"
        owner = "r.id" if name == "organizations" else "r.tenant_id"
        statements[name] = text(
            f'INSERT INTO "{snaps}" (topic, tenant_id, next_offset, read_model, partition, events, occurred_until, '
            f"segment_min, rows) SELECT :topic, :tenant, :next_offset, '{name}', :partition, :events, :until, "
            ":segment_min, "
            f"COALESCE(jsonb_object_agg(r.id, {row}), '{{}}') FROM \"{table.name}\" r WHERE {owner} = :tenant "
            "ON CONFLICT DO NOTHING")
    return statements


def _sql(tables: Tables, name: str) -> TextClause:
    return _statements(tables)[name]


def _due(rows: Any) -> list[tuple[str, int, datetime, datetime | None]]:
    return [(tenant, events, until, earliest) for tenant, events, until, earliest, due in rows if due]


def forget(conn: Connection, tables: Tables, topic: str) -> None:
    """Delete the snapshots of `topic` (a rebuild: their rows may be the old projections'); every
    organization is due for a new one at its next event, and its events since the beginning count
    as one stretch (its earliest time kept, so a replay still knows where to stop)."""
    m, s = tables.snapshot_marks.name, tables.snapshots.name
    conn.execute(text(
        f'UPDATE "{m}" AS m SET snapshotted = 0, since_min = LEAST(m.since_min, (SELECT min(s.segment_min) '
        f"FROM \"{s}\" s WHERE s.topic = m.topic AND s.tenant_id = m.tenant_id AND s.read_model = 'services')) "
        "WHERE m.topic = :topic"), {"topic": topic})
    conn.execute(text(f'DELETE FROM "{s}" WHERE topic = :topic'), {"topic": topic})


# -- reading ------------------------------------------------------------------------------------

def latest(conn: Connection, tables: Tables, topic: str, tenant: str, until: datetime,
           read_model: str | None = None, row_id: str | None = None) -> Snapshot | None:
    """Where a replay of `tenant` to moment `until` starts and ends: its latest snapshot whose events
    all occurred at or before `until` (every read model's rows, or `read_model`'s only, or only its
    row `row_id`), or the beginning of its partition; and the offset after which none of its events
    occurred at or before `until` — the end of the last stretch between two snapshots (or after the
    last one) whose earliest event did. None when the organization's partition was not counted from
    its first offset: replay the whole log."""
    s, m, c = tables.snapshots, tables.snapshot_marks, tables.snapshot_partitions
    mark = conn.execute(text(
        f'SELECT m.partition, m.since_min FROM "{m.name}" m '
        f'JOIN "{c.name}" c ON c.topic = m.topic AND c.partition = m.partition AND c.counted_from = 0 '
        "WHERE m.topic = :topic AND m.tenant_id = :tenant"), {"topic": topic, "tenant": tenant}).first()
    if mark is None:
        return None
    stretches = conn.execute(text(
        f'SELECT next_offset, events, occurred_until, segment_min FROM "{s.name}" '
        "WHERE topic = :topic AND tenant_id = :tenant AND read_model = 'services' ORDER BY next_offset"),
        {"topic": topic, "tenant": tenant}).all()
    start = None
    for stretch in stretches:
        if stretch.occurred_until <= until:
            start = stretch
    begin = start.next_offset if start is not None else 0
    # past the last snapshot, to the log's end (events not projected yet included) when an event
    # counted since occurred at or before `until`; else up to the last stretch with such an event
    read_until = None if mark.since_min is not None and mark.since_min <= until else begin
    if read_until is not None:
        for stretch in stretches:
            if stretch.next_offset > begin and (stretch.segment_min is None or stretch.segment_min <= until):
                read_until = stretch.next_offset
    names = list(READ_MODELS) if read_model is None else [read_model]
    rows: Rows = {name: {} for name in names}
    if start is None:
        return Snapshot(mark.partition, 0, 0, None, rows, read_until)
    key = {"topic": topic, "tenant": tenant, "next_offset": start.next_offset, "names": names}
    if row_id is None:
        stored = conn.execute(text(
            f'SELECT read_model, rows::text FROM "{s.name}" WHERE topic = :topic AND tenant_id = :tenant '
            "AND next_offset = :next_offset AND read_model = ANY(:names)"), key).all()
        for name, document in stored:
            rows[name] = {rid: restore(tables.read_model(name), row) for rid, row in json.loads(document).items()}
    else:  # the one row, extracted by PostgreSQL (the document is read once)
        stored = conn.execute(text(
            f'SELECT read_model, (rows -> CAST(:row_id AS TEXT))::text FROM "{s.name}" WHERE topic = :topic '
            "AND tenant_id = :tenant AND next_offset = :next_offset AND read_model = ANY(:names)"),
            {**key, "row_id": row_id}).all()
        for name, document in stored:
            if document is not None:
                rows[name] = {row_id: restore(tables.read_model(name), json.loads(document))}
    return Snapshot(mark.partition, start.next_offset, start.events, start.occurred_until, rows, read_until)


@functools.cache
def _kinds(table: Table) -> tuple[frozenset[str], frozenset[str]]:
    return (frozenset(c.name for c in table.columns if isinstance(c.type, DateTime)),
            frozenset(c.name for c in table.columns if isinstance(c.type, Double)))


def restore(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as `to_jsonb` wrote it -> the row as the projectors' changes make it in memory: times
    back to UTC datetimes, floats back to floats (JSON writes 1.0 as 1)."""
    times, floats = _kinds(table)
    out = dict(row)
    for name in times:
        if (value := out.get(name)) is not None:
            out[name] = datetime.fromisoformat(value).astimezone(UTC)
    for name in floats:
        if (value := out.get(name)) is not None:
            out[name] = float(value)
    return out
