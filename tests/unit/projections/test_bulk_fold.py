"""The rebuild's bulk path folds a log into rows in memory exactly as the projectors' changes applied
one by one do (`projections.timetravel.replay`, the reference), with the membership guard and the
trace ids of `projections.batch`; partitions are split evenly between workers. No broker, no
database (the integration tests compare the COPY-written twins with the live tables)."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from projections.batch import MEMBERS
from projections.projectors import PROJECTIONS
from projections.replay import BulkRefused, Folder, _limits, _pg_types, fits, split
from projections.stream import Item
from projections.tables import REBUILD_SUFFIX, build_tables
from projections.timetravel import replay
from tests.integration.projection_support import LARGE, SMALL, EventLog

TRACE = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _log() -> EventLog:
    log = EventLog()
    log.organization("acme", "Acme", owner="alice")
    log.organization("globex", "Globex", owner="hank")
    log.service("acme", "db1", "orders")
    log.service("acme", "db2", "cache", engine="dragonfly")
    log.service("globex", "db3", "ledger", actor="hank")
    log.scale("acme", "db1", SMALL, LARGE)
    op = log.delete("acme", "db2")
    log.service_deleted("acme", "db2", op)
    log.backup_policy("acme", "db1")
    log.reject("acme", "CreateService", "invalid", "engine", "no such engine")
    return log


def _items(envelopes, trace: bytes | None = None) -> list[Item]:
    return [Item(0, i, env, None, None, trace) for i, env in enumerate(envelopes)]  # type: ignore[arg-type]


def _folder() -> Folder:
    return Folder(None, build_tables(REBUILD_SUFFIX), PROJECTIONS, max_rows=10_000)  # type: ignore[arg-type]


def test_folding_in_batches_gives_the_rows_applying_each_change_gives():
    log = _log()
    folder = _folder()
    items = _items(log.envelopes)
    for start in range(0, len(items), 3):  # batch boundaries change nothing
        assert folder.add(items[start:start + 3]) == 0
    assert folder.rows == replay(log.envelopes, datetime.max.replace(tzinfo=UTC))
    assert folder.rows["services"]["db2"]["status"] == "Deleted"


def test_rows_created_by_traced_events_keep_the_trace_id_and_poison_is_skipped():
    log = _log()
    folder = _folder()
    poison = Item(0, 99, None, "not Confluent wire format", None)  # type: ignore[arg-type]
    assert folder.add([*_items(log.envelopes, TRACE), poison]) == 1
    assert {op["trace_id"] for op in folder.rows["operations"].values()} == {"0af7651916cd43dd8448eb211c80319c"}


def test_a_second_creation_of_an_organization_is_refused_by_the_guard():
    rightful, forked = EventLog(), EventLog()
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    rightful.organization(tenant, "Acme", owner="alice")
    forked.organization(tenant, "Acme", owner="mallory")
    folder = _folder()
    assert MEMBERS in folder.projections
    skipped = folder.add(_items(rightful.envelopes)) + folder.add(_items(forked.envelopes))
    assert skipped == 1
    assert [m["subject"] for m in folder.rows["members"].values()] == ["alice"]
    assert [o["owner"] for o in folder.rows["organizations"].values()] == ["alice"]


def test_partitions_are_split_evenly_and_empty_ones_left_out():
    starts = {0: 0, 1: 0, 2: 5, 3: 0}
    ends = {0: 100, 1: 60, 2: 5, 3: 50}
    groups = split(starts, ends, 2)
    assert groups == [{0: 0}, {1: 0, 3: 0}]
    assert split(starts, ends, 8) == [{0: 0}, {1: 0}, {3: 0}]
    assert split(starts, {0: 0, 1: 0, 2: 5, 3: 0}, 2) == []


def test_an_event_postgresql_would_refuse_sends_the_rebuild_to_the_batch_path():
    """The live projector dead-letters it and applies the next events; folded, it would merge with
    them, so the fold stops and the rebuild replays batch by batch."""
    log = EventLog()
    log.organization("acme", "Nul\x00Corp")
    with pytest.raises(BulkRefused, match="OrganizationCreated"):
        _folder().add(_items(log.envelopes))


@pytest.mark.parametrize(("values", "fine", "reason"), [
    ({"name": "orders", "replicas": 3, "labels": {"a": "b"}}, True, "ordinary values"),
    ({"name": "ord\x00ers"}, False, "NUL in a text"),
    ({"labels": {"a": "b\x00"}}, False, "NUL in a JSON string"),
    ({"labels": {"a\x00": "b"}}, False, "NUL in a JSON key"),
    ({"labels": {"a": [1, {"b": ["c", "d\x00"]}]}}, False, "NUL deep in a JSON value"),
    ({"labels": {"a": [1, 2.5, None, True, {"b": "c"}]}}, True, "JSON without a NUL"),
    ({"name": None}, False, "NULL in a NOT NULL column"),
    ({"credentials": None, "deleted_at": None}, True, "NULL where it may be"),
    ({"replicas": 2**31}, False, "an INTEGER out of range"),
    ({"version": 2**40, "replicas": -2**31}, True, "BIGINT and INTEGER in range"),
    ({"no_such_column": 1}, False, "a column the table lacks"),
])
def test_fits_says_what_postgresql_takes(values, fine, reason):
    assert fits(_limits(build_tables().services), values) is fine, reason


def test_every_twin_column_has_a_type_the_binary_copy_can_send():
    """The binary COPY names each column's PostgreSQL type; psycopg must know every one (a new column
    type it does not would make every bulk rebuild fail)."""
    twins = build_tables(REBUILD_SUFFIX)
    for name in PROJECTIONS:
        table = twins.read_model(name)
        types = _pg_types(table)
        assert len(types) == len(table.columns)
        unknown = [t for t in types if psycopg.adapters.types.get(t) is None]
        assert not unknown, f"{name}: {unknown}"
