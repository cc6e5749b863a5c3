"""Time travel from a snapshot: the rows of the events up to an offset, stored as JSON and restored,
with the events after it folded on top, are the rows a replay of the whole log makes — for every
read model, or one row alone. No broker, no database (`tests/integration/test_audit.py` checks the
projector's snapshots through the API)."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from projections.snapshots import restore
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
