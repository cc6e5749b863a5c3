"""Projectors: one per read model, each a routing table from event type to the change it makes.

Owns the registry `PROJECTIONS` (read-model name -> `Projection`), the `Change` a handler answers and
the per-event write of one change. A handler is pure: it turns an envelope into the `Change` of the
row of the aggregate whose event it handles, versioned by that aggregate's sequence. A change is
either a whole row (`creates`: inserted, or replacing an older row) or some columns of an existing
row (no row: nothing happens); either is applied only over an older `version`, so an event applied
twice, or an old event replayed after newer ones, changes nothing. Events a projection has no
handler for are skipped. `Projection.apply` writes one event's change with one statement (the slow
path, and the reference semantics); batches are folded and written set-wise by `projections.writer`.
New event type: add a handler and one line in the module's `HANDLERS`.
Imports `events` and `projections.tables`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, update
from sqlalchemy.dialects.postgresql import insert

from events import Envelope
from projections.tables import Tables


class Change(NamedTuple):  # a tuple: one is built per event, and tuples are the cheapest to build
    """What one event does to one read-model row (keyed by `id`), applied only over an older version.

    `creates`: the change carries every column, the whole row, inserted when there is none (the
    batch writer relies on it); otherwise it changes some columns of an existing row only."""

    key: str
    version: int  # the aggregate sequence of the event
    values: Mapping[str, Any]  # column -> value, neither `id` nor `version`
    creates: bool = False


Handler = Callable[[Envelope], Change | None]  # None: this event leaves the read model as it is


@dataclass(frozen=True)
class Projection:
    """One read model: the table it writes (`name`) and its handlers by event type."""

    name: str
    handlers: Mapping[type, Handler]

    def change(self, envelope: Envelope) -> Change | None:
        """The change the envelope makes to this read model; None when no handler takes its type."""
        handler = self.handlers.get(type(envelope.payload))
        return None if handler is None else handler(envelope)

    def apply(self, conn: Connection, tables: Tables, envelope: Envelope) -> bool:
        """Write the envelope's change on its own; False when the projection does not handle it."""
        change = self.change(envelope)
        if change is None:
            return False
        write_one(conn, tables.read_model(self.name), change)
        return True


def write_one(conn: Connection, table: Table, change: Change) -> None:
    """One change, one statement."""
    if change.creates:
        upsert(conn, table, {"id": change.key, **change.values, "version": change.version})
    else:
        update_if_newer(conn, table, change.key, change.version, dict(change.values))


def upsert(conn: Connection, table: Table, row: dict[str, Any]) -> None:
    """Insert `row` (keyed by `id`) or overwrite it when `row["version"]` is newer than the stored one."""
    stmt = insert(table).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={name: stmt.excluded[name] for name in row if name != "id"},
        where=table.c.version < stmt.excluded.version,
    )
    conn.execute(stmt)


def update_if_newer(conn: Connection, table: Table, row_id: str, version: int, values: dict[str, Any]) -> None:
    """Change row `row_id` when `version` is newer than the stored one (no row: nothing happens)."""
    conn.execute(
        update(table)
        .where(table.c.id == row_id, table.c.version < version)
        .values(**values, version=version)
    )


def _registry() -> dict[str, Projection]:
    from projections.projectors import backups, members, operations, organizations, services, subscriptions

    return {module.NAME: Projection(module.NAME, module.HANDLERS)
            for module in (organizations, services, operations, members, backups, subscriptions)}


PROJECTIONS: dict[str, Projection] = _registry()
