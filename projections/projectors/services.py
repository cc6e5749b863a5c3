"""The `services` read model: one row per service with its resources and status.

The status is the one the event carries (`events.lifecycle`, stamped by `decide`); an event
recorded before events carried it falls back to what the lifecycle table says that event means on
its own (`lifecycle.implied`), and an event that says nothing leaves the status as it is. This
module never works a status out itself. `last_operation_id` is the operation of the request event,
as in `events.state`. A service also keeps its backup policy (`BackupPolicySet`, with the time it
was set: the recovery window ends there when point-in-time recovery was turned off), where a
restored service's data came from (`restore`) and when it was deleted (`deleted_at`, the time of
`ServiceDeleted`, where its recovery window ends). Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from typing import Any

from events import (
    BackupPolicySet,
    CdcConnectorFailed,
    CdcConnectorRegistered,
    CdcDisabled,
    CdcDisableRequested,
    CdcEnableRequested,
    DeletionProtectionSet,
    Envelope,
    OperationCancelled,
    OperationStarted,
    Resources,
    RestoreSource,
    ServiceClaimRendered,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceDeletionRequested,
    ServiceFailed,
    ServiceReady,
    ServiceRequested,
    ServiceScaleRequested,
    Status,
    lifecycle,
)
from projections.projectors import Change, Handler

NAME = "services"
DELETED = Status.DELETED.value
# Event kind -> the status it means on its own, for events recorded before they carried one; plain
# strings (a database driver may write an enum member by its name).
IMPLIED: dict[str, str | None] = {kind: status.value if (status := lifecycle.implied(kind)) else None
                                  for kind in lifecycle.EVENTS}


def _status(env: Envelope, kind: str) -> str | None:
    """The service's status after this event (None: the event leaves it as it is)."""
    carried: str | None = env.payload.status  # type: ignore[union-attr]
    return carried if carried is not None else IMPLIED[kind]


def _resources(r: Resources) -> dict[str, Any]:
    return {"cpu": r.cpu, "memory_gb": r.memory_gb, "storage_gb": r.storage_gb, "replicas": r.replicas}


def _changed(env: Envelope, status: str | None) -> dict[str, Any]:
    return {"status": status, "updated_at": env.occurred_at, "last_operation_id": env.operation}


def _restore(r: RestoreSource | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"source_service_id": r.source_service_id, "source_engine": r.source_engine, "backup_id": r.backup_id,
            "to_time": r.to_time.isoformat() if r.to_time is not None else None}


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
        **_changed(env, _status(env, "ServiceRequested")),
        "backup_policy": None,
        "restore": _restore(e.restore),
        "cdc": None,
        "cdc_tables": None,
        "deleted_at": None,
    }, creates=True)


def _scale_requested(env: Envelope) -> Change:
    e: ServiceScaleRequested = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, {**_resources(e.new_resources),
                                                    **_changed(env, _status(env, "ServiceScaleRequested"))})


def _protection_set(env: Envelope) -> Change:
    e: DeletionProtectionSet = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, {"deletion_protection": e.enabled,
                                                    **_changed(env, _status(env, "DeletionProtectionSet"))})


def _deletion_requested(env: Envelope) -> Change:
    e: ServiceDeletionRequested = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, _changed(env, _status(env, "ServiceDeletionRequested")))


def _operation_started(env: Envelope) -> Change | None:
    e: OperationStarted = env.payload  # type: ignore[assignment]
    if (status := _status(env, lifecycle.started(e.action))) is None:
        return None  # recorded before starts carried the status: the request event set it
    return Change(e.service_id, env.sequence, _changed(env, status))


def _rendered(env: Envelope) -> Change | None:
    e: ServiceClaimRendered = env.payload  # type: ignore[assignment]
    if (status := _status(env, "ServiceClaimRendered")) is None:  # recorded before renders carried it
        return None
    return Change(e.service_id, env.sequence, {"status": status, "updated_at": env.occurred_at})


def _ready(env: Envelope) -> Change:
    e: ServiceReady = env.payload  # type: ignore[assignment]
    values = {"status": _status(env, "ServiceReady"), "updated_at": env.occurred_at}
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
    return Change(e.service_id, env.sequence, {"status": _status(env, "ServiceDeleted"), "updated_at": env.occurred_at,
                                                "credentials": None, "deleted_at": env.occurred_at})


def _policy_set(env: Envelope) -> Change:
    """A policy holds once accepted; it changes neither the status nor the service's last operation."""
    e: BackupPolicySet = env.payload  # type: ignore[assignment]
    return Change(e.service_id, env.sequence, {"updated_at": env.occurred_at, "backup_policy": {
        "schedule": e.schedule, "retain_count": e.retain_count, "retain_days": e.retain_days, "pitr": e.pitr,
        "set_at": env.occurred_at.isoformat()}})


def _cdc(status: str, reason: str | None = None) -> Handler:
    """The service's change stream; it changes neither the status nor the last operation."""
    def handle(env: Envelope) -> Change:
        e = env.payload
        values: dict[str, Any] = {"updated_at": env.occurred_at, "cdc": {
            "status": status, "connector": e.connector, "operation_id": e.operation_id,  # type: ignore[union-attr]
            "reason": e.reason if isinstance(e, CdcConnectorFailed) else reason, "at": env.occurred_at.isoformat()}}
        if isinstance(e, CdcEnableRequested):
            values["cdc_tables"] = list(e.tables)
        return Change(e.service_id, env.sequence, values)  # type: ignore[union-attr]
    return handle


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
    BackupPolicySet: _policy_set,
    CdcEnableRequested: _cdc("Enabling"),
    CdcDisableRequested: _cdc("Disabling"),
    CdcConnectorRegistered: _cdc("Running"),
    CdcConnectorFailed: _cdc("Failed"),
    CdcDisabled: _cdc("Disabled"),
}
