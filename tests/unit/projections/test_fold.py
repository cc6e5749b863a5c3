"""`fold` turns a batch's changes into one net change per row: given the changes of a batch (in log
order), then the net change (or the chain handed back to be written change by change).

The nets are checked against `replay`, a model of applying the changes one by one to any stored row
(what `projections.projectors.write_one` does in SQL), for stored rows absent, older, in between and
newer: the definition the set-based writer has to meet."""
from __future__ import annotations

from typing import Any

import pytest

from projections.fold import Net, fold
from projections.projectors import Change

ROW = {"name": "orders", "cpu": 0.5, "status": "Requested", "updated_at": 1}  # a whole row


def create(version: int, **values: Any) -> Change:
    return Change("k", version, {**ROW, **values}, creates=True)


def scale(version: int, cpu: float) -> Change:
    return Change("k", version, {"cpu": cpu, "status": "Scaling", "updated_at": version})


def delete(version: int) -> Change:
    return Change("k", version, {"status": "Deleting", "updated_at": version})


Row = tuple[int, dict[str, Any]] | None  # (version, columns), or no row


def replay(stored: Row, changes: list[Change]) -> Row:
    """Apply changes one by one, as one statement per event does."""
    for change in changes:
        if stored is None:
            if change.creates:
                stored = (change.version, dict(change.values))
        elif change.version > stored[0]:
            stored = (change.version, {**stored[1], **change.values})
    return stored


def apply_net(stored: Row, net: Net) -> Row:
    """Apply a net change as the writer's statements do."""
    if stored is None:
        return (net.top, dict(net.values)) if net.creates else None
    version, columns = stored
    if version >= net.top:
        return stored
    if net.whole:
        return net.top, dict(net.values)
    return net.top, {c: net.values[c] if version < net.since.get(c, -1) else v for c, v in columns.items()}


STORED: list[Row] = [
    None,
    (0, {**ROW, "name": "stored", "cpu": 9.0}),
    (1, {**ROW, "name": "stored", "cpu": 9.0}),
    (2, {**ROW, "name": "stored", "cpu": 9.0, "status": "Scaling", "updated_at": 2}),
    (3, {**ROW, "name": "stored", "status": "Deleting"}),
    (9, {**ROW, "name": "newer"}),
]

CASES = [
    ([create(1)], "a row created in the batch: a whole row"),
    ([create(1), scale(2, 2.0)], "created, then scaled in the same batch"),
    ([create(1), scale(2, 2.0), delete(3)], "created, scaled and deleted in the same batch"),
    ([scale(2, 2.0)], "scaled: the row was created by an earlier batch"),
    ([scale(2, 2.0), delete(3)], "scaled then deleted, a row of an earlier batch"),
    ([create(1), scale(2, 2.0), create(1)], "an old event again after a newer one changes nothing"),
    ([scale(2, 2.0), scale(2, 4.0)], "the same version twice: the first one wins"),
    ([create(1), create(2, name="renamed")], "a newer whole row replaces the row"),
    ([create(1), scale(3, 2.0), delete(2)], "an older partial change after a newer one"),
    ([delete(3), scale(2, 2.0)], "partial changes in reverse order"),
]


@pytest.mark.parametrize(("changes", "reason"), CASES)
def test_a_net_change_does_what_the_changes_one_by_one_do_to_any_stored_row(changes, reason):
    folded = fold(changes)
    assert not folded.chains and len(folded.nets) == 1, reason
    for stored in STORED:
        assert apply_net(stored, folded.nets[0]) == replay(stored, changes), (reason, stored)


@pytest.mark.parametrize(("changes", "whole", "creates", "reason"), [
    ([create(1)], True, True, "the usual case: one write, the upsert"),
    ([create(1), scale(2, 2.0)], False, True, "a row created, then changed: column by column"),
    ([scale(2, 2.0)], False, False, "no row is created by partial changes"),
    ([scale(2, 2.0), create(3)], True, True, "the last change is the whole row"),
])
def test_kinds_of_net_change(changes, whole, creates, reason):
    [net] = fold(changes).nets
    assert (net.whole, net.creates) == (whole, creates), reason


def test_a_column_remembers_the_version_of_the_last_change_that_set_it():
    [net] = fold([create(1), scale(2, 2.0), delete(3)]).nets
    assert net.top == 3
    assert net.since == {"name": 1, "cpu": 2, "status": 3, "updated_at": 3}
    assert net.values == {"name": "orders", "cpu": 2.0, "status": "Deleting", "updated_at": 3}


def test_a_creation_older_than_a_change_before_it_is_handed_back_change_by_change():
    """With no row stored, the creation inserts its row; with a row stored, the newer change before
    it wins: no single net change says both, so the chain is written one change at a time."""
    changes = [scale(2, 2.0), create(1)]
    folded = fold(changes)
    assert folded.nets == [] and folded.chains == [changes]


def test_rows_are_folded_independently_and_keep_log_order():
    a1, b1, a2 = Change("a", 1, ROW, True), Change("b", 1, ROW, True), Change("a", 2, {"cpu": 1.0})
    folded = fold([a1, b1, a2])
    assert [(n.key, n.top, n.whole) for n in folded.nets] == [("a", 2, False), ("b", 1, True)]
