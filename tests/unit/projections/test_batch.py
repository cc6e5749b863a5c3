"""`apply_batch` decides per item which projections are due, dead-letters poison and advances positions.

Projectors and the connection are fakes: the decision is what is under test, not SQL."""
from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from events import Envelope, OrganizationCreated
from projections.batch import apply_batch
from projections.stream import Item
from projections.tables import build_tables


class FakeConnection:
    def begin_nested(self):
        return contextlib.nullcontext()


def envelope(n: int) -> Envelope:
    return Envelope(f"e{n}", "acme", "organization", "acme", n, datetime(2026, 1, 1, tzinfo=UTC), f"c{n}",
                    f"corr-{n}", None, OrganizationCreated("acme", "Acme", "alice"))


def item(partition: int, offset: int, poison: str | None = None) -> Item:
    return Item(partition, offset, None if poison else envelope(offset + 1), poison, None)  # type: ignore[arg-type]


def recorder(log: list, name: str, handles: bool = True):
    def apply(_conn, _tables, env):
        log.append((name, env.event_id))
        return handles
    return apply


def test_projections_already_past_an_item_skip_it_and_positions_advance_per_projection():
    calls: list = []
    projections = {"a": recorder(calls, "a"), "b": recorder(calls, "b", handles=False)}
    items = [item(0, 4), item(0, 5), item(1, 0)]
    outcome = apply_batch(FakeConnection(), build_tables(), projections, items, {("a", 0): 5})
    assert calls == [("b", "e5"), ("a", "e6"), ("b", "e6"), ("a", "e1"), ("b", "e1")]
    assert outcome.applied == {("a", "OrganizationCreated"): 2}  # b was called but handles nothing
    assert outcome.positions == {("a", 0): 6, ("b", 0): 6, ("a", 1): 1, ("b", 1): 1}
    assert len(outcome.occurred) == 2 and outcome.dead == []


def test_poison_is_dead_lettered_once_and_its_position_still_advances():
    calls: list = []
    projections = {"a": recorder(calls, "a"), "b": recorder(calls, "b")}
    items = [item(0, 0, poison="magic byte is 7"), item(0, 1)]
    outcome = apply_batch(FakeConnection(), build_tables(), projections, items, {})
    assert [i.offset for i in outcome.dead] == [0] and outcome.dead[0].poison == "magic byte is 7"
    assert outcome.positions == {("a", 0): 2, ("b", 0): 2}


def test_poison_every_projection_already_passed_is_not_dead_lettered_again():
    outcome = apply_batch(FakeConnection(), build_tables(), {"a": recorder([], "a")},
                          [item(0, 0, poison="bad")], {("a", 0): 1})
    assert outcome.dead == [] and outcome.positions == {}
