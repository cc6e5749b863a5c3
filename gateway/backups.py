"""Backups, backup policies, recovery windows and restores over HTTP.

Writes publish `BackupService`, `DeleteBackup`, `SetBackupPolicy` and `RestoreService` (202 with
the operation, as every write: `decide` judges them again, the checks here are the fast path);
reads come from the read port (`backups` read model, the services' policies) and need a role in
the service's organization (`READ_PERMISSIONS["backups"]`). A service or backup of an
organization the caller has no role in does not exist for it (404). The recovery window is worked
out with the rule `decide` judges restores by (`events.backups.window`), at the request's time.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from commands import BackupService, DeleteBackup, RestoreService, SetBackupPolicy
from commands.catalog import PITR_ENGINES
from gateway import writes
from gateway.access import Reads, require_command, require_read
from gateway.auth import Identity, current_identity
from projections.reads import BackupReading, ReadModel, RecoveryReading

# Backup ids of on-demand backups derive from the command id, so a retried request (same
# Idempotency-Key) carries the same payload.
BACKUP_ID_NAMESPACE = uuid.UUID("3f6f0b9e-2c1d-4b8a-9e57-6d2a4c8b1f03")
RESTORE_ID_NAMESPACE = uuid.UUID("a4c1e7d2-58b3-4f0e-9c6a-1b2d3e4f5a60")

router = APIRouter(tags=["backups"])
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such service or backup among yours"}}
_WRITE: dict[int | str, dict[str, Any]] = {**_NOT_FOUND, 403: {"description": "the caller's roles do not allow it"}}


class BackupState(StrEnum):
    REQUESTED = "Requested"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    DELETING = "Deleting"
    DELETED = "Deleted"


class BackupIn(BaseModel):
    """Nothing to choose yet: a backup of the service as it is now."""


class Backup(BaseModel):
    backup_id: str
    tenant_id: str
    service_id: str
    service_name: str
    engine: str
    pop: str
    status: BackupState
    slot: str | None = Field(description="the schedule slot it fills (RFC 3339); null: taken on demand")
    pitr: bool = Field(description="taken with the log archived: a base for point-in-time recovery")
    operation_id: str = Field(description="the operation that takes it")
    deletion_operation_id: str | None = Field(description="the operation that deletes it, once asked")
    requested_at: datetime
    taken_at: datetime | None = Field(description="the consistency point; null until completed")
    pitr_from: datetime | None = Field(description="restorable to any time from here on (with the log)")
    size_bytes: int | None
    location: str | None = Field(description="where the PoP stored it")
    dek_id: str | None = Field(description="the organization's data key its objects are sealed with")
    kek_id: str | None = Field(description="the platform key that wraps the data key")
    consistency: Any = Field(description="the consistency point as the PoP reported it")
    tables: Any = Field(description="table -> {rows, checksum}, as the PoP verified it")
    reason: str | None = Field(description="why its last operation failed")
    deletion_reason: str | None = Field(description="requested, or expired (retention); null: not asked")
    created_at: datetime
    updated_at: datetime


class BackupPage(BaseModel):
    items: list[Backup]


class PolicyIn(BaseModel):
    schedule: str | None = Field(None, description='five-field cron (UTC), e.g. "0 3 * * *"; null: no schedule')
    retain_count: int = Field(0, description="backups kept; 0: no limit by count")
    retain_days: int = Field(0, description="days a backup is kept; 0: no limit by age")
    pitr: bool = Field(False, description="archive the log: restorable to any time (yugabyte, vitess)")


class Policy(BaseModel):
    service_id: str
    engine: str
    schedule: str | None
    retain_count: int
    retain_days: int
    pitr: bool
    pitr_supported: bool = Field(description="the engine's log can be archived (point-in-time recovery)")
    set_at: datetime | None = Field(description="when the policy was set; null: never (no scheduled backups)")


class Instant(BaseModel):
    backup_id: str
    taken_at: datetime
    pitr_from: datetime | None = None


class Gap(BaseModel):
    backup_id: str
    slot: str
    reason: str | None


class RecoveryWindow(BaseModel):
    service_id: str
    engine: str
    as_of: datetime = Field(description="the moment the window was worked out at")
    pitr: bool = Field(description="restorable to any time between earliest and latest")
    reason: str | None = Field(None, description="why there is no point-in-time span, when there is none")
    earliest: datetime | None
    latest: datetime | None
    instants: list[Instant] = Field(description="completed backups, oldest first: each restorable as taken")
    gaps: list[Gap] = Field(description="scheduled backups that failed since the oldest instant, newest first")


class RestoreIn(BaseModel):
    name: str = Field(description="the new service's name")
    backup_id: str | None = Field(None, description="restore this backup of the service")
    to_time: datetime | None = Field(None, description="or restore to this time (RFC 3339) of its recovery window")
    pop: str | None = Field(None, description="default: the source's PoP")
    size: str | None = Field(None, description="default: the source's size")
    deletion_protection: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


def _backup(b: BackupReading) -> Backup:
    return Backup(**{name: getattr(b, name) for name in Backup.model_fields})


def _readable_service(request: Request, reads: ReadModel, identity: Identity, service_id: str) -> str:
    """The service's organization, when the caller may read its backups there (else 404 / 403)."""
    missing = f"no service {service_id}"
    tenant = reads.service_tenant(service_id)
    if tenant is None:
        raise HTTPException(404, missing)
    require_read(request, reads, identity, tenant, "backups", missing=missing)
    return tenant


def _readable_backup(request: Request, reads: ReadModel, identity: Identity, backup_id: str) -> BackupReading:
    missing = f"no backup {backup_id}"
    backup = reads.backup(backup_id)
    if backup is None:
        raise HTTPException(404, missing)
    require_read(request, reads, identity, backup.tenant_id, "backups", missing=missing)
    return backup


@router.post("/services/{service_id}/backups", status_code=202, response_model=writes.Accepted, responses=_WRITE)
async def create_backup(service_id: str, request: Request, response: Response, reads: Reads,
                        body: Annotated[BackupIn | None, Body()] = None,
                        identity: Identity = Depends(current_identity), idempotency_key: writes.IdemKey = None,
                        correlation_id: writes.CorrId = None) -> writes.Accepted:
    """Back the service up now. The answer names the operation and the new backup's id; the backup
    shows in `GET …/backups` once accepted, and is restorable once Completed."""
    tenant = writes.tenant_of(request, reads, identity, service_id)
    op_id = writes.command_id(idempotency_key)
    backup_id = str(uuid.uuid5(BACKUP_ID_NAMESPACE, f"{tenant}/{op_id}"))
    actor = require_command(request, reads, identity, tenant, "BackupService")
    accepted = await writes.publish(request, reads, response, tenant, actor, BackupService(service_id, backup_id),
                                    op_id, correlation_id, service_id=service_id)
    return accepted.model_copy(update={"backup_id": backup_id})


@router.get("/services/{service_id}/backups", response_model=BackupPage, responses=_NOT_FOUND)
def list_backups(service_id: str, request: Request, reads: Reads,
                 status: Annotated[BackupState | None, Query(
                     description="only backups in this status; default: every one but the deleted")] = None,
                 limit: Annotated[int, Query(ge=1, le=500, description="at most this many, newest first")] = 100,
                 identity: Identity = Depends(current_identity)) -> BackupPage:
    _readable_service(request, reads, identity, service_id)
    items = reads.backups(service_id, status.value if status else None, limit)
    return BackupPage(items=[_backup(b) for b in items])


@router.get("/backups/{backup_id}", response_model=Backup, responses=_NOT_FOUND)
def get_backup(backup_id: str, request: Request, reads: Reads,
               identity: Identity = Depends(current_identity)) -> Backup:
    return _backup(_readable_backup(request, reads, identity, backup_id))


@router.delete("/backups/{backup_id}", status_code=202, response_model=writes.Accepted, responses=_WRITE)
async def delete_backup(backup_id: str, request: Request, response: Response, reads: Reads,
                        identity: Identity = Depends(current_identity), idempotency_key: writes.IdemKey = None,
                        correlation_id: writes.CorrId = None) -> writes.Accepted:
    """Delete a completed backup: its claim is removed from GitOps and the PoP deletes the stored
    objects. Refused (the operation says why) while it runs, or once it failed or is deleted."""
    missing = f"no backup {backup_id}"
    backup = reads.backup(backup_id)
    if backup is None:
        raise HTTPException(404, missing)
    tenant = writes.visible(request, reads, identity, backup.tenant_id, missing)
    actor = require_command(request, reads, identity, tenant, "DeleteBackup")
    accepted = await writes.publish(request, reads, response, tenant, actor, DeleteBackup(backup_id),
                                    writes.command_id(idempotency_key), correlation_id,
                                    service_id=backup.service_id)
    return accepted.model_copy(update={"backup_id": backup_id})


@router.put("/services/{service_id}/backup-policy", status_code=202, response_model=writes.Accepted,
            responses=_WRITE)
async def set_backup_policy(service_id: str, body: PolicyIn, request: Request, response: Response, reads: Reads,
                            identity: Identity = Depends(current_identity), idempotency_key: writes.IdemKey = None,
                            correlation_id: writes.CorrId = None) -> writes.Accepted:
    """Replace the service's backup policy: schedule, retention, point-in-time recovery. It holds
    once accepted (an operation without steps)."""
    payload = SetBackupPolicy(service_id, body.schedule, body.retain_count, body.retain_days, body.pitr)
    tenant = writes.tenant_of(request, reads, identity, service_id)
    actor = require_command(request, reads, identity, tenant, "SetBackupPolicy")
    return await writes.publish(request, reads, response, tenant, actor, payload,
                                writes.command_id(idempotency_key), correlation_id, service_id=service_id)


@router.get("/services/{service_id}/backup-policy", response_model=Policy, responses=_NOT_FOUND)
def get_backup_policy(service_id: str, request: Request, reads: Reads,
                      identity: Identity = Depends(current_identity)) -> Policy:
    _readable_service(request, reads, identity, service_id)
    facts = reads.backup_facts(service_id)
    if facts is None:
        raise HTTPException(404, f"no service {service_id}")
    p = facts.policy
    return Policy(service_id=service_id, engine=facts.engine, schedule=p.schedule if p else None,
                  retain_count=p.retain_count if p else 0, retain_days=p.retain_days if p else 0,
                  pitr=bool(p and p.pitr), pitr_supported=facts.engine in PITR_ENGINES,
                  set_at=p.set_at if p else None)


@router.get("/services/{service_id}/recovery-window", response_model=RecoveryWindow, responses=_NOT_FOUND)
def get_recovery_window(service_id: str, request: Request, reads: Reads,
                        identity: Identity = Depends(current_identity)) -> RecoveryWindow:
    """The instants (completed backups) and the span of time (with the log archived) the service
    can be restored to now, and the scheduled backups that failed."""
    _readable_service(request, reads, identity, service_id)
    now = datetime.now(UTC)
    reading = reads.recovery_window(service_id, now)
    if reading is None:
        raise HTTPException(404, f"no service {service_id}")
    return recovery_window(reading, now)


def recovery_window(reading: RecoveryReading, now: datetime) -> RecoveryWindow:
    """The answer of `GET …/recovery-window`: the window, and why it has no span when it has none."""
    span, facts = reading.window, reading.service
    return RecoveryWindow(
        service_id=facts.service_id, engine=facts.engine, as_of=now, pitr=span.pitr,
        reason=None if span.pitr else _no_span(reading),
        earliest=span.earliest if span.pitr else None, latest=span.latest if span.pitr else None,
        instants=[Instant(backup_id=i.backup_id, taken_at=i.taken_at, pitr_from=i.pitr_from) for i in span.instants],
        gaps=[Gap(backup_id=g.backup_id, slot=g.slot, reason=g.reason) for g in reading.gaps])


def _no_span(reading: RecoveryReading) -> str:
    facts, span = reading.service, reading.window
    if facts.engine not in PITR_ENGINES:
        return (f"engine {facts.engine} restores backup instants only: no point-in-time recovery "
                f"(offered for {', '.join(PITR_ENGINES)})")
    if span.earliest is not None:  # a span that closed before it opened
        return "point-in-time recovery ended before the oldest backup's log begins"
    if facts.policy is None or not facts.policy.pitr:
        return "point-in-time recovery is off in the service's backup policy (PUT …/backup-policy with pitr true)"
    return "no completed backup with point-in-time recovery yet: the window opens with the first one"


@router.post("/services/{service_id}/restore", status_code=202, response_model=writes.Accepted, responses=_WRITE)
async def restore_service(service_id: str, body: RestoreIn, request: Request, response: Response, reads: Reads,
                          identity: Identity = Depends(current_identity), idempotency_key: writes.IdemKey = None,
                          correlation_id: writes.CorrId = None) -> writes.Accepted:
    """Create a new service with the data of a backup of this one (`backup_id`) or of a point in
    time of its recovery window (`to_time`). The answer names the creation's operation and the new
    service's id; a time outside the window is rejected by the operation, naming the window."""
    if body.to_time is not None and body.to_time.tzinfo is None:
        raise RequestValidationError([{"loc": ["body", "to_time"], "type": "invalid",
                                       "msg": "to_time needs a time zone (RFC 3339), e.g. 2026-11-29T10:00:00Z"}])
    op_id = writes.command_id(idempotency_key)
    # Derived from the command id, so a retried request carries the same service id (same payload).
    new_id = str(uuid.uuid5(RESTORE_ID_NAMESPACE, f"{service_id}/{op_id}"))
    payload = RestoreService(new_id, body.name, service_id, body.backup_id, body.to_time, body.pop, body.size,
                             body.deletion_protection, dict(body.labels))
    writes.check(payload)  # a malformed request is a 422 whoever sends it
    tenant = writes.tenant_of(request, reads, identity, service_id)
    actor = require_command(request, reads, identity, tenant, "RestoreService")
    return await writes.publish(request, reads, response, tenant, actor, payload, op_id, correlation_id,
                                service_id=new_id)
