"""`apply_batch` decides per item which projections are due, dead-letters poison, advances positions
and writes each read model's changes set-wise: a few statements per batch, not one per event.

Handlers and the connection are fakes: the decision is what is under test, not SQL (the integration
tests compare the SQL with the event-by-event writes)."""
from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from events import Envelope, OrganizationCreated
from projections.batch import apply_batch
from projections.projectors import Change, Projection
from projections.stream import Item
from projections.tables import build_tables


class FakeConnection:
    def __init__(self) -> None:
        self.statements: list[tuple[str, dict]] = []

    def begin_nested(self):
        return contextlib.nullcontext()

    def exec_driver_sql(self, sql: str, params: dict) -> None:
        self.statements.append((sql, params))


def envelope(n: int) -> Envelope:
    return Envelope(f"e{n}", "acme", "organization", f"org-{n}", 1, datetime(2026, 1, 1, tzinfo=UTC), f"c{n}",
                    f"corr-{n}", None, OrganizationCreated(f"org-{n}", "Acme", "alice"))


def item(partition: int, offset: int, poison: str | None = None) -> Item:
    return Item(partition, offset, None if poison else envelope(offset + 1), poison, None)  # type: ignore[arg-type]


def recorder(log: list, name: str, handles: bool = True) -> Projection:
    """A projection of table `name` that records the events it is asked about."""
    def created(env: Envelope) -> Change:
        log.append((name, env.event_id))
        return Change(env.payload.slug, env.sequence, {"display_name": "Acme", "owner": "alice", "quota": None,  # type: ignore[union-attr]
                                                       "created_at": env.occurred_at,
                                                       "updated_at": env.occurred_at}, creates=True)
    return Projection(name, {OrganizationCreated: created} if handles else {})


def test_projections_already_past_an_item_skip_it_and_positions_advance_per_projection():
    calls: list = []
    projections = {"organizations": recorder(calls, "organizations"),
                   "services": recorder(calls, "services", handles=False)}
    items = [item(0, 4), item(0, 5), item(1, 0)]
    outcome = apply_batch(FakeConnection(), build_tables(), projections, items, {("organizations", 0): 5})
    assert calls == [("organizations", "e6"), ("organizations", "e1")]
    assert outcome.applied == {("organizations", "OrganizationCreated"): 2}  # services handles nothing
    assert outcome.positions == {("organizations", 0): 6, ("services", 0): 6, ("organizations", 1): 1,
                                 ("services", 1): 1}
    assert len(outcome.occurred) == 2 and outcome.dead == []


def test_a_batch_is_written_with_one_statement_per_read_model_not_one_per_event():
    conn = FakeConnection()
    items = [item(0, n) for n in range(50)]
    outcome = apply_batch(conn, build_tables(), {"organizations": recorder([], "organizations")}, items, {})
    assert outcome.applied == {("organizations", "OrganizationCreated"): 50}
    [(sql, params)] = conn.statements
    assert sql.startswith('INSERT INTO "organizations"') and "ON CONFLICT (id) DO UPDATE" in sql
    assert params["id"] == [f"org-{n + 1}" for n in range(50)] and params["top"] == [1] * 50


def test_poison_is_dead_lettered_once_and_its_position_still_advances():
    calls: list = []
    projections = {"organizations": recorder(calls, "organizations"),
                   "services": recorder(calls, "services", handles=False)}
    items = [item(0, 0, poison="magic byte is 7"), item(0, 1)]
    outcome = apply_batch(FakeConnection(), build_tables(), projections, items, {})
    assert [i.offset for i in outcome.dead] == [0] and outcome.dead[0].poison == "magic byte is 7"
    assert outcome.positions == {("organizations", 0): 2, ("services", 0): 2}


def test_poison_every_projection_already_passed_is_not_dead_lettered_again():
    outcome = apply_batch(FakeConnection(), build_tables(), {"organizations": recorder([], "organizations")},
                          [item(0, 0, poison="bad")], {("organizations", 0): 1})
    assert outcome.dead == [] and outcome.positions == {}
