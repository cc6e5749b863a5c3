"""The `services` read model: one row per service with its resources and status.

Status vocabulary of `events.ServiceStatus`: Requested on ServiceRequested (the whole row), Scaling
with the new resources on ServiceScaleRequested (and with the new setting on DeletionProtectionSet),
Deleting on ServiceDeletionRequested (these change some columns of the existing row). `last_operation_id` is the command id of the event, as in
`events.state`. Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from typing import Any

from events import (
    DeletionProtectionSet,
    Envelope,
    OperationCancelled,
    OperationStarted,
    Resources,
    ServiceClaimRendered,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceDeletionRequested,
    ServiceFailed,
    ServiceReady,
    ServiceRequested,
    ServiceScaleRequested,
    ServiceStatus,
)
from projections.projectors import Change, Handler

NAME = "services"
# Plain strings, looked up once: an enum member's `.value` is a descriptor call per event.
REQUESTED = ServiceStatus.REQUESTED.value
SCALING = ServiceStatus.SCALING.value
DELETING = ServiceStatus.DELETING.value
READY = ServiceStatus.READY.value
FAILED = ServiceStatus.FAILED.value
DELETED = ServiceStatus.DELETED.value


def _resources(r: Resources) -> dict[str, Any]:
    return {"cpu": r.cpu, "memory_gb": r.memory_gb, "storage_gb": r.storage_gb, "replicas": r.replicas}


def _changed(env: Envelope, status: str) -> dict[str, Any]:
    return {"status": status, "updated_at": env.occurred_at, "last_operation_id": env.operation}


def _requested(env: Envelope) -> Change:
    e: ServiceRequested = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, {
        "tenant_id": env.tenant_id,
        "name": e.name,
        "engine": e.engine,
        "engine_version": e.engine_version,
        "pop": e.pop,
        "size": e.size,
        **_resources(e.resources),
        "deletion_protection": e.deletion_protection,
        "labels": dict(e.labels),
        "credentials": None,
        "created_at": env.occurred_at,
        **_changed(env, REQUESTED),
    }, creates=True)


def _scale_requested(env: Envelope) -> Change:
    e: ServiceScaleRequested = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, {**_resources(e.new_resources), **_changed(env, SCALING)})


def _protection_set(env: Envelope) -> Change:
    e: DeletionProtectionSet = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, {"deletion_protection": e.enabled, **_changed(env, SCALING)})


def _deletion_requested(env: Envelope) -> Change:
    e: ServiceDeletionRequested = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, _changed(env, DELETING))


def _operation_started(env: Envelope) -> Change | None:
    e: OperationStarted = env.payload  # type: ignore[assignment]
    if e.action != "delete":
        return None  # the request event already set Requested/Scaling
    return Change(e.service_id, env.sequence, _changed(env, DELETING))


def _rendered(env: Envelope) -> Change | None:
    e: ServiceClaimRendered = env.payload  # type: ignore[assignment]
    if e.status is None:  # recorded before renders carried the status
        return None
    return Change(e.service_id, env.sequence, {"status": e.status, "updated_at": env.occurred_at})


def _ready(env: Envelope) -> Change:
    e: ServiceReady = env.payload  # type: ignore[assignment]
    values = {"status": READY, "updated_at": env.occurred_at}
    if e.credentials is not None:  # kept encrypted; only the gateway decrypts, for an allowed caller
        values["credentials"] = e.credentials
    return Change(e.service_id, env.sequence, values)


def _settled(env: Envelope) -> Change:
    """An event that says where the service stands now (status, and resources when they changed
    back): a failure, a cancellation, a revert."""
    e: ServiceFailed | OperationCancelled | ServiceClaimReverted = env.payload  # type: ignore[assignment]
    values: dict[str, Any] = {"status": e.status, "updated_at": env.occurred_at}
    if e.resources is not None:
        values.update(_resources(e.resources))
    if e.status == DELETED:
        values["credentials"] = None
    return Change(e.service_id, env.sequence, values)


def _deleted(env: Envelope) -> Change:
    e: ServiceDeleted = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence,
                  {"status": DELETED, "updated_at": env.occurred_at, "credentials": None})


HANDLERS: dict[type, Handler] = {
    ServiceRequested: _requested,
    ServiceScaleRequested: _scale_requested,
    ServiceDeletionRequested: _deletion_requested,
    DeletionProtectionSet: _protection_set,
    OperationStarted: _operation_started,
    ServiceClaimRendered: _rendered,
    ServiceReady: _ready,
    ServiceFailed: _settled,
    OperationCancelled: _settled,
    ServiceClaimReverted: _settled,
    ServiceDeleted: _deleted,
}
