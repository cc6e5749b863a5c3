"""Time travel from a snapshot: the rows of the events up to an offset, stored as JSON and restored,
with the events after it folded on top, are the rows a replay of the whole log makes — for every
read model, or one row alone. No broker, no database (`tests/integration/test_audit.py` checks the
projector's snapshots through the API)."""
from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from projections.snapshots import record, restore
from projections.stream import Item
from projections.tables import READ_MODELS, build_tables
from projections.timetravel import replay
from tests.integration.projection_support import LARGE, SMALL, EventLog

END = datetime.max.replace(tzinfo=UTC)
TABLES = build_tables()


def _log() -> EventLog:
    log = EventLog()
    log.organization("acme", "Acme", owner="alice")
    log.service("acme", "db1", "orders")
    log.service("acme", "db2", "cache", engine="dragonfly")
    log.scale("acme", "db1", SMALL, LARGE)
    op = log.delete("acme", "db2")
    log.service_deleted("acme", "db2", op)
    log.backup_policy("acme", "db1")
    log.reject("acme", "CreateService", "invalid", "engine", "no such engine")
    return log


def _stored(rows) -> dict:
    """What `to_jsonb` keeps of the rows: JSON, times in some zone, 1.0 written as 1."""
    def default(value):
        if isinstance(value, datetime):
            return value.astimezone(timezone(timedelta(hours=2))).isoformat()
        raise TypeError(value)
    text = json.dumps(rows, default=default).replace(": 1.0,", ": 1,")
    return {name: {key: restore(TABLES.read_model(name), row) for key, row in table.items()}
            for name, table in json.loads(text).items()}


@pytest.mark.parametrize("cut", [1, 3, 6])
def test_rows_from_a_snapshot_and_the_tail_equal_a_whole_replay(cut):
    envelopes = _log().envelopes
    whole = replay(envelopes, END)
    snapshot = _stored(replay(envelopes[:cut], END))
    assert replay(envelopes[cut:], END, snapshot) == whole
    assert set(whole) == set(READ_MODELS)


def test_one_row_from_a_snapshot_equals_that_row_of_a_whole_replay():
    envelopes = _log().envelopes
    snapshot = _stored(replay(envelopes[:3], END))
    only = {"services": {"db1": snapshot["services"]["db1"]}}
    assert replay(envelopes[3:], END, only, only=("services", "db1"))["services"]["db1"] == \
        replay(envelopes, END)["services"]["db1"]


def test_restored_rows_have_utc_times_and_float_resources():
    row = restore(TABLES.services, {"cpu": 1, "created_at": "2026-01-01T02:00:00+02:00", "deleted_at": None})
    assert row == {"cpu": 1.0, "created_at": datetime(2026, 1, 1, tzinfo=UTC), "deleted_at": None}
    assert isinstance(row["cpu"], float) and row["created_at"].tzinfo is UTC


class FakeConnection:
    """Answers the marks statement with the organizations it is told are due."""

    def __init__(self, due: list[tuple]) -> None:
        self.due = due
        self.calls: list[tuple[str, dict]] = []

    def execute(self, statement, params):
        self.calls.append((str(statement), params))
        return self.due if "RETURNING" in str(statement) else []


def _items(envelopes, partition: int = 0, first: int = 0) -> list[Item]:
    return [Item(partition, first + i, env, None, None) for i, env in enumerate(envelopes)]  # type: ignore[arg-type]


def test_the_projector_counts_each_organizations_events_once_with_their_times():
    envelopes = _log().envelopes
    late = dataclasses.replace(envelopes[2], occurred_at=envelopes[0].occurred_at - timedelta(hours=1))
    items = _items([envelopes[0], envelopes[1], late, *envelopes[3:]], first=10)
    conn = FakeConnection([])
    stored = {(name, 0): 12 for name in ("services", "operations")}  # offsets 10 and 11 are counted already
    assert record(conn, TABLES, "t", items, stored, ["services", "operations"], every=3) == 0
    [(_sql, params)] = conn.calls
    assert params["tenants"] == ["acme"] and params["events"] == [len(items) - 2]
    assert params["earliest"] == [late.occurred_at] and params["until"] == [envelopes[-1].occurred_at]
    assert params["starts"] == [12]  # where this partition began to be counted


def test_a_due_organization_is_snapshotted_where_every_projection_applied_the_batch():
    items = _items(_log().envelopes)
    due = [("acme", 11, items[-1].envelope.occurred_at, items[0].envelope.occurred_at, True)]
    conn = FakeConnection(due)
    assert record(conn, TABLES, "t", items, {}, ["services", "operations"], every=3) == 1
    snapshots = [p for sql, p in conn.calls if "tenant_snapshots" in sql and "INSERT" in sql]
    assert len(snapshots) == len(READ_MODELS) and {p["next_offset"] for p in snapshots} == {len(items)}
    uneven = {("services", 0): 0, ("operations", 0): 5}  # a projection ahead: no snapshot
    assert record(FakeConnection(due), TABLES, "t", _items(_log().envelopes, first=5), uneven,
                  ["services", "operations"], every=3) == 0
    assert record(FakeConnection(due), TABLES, "t", items, {}, ["services"], every=0) == 0
