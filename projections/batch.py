"""Applying a batch of consumed items to the read models inside the caller's transaction.

Owns the per-item decision (which projections are due: those whose stored position is at or
before the item's offset), the changes every due projection makes, their set-based write (a few
statements per read model and batch, `projections.writer`), the new positions, and the fallback
for an event the database refuses (DataError, IntegrityError): the batch is re-applied event by
event in savepoints and the refused event is dead-lettered like an undecodable one, so one bad
event never blocks the read model. Nothing here logs per event, but a refused one. Imports
`projections.projectors`, `.positions`, `.stream`, `.writer`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import DataError, IntegrityError

from events import MemberAdded, OrganizationCreated
from projections.positions import Positions
from projections.projectors import Change, Projection, write_one
from projections.stream import Item
from projections.tables import Tables
from projections.writer import write
from runtime import tracing

_REFUSED = (DataError, IntegrityError)
log = structlog.get_logger("projections.batch")


@dataclass
class Outcome:
    applied: Counter[tuple[str, str]] = field(default_factory=Counter)  # (projection, event type) -> n
    occurred: list[datetime] = field(default_factory=list)  # occurred_at of the events applied
    dead: list[Item] = field(default_factory=list)  # to dead-letter before committing
    positions: Positions = field(default_factory=dict)  # new next offsets, (projection, partition)


def apply_batch(conn: Connection, tables: Tables, projections: Mapping[str, Projection],
                items: Sequence[Item], stored: Positions) -> Outcome:
    """Apply `items` (in log order) to every projection not already past them."""
    try:
        with conn.begin_nested():
            return _apply(conn, tables, projections, items, stored, careful=False)
    except _REFUSED as exc:
        log.warning("batch refused by the database; re-applying event by event", error=str(exc.orig))
        return _apply(conn, tables, projections, items, stored, careful=True)


def _apply(conn: Connection, tables: Tables, projections: Mapping[str, Projection], items: Sequence[Item],
           stored: Positions, *, careful: bool) -> Outcome:
    """Not `careful`: collect the due projections' changes, then write each read model's set-wise.
    `careful`: write each event alone, in savepoints, so that the one the database refuses is found
    and dead-lettered (the slow path, after the set-wise write of the batch was refused)."""
    outcome = Outcome()
    changes: dict[str, list[Change]] = {name: [] for name in projections}
    guard = MembershipGuard.load(conn, tables, items) if MEMBERS in projections else None
    for item in items:
        due = [name for name in projections if item.offset >= stored.get((name, item.partition), 0)]
        if not due:
            continue
        if item.poison is None and guard is not None and MEMBERS in due:
            item = guard.admit(item)
        if item.poison is not None:
            outcome.dead.append(item)
        elif not careful:
            _collect(projections, due, item, changes, outcome)
        elif (refused := _apply_alone(conn, tables, projections, due, item, outcome)) is not None:
            outcome.dead.append(item._replace(poison=refused))
        for name in due:
            outcome.positions[(name, item.partition)] = item.offset + 1
    for name, pending in changes.items():
        if pending:
            write(conn, tables.read_model(name), pending)
    return outcome


def traced(change: Change, traceparent: bytes | str) -> Change:
    """A row-creating change with the trace of its event (the `traceparent` header, when that trace
    is recorded), for read models that keep it (a `trace_id` column the handler leaves None)."""
    if "trace_id" not in change.values:
        return change
    parsed = tracing.parse(traceparent)  # once: a rebuild does this for every row it creates
    if parsed is None or not parsed[2]:
        return change  # a trace that was not recorded is nowhere to be read back
    return change._replace(values={**change.values, "trace_id": parsed[0]})


MEMBERS = "members"
_MEMBERSHIP_EVENTS = (OrganizationCreated, MemberAdded)


@dataclass
class MembershipGuard:
    """No event out of its organization's sequence makes anyone a member: an `OrganizationCreated`
    or `MemberAdded` at a sequence the organization has already passed in the `members` read model
    (a second creation of an existing organization, a forked log) is refused and dead-lettered, in
    every read model. The high-water mark is the members' greatest version per organization."""

    seen: dict[str, int]

    @classmethod
    def load(cls, conn: Connection, tables: Tables, items: Sequence[Item]) -> MembershipGuard:
        tenants = {i.envelope.tenant_id for i in items
                   if i.envelope is not None and isinstance(i.envelope.payload, _MEMBERSHIP_EVENTS)}
        if not tenants:
            return cls({})
        t = tables.members
        rows = conn.execute(select(t.c.tenant_id, func.max(t.c.version)).where(t.c.tenant_id.in_(sorted(tenants)))
                            .group_by(t.c.tenant_id))
        return cls({tenant: version for tenant, version in rows})

    def admit(self, item: Item) -> Item:
        env = item.envelope
        assert env is not None
        if env.aggregate_type != "organization":
            return item
        last = self.seen.get(env.tenant_id, 0)
        if isinstance(env.payload, _MEMBERSHIP_EVENTS) and env.sequence <= last:
            reason = (f"out_of_sequence: {type(env.payload).__name__} at sequence {env.sequence} of organization "
                      f"{env.tenant_id!r}, which the members read model has already seen up to {last}; "
                      "refused so that it changes no membership (a forked or replayed log)")
            log.error("event out of its aggregate's sequence refused", event_id=env.event_id,
                      tenant_id=env.tenant_id, sequence=env.sequence, last=last)
            return item._replace(poison=reason)
        self.seen[env.tenant_id] = max(last, env.sequence)
        return item


def _collect(projections: Mapping[str, Projection], due: list[str], item: Item,
             changes: dict[str, list[Change]], outcome: Outcome) -> None:
    """Add the changes one envelope makes to the due projections to `changes`."""
    env = item.envelope
    assert env is not None
    event_type = type(env.payload)
    applied = False
    for name in due:
        handler = projections[name].handlers.get(event_type)
        change = None if handler is None else handler(env)
        if change is not None and item.trace is not None and change.creates:
            change = traced(change, item.trace)
        if change is not None:
            changes[name].append(change)
            outcome.applied[(name, event_type.__name__)] += 1
            applied = True
    if applied:
        outcome.occurred.append(env.occurred_at)


def _apply_alone(conn: Connection, tables: Tables, projections: Mapping[str, Projection], due: list[str],
                 item: Item, outcome: Outcome) -> str | None:
    """Apply one envelope to the due projections, each in a savepoint; the reason when the database
    refused it."""
    env = item.envelope
    assert env is not None
    event_type = type(env.payload).__name__
    applied = False
    for name in due:
        try:
            with conn.begin_nested():
                change = projections[name].change(env)
                if change is not None and item.trace is not None and change.creates:
                    change = traced(change, item.trace)
                done = change is not None
                if change is not None:
                    write_one(conn, tables.read_model(name), change)
        except _REFUSED as exc:
            reason = f"projection {name} cannot apply {event_type} {env.event_id}: {exc.orig}"
            log.error("event refused by the database", projection=name, reason=reason, partition=item.partition,
                      offset=item.offset, correlation_id=env.correlation_id, event_id=env.event_id)
            return reason
        if done:
            applied = True
            outcome.applied[(name, event_type)] += 1
    if applied:
        outcome.occurred.append(env.occurred_at)
    return None
