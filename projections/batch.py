"""Applying a batch of consumed items to the read models inside the caller's transaction.

Owns the per-item decision (which projections are due: those whose stored position is at or
before the item's offset), the dispatch to every projector, the new positions, and the fallback
for an event the database refuses (DataError, IntegrityError): the batch is re-applied event by
event in savepoints and the refused event is dead-lettered like an undecodable one, so one bad
event never blocks the read model. Imports `projections.projectors`, `.positions`, `.stream`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import DataError, IntegrityError

from projections.positions import Positions
from projections.projectors import Apply
from projections.stream import Item
from projections.tables import Tables

_REFUSED = (DataError, IntegrityError)
log = structlog.get_logger("projections.batch")


@dataclass
class Outcome:
    applied: Counter[tuple[str, str]] = field(default_factory=Counter)  # (projection, event type) -> n
    occurred: list[datetime] = field(default_factory=list)  # occurred_at of the events applied
    dead: list[Item] = field(default_factory=list)  # to dead-letter before committing
    positions: Positions = field(default_factory=dict)  # new next offsets, (projection, partition)


def apply_batch(conn: Connection, tables: Tables, projections: Mapping[str, Apply],
                items: Sequence[Item], stored: Positions) -> Outcome:
    """Apply `items` (in log order) to every projection not already past them."""
    try:
        with conn.begin_nested():
            return _apply(conn, tables, projections, items, stored, careful=False)
    except _REFUSED as exc:
        log.warning("batch refused by the database; re-applying event by event", error=str(exc.orig))
        return _apply(conn, tables, projections, items, stored, careful=True)


def _apply(conn: Connection, tables: Tables, projections: Mapping[str, Apply], items: Sequence[Item],
           stored: Positions, *, careful: bool) -> Outcome:
    outcome = Outcome()
    for item in items:
        due = [name for name in projections if item.offset >= stored.get((name, item.partition), 0)]
        if not due:
            continue
        if item.poison is not None:
            outcome.dead.append(item)
        else:
            refused = _apply_item(conn, tables, projections, due, item, outcome, careful)
            if refused is not None:
                outcome.dead.append(replace(item, poison=refused))
        for name in due:
            outcome.positions[(name, item.partition)] = item.offset + 1
    return outcome


def _apply_item(conn: Connection, tables: Tables, projections: Mapping[str, Apply], due: list[str],
                item: Item, outcome: Outcome, careful: bool) -> str | None:
    """Apply one envelope to the due projections; the reason when the database refused it."""
    env = item.envelope
    assert env is not None
    event_type = type(env.payload).__name__
    with structlog.contextvars.bound_contextvars(correlation_id=env.correlation_id, event_id=env.event_id,
                                                 event_type=event_type):
        applied = []
        for name in due:
            if not careful:  # the whole batch runs in one savepoint: a refusal restarts it carefully
                done = projections[name](conn, tables, env)
            else:
                try:
                    with conn.begin_nested():
                        done = projections[name](conn, tables, env)
                except _REFUSED as exc:
                    reason = f"projection {name} cannot apply {event_type} {env.event_id}: {exc.orig}"
                    log.error("event refused by the database", projection=name, reason=reason,
                              partition=item.partition, offset=item.offset)
                    return reason
            if done:
                applied.append(name)
                outcome.applied[(name, event_type)] += 1
        if applied:
            outcome.occurred.append(env.occurred_at)
        log.debug("event projected", projections=applied, partition=item.partition, offset=item.offset)
    return None
