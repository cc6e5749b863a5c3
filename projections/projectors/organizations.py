"""The `organizations` read model: one row per tenant, from OrganizationCreated.

Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from sqlalchemy import Connection

from events import Envelope, OrganizationCreated
from projections.projectors import Handler, dispatch, upsert
from projections.tables import Tables


def _created(conn: Connection, tables: Tables, env: Envelope) -> None:
    e: OrganizationCreated = env.payload  # type: ignore[assignment]
    upsert(conn, tables.organizations, {
        "id": e.slug,
        "display_name": e.display_name,
        "owner": e.owner,
        "created_at": env.occurred_at,
        "updated_at": env.occurred_at,
        "version": env.sequence,
    })


HANDLERS: dict[type, Handler] = {
    OrganizationCreated: _created,
}


def apply(conn: Connection, tables: Tables, envelope: Envelope) -> bool:
    return dispatch(HANDLERS, conn, tables, envelope)
