"""Projectors: one per read model, each a routing table from event type to a small upsert.

Owns the registry `PROJECTIONS` (read-model name -> `apply(conn, tables, envelope) -> bool`) and the
two idempotent write helpers every projector uses. A handler writes the row of the aggregate whose
event it handles and guards on that aggregate's sequence (`version`), so an event applied twice,
or an old event replayed after newer ones, changes nothing. Events a projection has no handler for
are skipped (`apply` answers False). New event type: add a handler and one line in the module's
`HANDLERS`. Imports `events` and `projections.tables`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Table, update
from sqlalchemy.dialects.postgresql import insert

from events import Envelope
from projections.tables import Tables

Handler = Callable[[Connection, Tables, Envelope], None]
Apply = Callable[[Connection, Tables, Envelope], bool]


def dispatch(handlers: Mapping[type, Handler], conn: Connection, tables: Tables, envelope: Envelope) -> bool:
    """Run the handler of the envelope's payload type; False when the projection has none."""
    handler = handlers.get(type(envelope.payload))
    if handler is None:
        return False
    handler(conn, tables, envelope)
    return True


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


def _registry() -> dict[str, Apply]:
    from projections.projectors import operations, organizations, services

    return {"organizations": organizations.apply, "services": services.apply, "operations": operations.apply}


PROJECTIONS: dict[str, Apply] = _registry()
