"""The `services` read model: one row per service with its resources and status.

Status vocabulary of `events.ServiceStatus`: Requested on ServiceRequested, Scaling (with the new
resources) on ServiceScaleRequested, Deleting on ServiceDeletionRequested. `last_operation_id` is
the command id of the event, as in `events.state`. Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from events import (
    Envelope,
    Resources,
    ServiceDeletionRequested,
    ServiceRequested,
    ServiceScaleRequested,
    ServiceStatus,
)
from projections.projectors import Handler, dispatch, update_if_newer, upsert
from projections.tables import Tables


def _resources(r: Resources) -> dict[str, Any]:
    return {"cpu": r.cpu, "memory_gb": r.memory_gb, "storage_gb": r.storage_gb, "replicas": r.replicas}


def _changed(env: Envelope, status: ServiceStatus) -> dict[str, Any]:
    return {"status": status.value, "updated_at": env.occurred_at, "last_operation_id": env.command_id}


def _requested(conn: Connection, tables: Tables, env: Envelope) -> None:
    e: ServiceRequested = env.payload  # type: ignore[assignment]
    upsert(conn, tables.services, {
        "id": e.service_id,
        "tenant_id": env.tenant_id,
        "name": e.name,
        "engine": e.engine,
        "engine_version": e.engine_version,
        "pop": e.pop,
        "size": e.size,
        **_resources(e.resources),
        "deletion_protection": e.deletion_protection,
        "labels": dict(e.labels),
        "created_at": env.occurred_at,
        **_changed(env, ServiceStatus.REQUESTED),
        "version": env.sequence,
    })


def _scale_requested(conn: Connection, tables: Tables, env: Envelope) -> None:
    e: ServiceScaleRequested = env.payload  # type: ignore[assignment]
    update_if_newer(conn, tables.services, e.service_id, env.sequence,
                    {**_resources(e.new_resources), **_changed(env, ServiceStatus.SCALING)})


def _deletion_requested(conn: Connection, tables: Tables, env: Envelope) -> None:
    e: ServiceDeletionRequested = env.payload  # type: ignore[assignment]
    update_if_newer(conn, tables.services, e.service_id, env.sequence, _changed(env, ServiceStatus.DELETING))


HANDLERS: dict[type, Handler] = {
    ServiceRequested: _requested,
    ServiceScaleRequested: _scale_requested,
    ServiceDeletionRequested: _deletion_requested,
}


def apply(conn: Connection, tables: Tables, envelope: Envelope) -> bool:
    return dispatch(HANDLERS, conn, tables, envelope)
