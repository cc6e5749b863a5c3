"""`decide`: judge one command against the tenant's state and answer with the events it causes.

Owns the stateful rules (idempotency, uniqueness, existence, deletion protection, storage only
grows), operation start and rejection events, sequence numbering and deterministic event ids.
Pure: no I/O, no clock, no random source; time comes from the envelope, ids are uuid5 of positions.
Imports `commands.*` and `events`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from commands import cdc
from commands.authority import Proof, believed_actor
from commands.catalog import (
    DEFAULT_QUOTA,
    OPERATION_STEPS,
    PITR_ENGINES,
    RESOURCE_FIELDS,
    SIZE_PLANS,
    STEP_REPORTS,
    subscription_group_prefix,
    subscription_principal,
)
from commands.records import (
    Actor,
    AddMember,
    BackupService,
    CancelOperation,
    ChangeMemberRole,
    CommandEnvelope,
    CommandError,
    CreateOrganization,
    CreateService,
    CreateSubscription,
    DeleteBackup,
    DeleteService,
    DisableCdc,
    EnableCdc,
    RecordBackupCommitted,
    RecordBackupRendered,
    RecordBackupReport,
    RecordBackupReverted,
    RecordBackupStepFailed,
    RecordCdcCommitted,
    RecordCdcRendered,
    RecordCdcReport,
    RecordCdcStepFailed,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    RecordServiceClaimReverted,
    RecordStepFailed,
    RecordStepTimedOut,
    RecordSubscriptionFailed,
    RecordSubscriptionGranted,
    RecordSubscriptionRevoked,
    RemoveMember,
    RestoreService,
    RevokeSubscription,
    ScaleService,
    SetBackupPolicy,
    SetDeletionProtection,
    SetQuota,
)
from commands.validation import (
    Problem,
    authorize,
    engine_in_pop,
    format_number,
    resolve_engine_version,
    resolve_resources,
    validate,
)
from events import (
    STEPS,
    Accepted,
    Action,
    Backup,
    BackupClaimCommitted,
    BackupClaimRendered,
    BackupClaimReverted,
    BackupCompleted,
    BackupDeleted,
    BackupDeletionRequested,
    BackupFailed,
    BackupPolicySet,
    BackupRequested,
    BackupStatus,
    CommandRecord,
    CommandRejected,
    Compensation,
    DeletionProtectionSet,
    Envelope,
    Event,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    OperationAccepted,
    OperationCancelled,
    OperationStarted,
    OrganizationCreated,
    Phase,
    Queued,
    QuotaSet,
    Rejected,
    ResourceLimit,
    Resources,
    RestoreSource,
    Service,
    ServiceClaimCommitted,
    ServiceClaimRendered,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceDeletionRequested,
    ServiceFailed,
    ServiceReady,
    ServiceRequested,
    ServiceScaleRequested,
    ServiceStatus,
    SubscriptionFailed,
    SubscriptionGranted,
    SubscriptionRequested,
    SubscriptionRevocationRequested,
    SubscriptionRevoked,
    SubscriptionStatus,
    TenantState,
    evolve,
    facts,
    lifecycle,
    new_envelope,
    new_service,
    next_sequence,
    replace,
)
from events.backups import Restorable, Window, window
from events.state import Amounts, amounts, moved

EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:event")
REUSE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:command-id-reuse")
REFUSED_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:command-refused")
OPERATION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:operation")
# SHA-1 fed with each namespace's bytes already: a uuid5 under it copies one (`_uuid5`). CPython's
# own SHA-1 where it has one: for a name this short, a third fewer instructions than OpenSSL's.
try:
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - a Python built without it
    _sha1 = hashlib.sha1
_EVENT_ID_NS, _REUSE_NS, _REFUSED_NS, _OPERATION_NS = (
    _sha1(ns.bytes) for ns in (EVENT_ID_NAMESPACE, REUSE_NAMESPACE, REFUSED_NAMESPACE, OPERATION_NAMESPACE))

Change = tuple[str, str, Event]  # (aggregate_type, aggregate_id, event)


class WrongTenant(CommandError):
    """The processor handed decide a command for another tenant's state: a wiring bug."""


Decided = tuple[list[Envelope], TenantState | None]  # the events; the state after them, when folded already


def decide(state: TenantState, cmd: CommandEnvelope, fingerprint: str, proof: Proof) -> list[Envelope]:
    """The events `cmd` causes; [] when it was already judged (its recorded outcome stands).

    `fingerprint` is `commands.fingerprint(payload)` of the command as received; `proof` is what
    the command processor verified about its publisher (`commands.authority`): the actor is
    believed only as far as the key that signed the command allows.
    """
    return _decide(state, cmd, fingerprint, proof)[0]


def decide_and_evolve(
    state: TenantState, cmd: CommandEnvelope, fingerprint: str, proof: Proof
) -> tuple[list[Envelope], TenantState]:
    """`decide`, and the state after its events: what folding them into `state` with `evolve` gives.
    A command that changes a service is folded by `decide` already (each of its events carries the
    status it leads to), so the command processor need not fold those events a second time."""
    envelopes, after = _decide(state, cmd, fingerprint, proof)
    if after is None:
        after = state
        for envelope in envelopes:
            after = evolve(after, envelope)
    return envelopes, after


def _decide(state: TenantState, cmd: CommandEnvelope, fingerprint: str, proof: Proof) -> Decided:
    if cmd.tenant_id != state.tenant_id:
        raise WrongTenant(
            f"command {cmd.command_id} is for tenant {cmd.tenant_id!r}, state is {state.tenant_id!r}"
        )
    actor = believed_actor(proof, cmd)
    if isinstance(actor, Problem):
        return _refuse(state, cmd, fingerprint, actor), None
    if actor is not cmd.actor:
        cmd = replace(cmd, actor=actor)
    op = operation_id(state.tenant_id, cmd.command_id)
    recorded = state.commands.get(cmd.command_id)
    if recorded is not None:
        if recorded.fingerprint == fingerprint:
            return [], None
        return _reused_id(state, cmd, fingerprint, recorded, op), None
    forbidden = authorize(cmd.actor, cmd.command_type, state.members.get(cmd.actor.subject), state.tenant_id)
    problems = [forbidden] if forbidden else validate(cmd.payload)
    verdict = _summary(problems) if problems else _changes(state, cmd, op)
    match verdict:
        case Problem():
            return _reject(state, cmd, fingerprint, verdict, op), None
        case changes if cmd.command_type in STEP_REPORTS:  # part of a running operation; [] = already known
            return _envelopes(state, cmd, changes, cmd.payload.operation_id)
        case changes:
            start = OperationAccepted(
                op,
                cmd.command_type,
                changes[0][1],
                OPERATION_STEPS[cmd.command_type],
                fingerprint,
            )
            accepted = _creation if type(cmd.payload) is CreateService else _accepted
            return accepted(state, cmd, changes, start, op)


def _accepted(state: TenantState, cmd: CommandEnvelope, changes: list[Change], accepted: OperationAccepted,
              op: str) -> Decided:
    """An accepted command's events, the general way (`_envelopes`). The operation exists before
    it starts: OperationAccepted precedes OperationStarted."""
    starts = [c for c in changes if isinstance(c[2], OperationStarted)]
    rest = [c for c in changes if not isinstance(c[2], OperationStarted)]
    return _envelopes(state, cmd, [*rest, ("operation", op, accepted), *starts], op)


def operation_id(tenant_id: str, command_id: str) -> str:
    """The operation a command starts: scoped to its organization, so two tenants choosing the same
    command id (an Idempotency-Key, a publisher's id) never share an operation, a GitOps trailer or
    a deadline. The gateway computes it too, for the `Location` it answers."""
    return _uuid5(_OPERATION_NS, f"{tenant_id}/{command_id}")


def reuse_operation_id(command_id: str, fingerprint: str) -> str:
    """Operation id of the rejection of a reused command id, so the original operation stays untouched."""
    return _uuid5(_REUSE_NS, f"{command_id}/{fingerprint}")


def refused_operation_id(tenant_id: str, command_id: str, fingerprint: str) -> str:
    """Operation id of a refused command (publisher unverified, or acting beyond its key): its own,
    so the command id stays free for its rightful sender."""
    return _uuid5(_REFUSED_NS, f"{tenant_id}/{command_id}/{fingerprint}")


def event_id(tenant_id: str, aggregate_type: str, aggregate_id: str, sequence: int) -> str:
    """Deterministic and unique: one id per position in the log."""
    return _uuid5(_EVENT_ID_NS, f"{tenant_id}/{aggregate_type}/{aggregate_id}/{sequence}")


def _uuid5(namespace: Any, name: str) -> str:
    """`str(uuid.uuid5(namespace, name))`, given a SHA-1 fed with the namespace's bytes, without
    building a `UUID` on the way (decide makes one per event): the first 16 bytes of SHA-1(namespace
    + name), version 5, RFC 4122 variant. Copying the fed hash costs less than hashing the namespace
    again."""
    sha = namespace.copy()
    sha.update(name.encode())
    h = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# The 17th hex digit of a UUID with the RFC 4122 variant (10xx) from SHA-1's digit there.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _changes(state: TenantState, cmd: CommandEnvelope, op: str) -> list[Change] | Problem:
    match cmd.payload:
        case CreateOrganization() as c:
            return _create_organization(state, cmd, c)
        case CreateService() as c:
            return _create_service(state, c, op)
        case ScaleService() as c:
            return _scale_service(state, c, op)
        case DeleteService() as c:
            return _delete_service(state, c, op)
        case SetDeletionProtection() as c:
            return _set_deletion_protection(state, c, op)
        case RecordServiceClaimRendered() as c:
            return _step(state, c.service_id, c.operation_id, 1,
                         ServiceClaimRendered(c.operation_id, c.service_id, c.digest))
        case RecordServiceClaimCommitted() as c:
            return _committed(state, c)
        case RecordPopReport() as c:
            return _pop_report(state, c)
        case RecordStepTimedOut() as c:
            return _timed_out(state, c)
        case RecordStepFailed() as c:
            return _step_failed(state, c.service_id, c.operation_id, c.step, c.reason, f"{c.step}_failed")
        case RecordServiceClaimReverted() as c:
            return _reverted(state, c)
        case CancelOperation() as c:
            return _cancel(state, c)
        case AddMember() | ChangeMemberRole() | RemoveMember() as c:
            return _membership(state, cmd.actor, c)
        case BackupService() as c:
            return _backup_service(state, c, op)
        case SetBackupPolicy() as c:
            return _set_backup_policy(state, c)
        case DeleteBackup() as c:
            return _delete_backup(state, c, op, cmd.actor)
        case RestoreService() as c:
            return _restore_service(state, c, op, cmd.issued_at)
        case RecordBackupRendered() as c:
            return _backup_step(state, c.backup_id, c.operation_id, 1,
                                BackupClaimRendered(c.backup_id, c.operation_id, c.digest))
        case RecordBackupCommitted() as c:
            return _backup_committed(state, c)
        case RecordBackupReport() as c:
            return _backup_report(state, c)
        case RecordBackupStepFailed() as c:
            return _backup_step_failed(state, c)
        case RecordBackupReverted() as c:
            backup = state.backups.get(c.backup_id)
            if backup is None:
                return Problem("not_found", "backup_id", f"backup {c.backup_id} does not exist")
            if backup.operation_id != c.operation_id or not backup.compensating:
                return []
            return [("backup", c.backup_id, BackupClaimReverted(c.backup_id, c.operation_id, c.sha))]
        case EnableCdc() as c:
            return cdc.enable(state, _live_service(state, c.service_id), c, op)
        case DisableCdc() as c:
            return cdc.disable(state, _live_service(state, c.service_id), c, op)
        case RecordCdcRendered() as c:
            return cdc.rendered(state, c.service_id, c.operation_id, c.digest)
        case RecordCdcCommitted() as c:
            return cdc.committed(state, c)
        case RecordCdcReport() as c:
            return cdc.report(state, state.services.get(c.service_id), c)
        case RecordCdcStepFailed() as c:
            return cdc.step_failed(state, c)
        case SetQuota() as c:
            if state.organization is None:
                return _no_organization(state)
            return [("organization", state.tenant_id, QuotaSet(c.quota))]
        case CreateSubscription() | RevokeSubscription() | RecordSubscriptionGranted() | RecordSubscriptionRevoked() | \
                RecordSubscriptionFailed() as c:
            return _subscription(state, c, op)
        case other:
            raise CommandError(f"decide does not know {type(other).__name__}")


def _create_organization(
    state: TenantState, cmd: CommandEnvelope, c: CreateOrganization
) -> list[Change] | Problem:
    if c.slug != state.tenant_id:
        return Problem(
            "invalid",
            "slug",
            f'slug "{c.slug}" must equal the command\'s tenant_id '
            f'"{state.tenant_id}": an organization\'s commands are keyed by its slug',
        )
    if state.organization is not None:
        return Problem("conflict", "slug", f'organization "{c.slug}" already exists; choose another slug')
    return [("organization", c.slug, OrganizationCreated(c.slug, c.display_name, owner=cmd.actor.subject))]


def _create_service(state: TenantState, c: CreateService, cmd_id: str) -> list[Change] | Problem:
    if state.organization is None:
        return _no_organization(state)
    if (taken := state.services.get(c.service_id)) is not None:
        return Problem(
            "conflict",
            "service_id",
            f'service id {c.service_id} is already used by service "{taken.name}"; generate a new service id',
        )
    if (same_id := state.live_names.get(c.name)) is not None:
        same = state.services[same_id]
        return Problem(
            "conflict",
            "name",
            f'a service named "{c.name}" already exists in organization '
            f'"{state.tenant_id}" (service id {same.service_id}); '
            "choose another name or delete that service first",
        )
    requested = ServiceRequested(
        c.service_id,
        c.name,
        c.engine,
        resolve_engine_version(c),
        c.pop,
        c.size,
        resolve_resources(c),
        c.deletion_protection,
        dict(c.labels),
        CREATION_REQUESTED.value,  # a new service's: each event carries the status it leads to
    )
    if (over := _over_quota(state, c.service_id, requested.engine, requested.pop, requested.resources)) is not None:
        return over
    started = _started(requested, cmd_id, Action.APPLY, CREATION_STARTED.value)
    return [("service", c.service_id, requested), ("service", c.service_id, started)]


def _scale_service(state: TenantState, c: ScaleService, cmd_id: str) -> list[Change] | Problem:
    if (service := _live_service(state, c.service_id)) is None:
        return _not_found(state, c.service_id)
    if service.status is ServiceStatus.DELETING:
        return Problem(
            "conflict", None, f'service "{service.name}" is being deleted; it can no longer be scaled'
        )
    old = service.resources

    def asked(field: str) -> float:
        given: float | None = getattr(c, field)
        current: float = getattr(old, field)
        return current if given is None else given

    new = Resources(
        float(asked("cpu")), int(asked("memory_gb")), int(asked("storage_gb")), int(asked("replicas"))
    )
    if new.storage_gb < old.storage_gb:
        return Problem(
            "invalid",
            "storage_gb",
            f'storage_gb can only grow: service "{service.name}" has '
            f"{old.storage_gb} GiB; ask for {old.storage_gb} or more",
        )
    if new == old:
        have = ", ".join(f"{f} {format_number(getattr(old, f))}" for f in RESOURCE_FIELDS)
        return Problem("invalid", None, f'nothing to change: service "{service.name}" already has {have}')
    if (over := _over_quota(state, c.service_id, service.engine, service.pop, new)) is not None:
        return over
    return _requested(service, ServiceScaleRequested(c.service_id, old, new), cmd_id, Action.APPLY,
                      replace(service, resources=new))


def _set_deletion_protection(state: TenantState, c: SetDeletionProtection, cmd_id: str) -> list[Change] | Problem:
    """The setting holds at once (a deletion accepted after turning it off queues behind this
    operation, so the manifests without Argo CD's Prune=false/Delete=false are committed and applied
    by the PoP before the ones that remove the service)."""
    if (service := _live_service(state, c.service_id)) is None:
        return _not_found(state, c.service_id)
    if service.status is ServiceStatus.DELETING:
        return Problem("conflict", None, f'service "{service.name}" is being deleted; its deletion '
                       "protection can no longer change")
    if service.never_ran:
        return Problem("conflict", None, f'service "{service.name}" never ran (its creation failed): there is '
                       "nothing to protect; deletion protection does not hold it back, delete it")
    if service.deletion_protection == c.enabled:
        return Problem("invalid", "enabled", f'deletion protection of service "{service.name}" is already '
                       f'{"on" if c.enabled else "off"}')
    return _requested(service, DeletionProtectionSet(c.service_id, c.enabled), cmd_id, Action.APPLY,
                      replace(service, deletion_protection=c.enabled))


def _delete_service(state: TenantState, c: DeleteService, cmd_id: str) -> list[Change] | Problem:
    if (service := _live_service(state, c.service_id)) is None:
        return _not_found(state, c.service_id)
    if service.status is ServiceStatus.DELETING:
        return Problem(
            "conflict",
            None,
            f'service "{service.name}" is already being deleted by operation {service.operation_id}',
        )
    if service.deletion_protection and not service.never_ran:
        return Problem(
            "conflict",
            "deletion_protection",
            f'service "{service.name}" has deletion protection on; turn deletion_protection '
            "off for this service, then delete it again",
        )
    # its change stream goes first: the connector's removal is committed before the service's
    return [*cdc.on_deletion(state, service, cmd_id),
            *_requested(service, ServiceDeletionRequested(c.service_id), cmd_id, Action.DELETE, service)]


def _requested(service: Service, request: Event, cmd_id: str, action: Action, spec: Service) -> list[Change]:
    """The request event of an operation on `service`; the operation starts at once, with the
    desired `spec`, when nothing runs or waits on the service (else it queues)."""
    changes: list[Change] = [("service", service.service_id, request)]
    if service.idle:
        changes.append(("service", service.service_id, _started(spec, cmd_id, action)))
    return changes


def _started(spec: Service | ServiceRequested, operation_id: str, action: Action,
             status: str | None = None) -> OperationStarted:
    """The start of `operation_id` with the service's desired spec (`status`: the one it leads to,
    when known already; None: stamped by `_envelopes`). A restored service's data is loaded by its
    creation: until the PoP has run it once, every attempt carries the source."""
    provisioned = getattr(spec, "provisioned", False)
    restore = spec.restore if action is Action.APPLY and not provisioned else None
    return OperationStarted(
        operation_id, spec.service_id, action, spec.name, spec.engine, spec.engine_version, spec.pop,
        spec.size, spec.resources, spec.deletion_protection, dict(spec.labels), status, restore,
    )


def _running(state: TenantState, service_id: str, operation_id: str) -> Service | None:
    """The service when `operation_id` is the one in flight on it; None for a stale or unknown report."""
    service = state.services.get(service_id)
    if service is None or service.running != operation_id or service.compensating is not None:
        return None
    return service


def _step(state: TenantState, service_id: str, operation_id: str, step: int, event: Event) -> list[Change] | Problem:
    """Record step `step` of the running operation once; a repeated or stale report changes nothing."""
    if service_id not in state.services:
        return _not_found(state, service_id)
    service = _running(state, service_id, operation_id)
    if service is None or service.step >= step:
        return []
    if service.step != step - 1:
        return Problem("conflict", None, f"operation {operation_id} reports step {step} before step {step - 1}")
    return [("service", service_id, event)]


def _pop_report(state: TenantState, c: RecordPopReport) -> list[Change] | Problem:
    """A PoP's report finishes the running operation once its manifests were committed; an early or
    stale report changes nothing (the PoP reports again on its next sync). The next queued
    operation on the service starts in the same breath."""
    if c.service_id not in state.services:
        return _not_found(state, c.service_id)
    if c.pop != state.services[c.service_id].pop:
        return Problem("forbidden", "pop", f"PoP {c.pop} reported on service {c.service_id}, which runs in "
                       f"PoP {state.services[c.service_id].pop}: a PoP reports only on its own services")
    service = _running(state, c.service_id, c.operation_id)
    if service is None or service.step < 2:
        return []
    match c.phase:
        case Phase.READY:
            return _finish(service, ServiceReady(c.operation_id, c.service_id, c.endpoint, c.credentials))
        case Phase.FAILED:
            reason = f"the PoP {c.pop} reported: {c.reason or 'a failure without a reason'}"
            return [("service", c.service_id, _failed_after_commit(service, reason, "pop_failed"))]
        case _:
            return [("service", c.service_id, ServiceDeleted(c.operation_id, c.service_id))]


def _finish(service: Service, outcome: Event) -> list[Change]:
    """The running operation ended; the next queued operation on the service starts with it."""
    changes: list[Change] = [("service", service.service_id, outcome)]
    if service.queued:
        changes.append(("service", service.service_id, _start_queued(service, service.queued[0])))
    return changes


def _start_queued(service: Service, q: Queued) -> OperationStarted:
    return _started(replace(service, resources=q.resources), q.operation_id, q.action)


def _committed(state: TenantState, c: RecordServiceClaimCommitted) -> list[Change] | Problem:
    """Record the commit. When the repository already held these manifests no commit was made and
    no PoP will report, so the operation is done: the PoP already runs (or already removed) them."""
    event = ServiceClaimCommitted(c.operation_id, c.service_id, c.pop, c.path, c.sha, c.changed)
    changes = _step(state, c.service_id, c.operation_id, 2, event)
    if isinstance(changes, Problem) or not changes or c.changed:
        return changes
    service = state.services[c.service_id]
    if service.running_action is Action.DELETE:
        return [*changes, ("service", c.service_id, ServiceDeleted(c.operation_id, c.service_id))]
    return [*changes, *_finish(service, ServiceReady(c.operation_id, c.service_id, None, None))]


def _failed_after_commit(service: Service, reason: str, code: str) -> ServiceFailed:
    """The operation failed once its manifests were committed: the commit is reverted next."""
    return ServiceFailed(service.running or "", service.service_id, reason, compensate=True,
                         status=_after(lifecycle.FAILED_AFTER_COMMIT, service), code=code)


def _timed_out(state: TenantState, c: RecordStepTimedOut) -> list[Change] | Problem:
    """A step of the running operation took too long."""
    reason = f"step {c.step} did not finish within {c.after_seconds} s"
    return _step_failed(state, c.service_id, c.operation_id, c.step, reason, "timed_out")


def _step_failed(state: TenantState, service_id: str, operation_id: str, step: str, reason: str,
                 code: str) -> list[Change] | Problem:
    """Step `step` of the running operation failed (timed out, or refused for good). Stale (the
    step is done, or another operation runs): nothing. Before the commit nothing reached the
    repository: the operation fails, the service stays as it was and the next queued operation
    starts; after it, the commit is reverted first."""
    if service_id not in state.services:
        return _not_found(state, service_id)
    service = _running(state, service_id, operation_id)
    if service is None or STEPS.index(step) != service.step:
        return []
    if service.step >= 2:
        return [("service", service_id, _failed_after_commit(service, reason, code))]
    return _finish(service, ServiceFailed(
        operation_id, service_id, reason, status=_after(lifecycle.FAILED_BEFORE_COMMIT, service),
        resources=service.applied if service.provisioned else None, code=code, step=step))


def _after(kind: str, service: Service, operation_id: str | None = None) -> str:
    """The status `service` has after an event of `kind` (`events.lifecycle`), as the event carries it."""
    return lifecycle.after(kind, service.status, facts(service, operation_id)).value


def _reverted(state: TenantState, c: RecordServiceClaimReverted) -> list[Change] | Problem:
    """Compensation done: the service is back where the PoP last had it — as before a failed or
    cancelled scale or deletion, gone after a cancelled creation, Failed after a failed one. Then
    the next queued operation starts (or, when the service is gone, is cancelled)."""
    if c.service_id not in state.services:
        return _not_found(state, c.service_id)
    service = state.services[c.service_id]
    if service.running != c.operation_id or service.compensating is None:
        return []
    if not service.provisioned and service.compensating is Compensation.CANCELLED:
        cancelled: list[Change] = [
            ("service", c.service_id, OperationCancelled(
                q.operation_id, c.service_id, False, _after(lifecycle.CANCELLED_BEHIND_CREATION, service)))
            for q in service.queued
        ]
        return [*cancelled, ("service", c.service_id, ServiceClaimReverted(
            c.operation_id, c.service_id, c.sha, _after(lifecycle.REVERTED_CREATION, service)))]
    reverted = ServiceClaimReverted(c.operation_id, c.service_id, c.sha, _after(lifecycle.REVERTED, service),
                                    service.applied if service.provisioned else None)
    return _finish(service, reverted)


def _cancel(state: TenantState, c: CancelOperation) -> list[Change] | Problem:
    """Cancel a queued operation (dropped), or one awaiting its PoP (its commit is reverted). One
    being rendered and committed cannot be: the saga is writing to the repository right now."""
    for service in state.services.values():
        if service.running == c.operation_id:
            if service.compensating is not None:
                return Problem("conflict", "operation_id",
                               f"operation {c.operation_id} already {service.compensating}; "
                               "its GitOps change is being reverted")
            if service.step < 2:
                return Problem("conflict", "operation_id",
                               f"operation {c.operation_id} is being rendered and committed to GitOps; "
                               "it can be cancelled once it awaits the PoP, or wait for it to finish")
            return [("service", service.service_id, OperationCancelled(
                c.operation_id, service.service_id, True, _after(lifecycle.CANCELLED_RUNNING, service)))]
        queued = next((q for q in service.queued if q.operation_id == c.operation_id), None)
        if queued is not None:
            rest = tuple(q for q in service.queued if q is not queued)
            status = _after(lifecycle.CANCELLED_QUEUED, service, c.operation_id)
            desired = next((q.resources for q in reversed(rest) if q.action is Action.APPLY), None)
            resources = desired or service.target or service.resources
            return [("service", service.service_id, OperationCancelled(
                c.operation_id, service.service_id, False, status,
                None if resources == service.resources else resources))]
    if any(isinstance(r.outcome, Accepted) and r.outcome.operation_id == c.operation_id
           for r in state.commands.values()):
        return Problem("conflict", "operation_id",
                       f"operation {c.operation_id} is neither queued nor running (it finished, or it "
                       "is not an operation on a service); there is nothing to cancel")
    return Problem("not_found", "operation_id",
                   f'operation {c.operation_id} does not exist in organization "{state.tenant_id}"')


# -- backups ------------------------------------------------------------------------------------
def _backup_service(state: TenantState, c: BackupService, op: str) -> list[Change] | Problem:
    if (service := _live_service(state, c.service_id)) is None:
        return _not_found(state, c.service_id)
    if (taken := state.backups.get(c.backup_id)) is not None:
        return Problem("conflict", "backup_id", f"backup id {c.backup_id} is already used by a backup of service "
                       f"{taken.service_id}; generate a new backup id")
    if not service.provisioned or service.status in (ServiceStatus.DELETING, ServiceStatus.FAILED):
        return Problem("conflict", "service_id", f'service "{service.name}" is {service.status.value}: it can be '
                       "backed up once it runs (Ready)")
    running = next((b for b in state.backups.values() if b.service_id == c.service_id
                    and b.status in (BackupStatus.REQUESTED, BackupStatus.RUNNING)), None)
    if running is not None:
        return Problem("conflict", "service_id", f'backup {running.backup_id} of service "{service.name}" is '
                       "still running; one backup of a service runs at a time, ask again when it ends")
    pitr = bool(service.backup_policy and service.backup_policy.pitr)
    return [("backup", c.backup_id, BackupRequested(c.backup_id, op, c.service_id, service.name, service.engine,
                                                    service.pop, c.slot, pitr))]


def _set_backup_policy(state: TenantState, c: SetBackupPolicy) -> list[Change] | Problem:
    if (service := _live_service(state, c.service_id)) is None:
        return _not_found(state, c.service_id)
    if c.pitr and service.engine not in PITR_ENGINES:
        return Problem("unsupported", "pitr", f'engine {service.engine} restores backup instants only: '
                       f"point-in-time recovery is offered for {', '.join(PITR_ENGINES)}; set pitr false")
    return [("service", c.service_id, BackupPolicySet(c.service_id, c.schedule, c.retain_count, c.retain_days,
                                                      c.pitr))]


def _delete_backup(state: TenantState, c: DeleteBackup, op: str, actor: Actor) -> list[Change] | Problem:
    backup = state.backups.get(c.backup_id)
    if backup is None or backup.status is BackupStatus.DELETED:
        return Problem("not_found", "backup_id", f'backup {c.backup_id} does not exist in organization '
                       f'"{state.tenant_id}"')
    if backup.status is not BackupStatus.COMPLETED:
        why = {BackupStatus.FAILED: "it failed and holds nothing",
               BackupStatus.DELETING: f"it is being deleted by operation {backup.operation_id}"}.get(
            backup.status, "it is still running; delete it once it completed")
        return Problem("conflict", "backup_id", f"backup {c.backup_id} cannot be deleted: {why}")
    reason = "expired" if "system" in actor.roles else "requested"
    return [("backup", c.backup_id, BackupDeletionRequested(c.backup_id, op, backup.service_id, backup.pop, reason))]


def recovery_window(state: TenantState, service: Service, now: datetime) -> Window:
    """What `service` can be restored to (`events.backups.window` over its completed backups)."""
    policy = service.backup_policy
    done = [Restorable(b.backup_id, b.taken_at, b.pitr_from) for b in state.backups.values()
            if b.service_id == service.service_id and b.status is BackupStatus.COMPLETED and b.taken_at]
    return window(done, pitr_on=bool(policy and policy.pitr),
                  pitr_off_at=policy.set_at if policy and not policy.pitr else None,
                  deleted_at=service.deleted_at, now=now)


def _restore_service(state: TenantState, c: RestoreService, op: str, now: datetime) -> list[Change] | Problem:
    if state.organization is None:
        return _no_organization(state)
    source = state.services.get(c.source_service_id)
    if source is None:
        return Problem("not_found", "source_service_id", f"service {c.source_service_id} does not exist in "
                       f'organization "{state.tenant_id}"; a restore copies a service of the same organization')
    pop, size = c.pop or source.pop, c.size or source.size
    if (problem := engine_in_pop(source.engine, pop)) is not None:
        return problem
    if c.backup_id is not None:
        backup = state.backups.get(c.backup_id)
        if backup is None or backup.service_id != source.service_id:
            return Problem("not_found", "backup_id", f'backup {c.backup_id} of service "{source.name}" does not exist')
        if backup.status is not BackupStatus.COMPLETED:
            return Problem("conflict", "backup_id", f"backup {c.backup_id} is {backup.status.value}: only a "
                           "completed backup can be restored")
    else:
        assert c.to_time is not None
        if source.engine not in PITR_ENGINES:
            return Problem("unsupported", "to_time", f"engine {source.engine} restores backup instants only; "
                           "restore one of its backups (backup_id) instead")
        span = recovery_window(state, source, now)
        if not span.covers(c.to_time):
            return Problem("invalid", "to_time", f'{c.to_time.isoformat()} is outside the recovery window of '
                           f'service "{source.name}", which is {span.describe()}; choose a time within it')
    resources = source.resources if size == source.size else SIZE_PLANS[size]
    create = CreateService(c.service_id, c.name, source.engine, pop, size, source.engine_version,
                           resources.cpu, resources.memory_gb, resources.storage_gb, resources.replicas,
                           c.deletion_protection, dict(c.labels))
    changes = _create_service(state, create, op)
    if isinstance(changes, Problem):
        return changes
    restore = RestoreSource(source.service_id, source.engine, c.backup_id, c.to_time)
    return [(kind, aid, replace(event, restore=restore)) for kind, aid, event in changes]


def _backup_running(state: TenantState, backup_id: str, operation_id: str) -> Backup | None:
    backup = state.backups.get(backup_id)
    if backup is None or backup.operation_id != operation_id or not backup.in_flight:
        return None
    return backup


def _backup_step(state: TenantState, backup_id: str, operation_id: str, step: int,
                 event: Event) -> list[Change] | Problem:
    if backup_id not in state.backups:
        return Problem("not_found", "backup_id", f"backup {backup_id} does not exist")
    backup = _backup_running(state, backup_id, operation_id)
    if backup is None or backup.step >= step:
        return []
    if backup.step != step - 1:
        return Problem("conflict", None, f"operation {operation_id} reports step {step} before step {step - 1}")
    return [("backup", backup_id, event)]


def _backup_committed(state: TenantState, c: RecordBackupCommitted) -> list[Change] | Problem:
    """Recorded once. A deletion whose file was already gone is done: no PoP will report on it."""
    changes = _backup_step(state, c.backup_id, c.operation_id, 2,
                           BackupClaimCommitted(c.backup_id, c.operation_id, c.path, c.sha, c.changed))
    if isinstance(changes, Problem) or not changes or c.changed:
        return changes
    backup = state.backups[c.backup_id]
    if backup.status is BackupStatus.DELETING:
        return [*changes, ("backup", c.backup_id, BackupDeleted(c.backup_id, c.operation_id, backup.service_id))]
    return changes


def _backup_report(state: TenantState, c: RecordBackupReport) -> list[Change] | Problem:
    if c.backup_id not in state.backups:
        return Problem("not_found", "backup_id", f"backup {c.backup_id} does not exist")
    if c.pop != state.backups[c.backup_id].pop:
        return Problem("forbidden", "pop", f"PoP {c.pop} reported on backup {c.backup_id}, which is taken in PoP "
                       f"{state.backups[c.backup_id].pop}: a PoP reports only on its own backups")
    backup = _backup_running(state, c.backup_id, c.operation_id)
    if backup is None or backup.step < 2:
        return []
    deleting = backup.status is BackupStatus.DELETING
    match c.phase:
        case "Completed" if not deleting:
            completed = _completed(backup, c)
            if isinstance(completed, BackupFailed):
                return [("backup", c.backup_id, completed)]
            return [("backup", c.backup_id, completed)]
        case "Deleted" if deleting:
            return [("backup", c.backup_id, BackupDeleted(c.backup_id, c.operation_id, backup.service_id))]
        case "Failed":
            reason = f"the PoP {c.pop} reported: {c.reason or 'a failure without a reason'}"
            return [("backup", c.backup_id, _backup_failed(backup, reason, "pop_failed", "pop-report"))]
    return []  # a report of the other kind (e.g. Deleted while backing up) is not about this operation


def _completed(backup: Backup, c: RecordBackupReport) -> BackupCompleted | BackupFailed:
    """The PoP's account of a stored backup; one that cannot be read makes the backup fail (its
    objects are removed with its claim): a backup nobody can locate is not restorable."""
    try:
        d = json.loads(c.details or "")
        pitr_from = d.get("pitr_from")
        return BackupCompleted(
            c.backup_id, c.operation_id, backup.service_id, _millis(datetime.fromisoformat(d["taken_at"])),
            int(d["size_bytes"]), str(d["location"]), str(d["dek_id"]), str(d["kek_id"]),
            _millis(datetime.fromisoformat(pitr_from)) if pitr_from else None,
            json.dumps(d.get("consistency", {}), sort_keys=True), json.dumps(d.get("tables", {}), sort_keys=True))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return _backup_failed(backup, f"the PoP {c.pop} reported the backup completed, but its details cannot "
                              f"be read ({type(exc).__name__}: {exc})", "pop_failed", "pop-report")


def _millis(t: datetime) -> datetime:
    """`t` as the event log keeps it (Avro timestamp-millis): judged the same before and after a
    restart of the processor, which rebuilds its state from the log."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _backup_failed(backup: Backup, reason: str, code: str, step: str) -> BackupFailed:
    """A backup operation failed; once its claim change was committed that commit is reverted. A
    failed deletion leaves the backup as it was: Completed."""
    status = BackupStatus.COMPLETED if backup.status is BackupStatus.DELETING else BackupStatus.FAILED
    return BackupFailed(backup.backup_id, backup.operation_id, backup.service_id, reason, code, step,
                        compensate=backup.step >= 2, status=status.value)


def _backup_step_failed(state: TenantState, c: RecordBackupStepFailed) -> list[Change] | Problem:
    if c.backup_id not in state.backups:
        return Problem("not_found", "backup_id", f"backup {c.backup_id} does not exist")
    backup = _backup_running(state, c.backup_id, c.operation_id)
    if backup is None or STEPS.index(c.step) != backup.step:
        return []
    code = "timed_out" if c.code == "timed_out" else f"{c.step}_failed"
    return [("backup", c.backup_id, _backup_failed(backup, c.reason, code, c.step))]


def _membership(state: TenantState, actor: Actor, c: AddMember | ChangeMemberRole | RemoveMember) -> list[Change] | Problem:
    """Members come and go and change roles; only an org-owner makes or unmakes an org-owner, and
    the last org-owner stays (an organization always has someone who can do everything)."""
    if state.organization is None:
        return _no_organization(state)
    current = state.members.get(c.subject)
    new = None if isinstance(c, RemoveMember) else c.role
    owner_involved = "org-owner" in (current, new)
    acting_as = {*actor.roles, state.members.get(actor.subject)}
    if owner_involved and "org-owner" not in acting_as:
        return Problem("forbidden", "role", f'only an org-owner can make or unmake an org-owner of "{state.tenant_id}"')
    owners = [s for s, r in state.members.items() if r == "org-owner"]
    if current == "org-owner" and new != "org-owner" and owners == [c.subject]:
        return Problem("conflict", "subject", f'"{c.subject}" is the last org-owner of "{state.tenant_id}"; '
                       "make another member org-owner first")
    org = ("organization", state.tenant_id)
    match c:
        case AddMember() if current is not None:
            return Problem("conflict", "subject", f'"{c.subject}" is already a member of "{state.tenant_id}" '
                           f"({current}); change the role instead")
        case AddMember():
            return [(*org, MemberAdded(c.subject, c.role))]
        case _ if current is None:
            return Problem("not_found", "subject", f'"{c.subject}" is not a member of "{state.tenant_id}"')
        case ChangeMemberRole() if current == c.role:
            return Problem("invalid", "role", f'"{c.subject}" already has the role {c.role}')
        case ChangeMemberRole():
            return [(*org, MemberRoleChanged(c.subject, current, c.role))]
        case _:
            return [(*org, MemberRemoved(c.subject, current))]


def _subscription(state: TenantState, c: Any, op: str) -> list[Change] | Problem:
    """Tenant subscriptions: one operation to grant (the saga creates the credential and ACLs) and
    one to revoke; the saga's reports end them, a stale or repeated report changes nothing."""
    if state.organization is None:
        return _no_organization(state)
    sub = state.subscriptions.get(c.subscription_id)
    key = "subscription", c.subscription_id
    match c:
        case CreateSubscription():
            if sub is not None:
                return Problem("conflict", "subscription_id", f"subscription id {c.subscription_id} is taken; "
                               "generate a new one")
            if any(s.name == c.name and s.holds_name for s in state.subscriptions.values()):
                return Problem("conflict", "name", f'organization "{state.tenant_id}" has a subscription named '
                               f'"{c.name}" already; choose another name or revoke that one first')
            return [(*key, SubscriptionRequested(c.subscription_id, op, c.name,
                                                 subscription_principal(state.tenant_id, c.name),
                                                 subscription_group_prefix(state.tenant_id, c.name),
                                                 c.sealed_password))]
        case _ if sub is None:
            return Problem("not_found", "subscription_id", f'subscription {c.subscription_id} does not exist in '
                           f'organization "{state.tenant_id}"')
        case RevokeSubscription():
            if sub.status in (SubscriptionStatus.REVOKING, SubscriptionStatus.REVOKED):
                return Problem("conflict", "subscription_id", f'subscription "{sub.name}" is already '
                               f"{sub.status.value.lower()}")
            return [(*key, SubscriptionRevocationRequested(c.subscription_id, op))]
        case RecordSubscriptionGranted() if sub.status is SubscriptionStatus.REQUESTED and sub.operation_id == c.operation_id:
            return [(*key, SubscriptionGranted(c.subscription_id, c.operation_id))]
        case RecordSubscriptionFailed() if sub.status is SubscriptionStatus.REQUESTED and sub.operation_id == c.operation_id:
            return [(*key, SubscriptionFailed(c.subscription_id, c.operation_id, c.reason))]
        case RecordSubscriptionRevoked() if sub.status is SubscriptionStatus.REVOKING and sub.operation_id == c.operation_id:
            return [(*key, SubscriptionRevoked(c.subscription_id, c.operation_id))]
        case _:
            return []  # a repeated or stale report of the saga


def _no_organization(state: TenantState) -> Problem:
    return Problem(
        "not_found",
        None,
        f'organization "{state.tenant_id}" does not exist; create it first with CreateOrganization',
    )


def usage(state: TenantState) -> dict[str, Any]:
    """What the organization's services use: their number, and cpu/memory/storage (each times
    replicas) in total, per engine and per PoP. O(1): the state keeps its usage event by event."""
    u = state.usage
    return {"services": u.services, "total": list(u.total),
            "engines": {k: list(v) for k, v in u.engines.items()}, "pops": {k: list(v) for k, v in u.pops.items()}}


QUOTA_DIMENSIONS = (("cpu", "vCPU"), ("memory_gb", "GiB of memory"), ("storage_gb", "GiB of storage"))


def _over_quota(state: TenantState, service_id: str, engine: str, pop: str, resources: Resources) -> Problem | None:
    """Whether creating or scaling `service_id` to `resources` breaks the quota. A change that
    only shrinks what is used is always allowed, even over a quota lowered since. Only the scopes
    the quota limits are counted (no new `Usage` is built: the command processor judges every
    creation here)."""
    quota = state.quota or DEFAULT_QUOTA
    before = state.usage
    old = state.services.get(service_id)
    held = old.quota_share if old is not None else None  # (engine, pop, resources) it counts for now
    gone = amounts(held[2]) if held is not None else None
    new = amounts(resources)
    services = before.services if held is not None else before.services + 1
    if services > before.services and services > quota.max_services:
        return Problem("quota_exceeded", None,
                       f'organization "{state.tenant_id}" has {before.services} services and its quota '
                       f"allows {quota.max_services}; {_quota_hint(state)}")
    limit, used = quota.total, before.total
    if (problem := _scope_over(state, "in total", limit, used, moved(used, gone, new))) is not None:
        return problem
    if engine in quota.engines:
        used = before.of_engine(engine)
        wanted = moved(used, gone if held is not None and held[0] == engine else None, new)
        if (problem := _scope_over(state, f"for engine {engine}", quota.engines[engine], used, wanted)) is not None:
            return problem
    if pop in quota.pops:
        used = before.of_pop(pop)
        wanted = moved(used, gone if held is not None and held[1] == pop else None, new)
        if (problem := _scope_over(state, f"in pop {pop}", quota.pops[pop], used, wanted)) is not None:
            return problem
    return None


def _scope_over(state: TenantState, scope: str, limit: ResourceLimit, used: Amounts, wanted: Amounts) -> Problem | None:
    """The first dimension (`QUOTA_DIMENSIONS`' order) in which `wanted` grows past `limit`; None
    when it stays within it or does not grow (a change that shrinks is always allowed)."""
    for i, (name, unit) in enumerate(QUOTA_DIMENSIONS):
        cap = getattr(limit, name)
        if wanted[i] > cap and wanted[i] > used[i]:
            return Problem("quota_exceeded", name,
                           f'organization "{state.tenant_id}" would use {format_number(wanted[i])} '
                           f"{unit} {scope} (now {format_number(used[i])}), over its quota of "
                           f"{format_number(cap)}; {_quota_hint(state)}")
    return None


def _quota_hint(state: TenantState) -> str:
    return ("delete or scale down a service, or ask an org-owner to raise the quota "
            f"(PUT /api/v1/organizations/{state.tenant_id}/quotas)")


def _live_service(state: TenantState, service_id: str) -> Service | None:
    service = state.services.get(service_id)
    return service if service is not None and service.live else None


def _not_found(state: TenantState, service_id: str) -> Problem:
    return Problem(
        "not_found", "service_id", f'service {service_id} does not exist in organization "{state.tenant_id}"'
    )


def _summary(problems: list[Problem]) -> Problem:
    """One rejection for all problems: the first one's code and field, every message."""
    first = problems[0]
    return Problem(first.reason_code, first.field, "; ".join(p.message for p in problems))


def _reused_id(
    state: TenantState, cmd: CommandEnvelope, fingerprint: str, recorded: CommandRecord, op: str
) -> list[Envelope]:
    operation_id = reuse_operation_id(op, fingerprint)
    if next_sequence(state, "operation", operation_id) > 1:  # this very reuse was already rejected
        return []
    match recorded.outcome:
        case Accepted(operation_id=original):
            before = f"accepted as operation {original}"
        case Rejected(reason_code=code):
            before = f"rejected ({code})"
    problem = Problem(
        "conflict",
        None,
        f"command id {cmd.command_id} was already used for a different request, "
        f"{before}; send a new command id for a new request",
    )
    return _reject(state, cmd, fingerprint, problem, operation_id)


def _refuse(state: TenantState, cmd: CommandEnvelope, fingerprint: str, problem: Problem) -> list[Envelope]:
    """The publisher may not send this command: say so once, on an operation of the refusal's own."""
    operation_id = refused_operation_id(state.tenant_id, cmd.command_id, fingerprint)
    if next_sequence(state, "operation", operation_id) > 1:  # refused already
        return []
    return _reject(state, cmd, fingerprint, problem, operation_id, refused=True)


def _reject(
    state: TenantState, cmd: CommandEnvelope, fingerprint: str, problem: Problem, operation_id: str,
    refused: bool = False,
) -> list[Envelope]:
    rejected = CommandRejected(
        operation_id, cmd.command_type, problem.reason_code, problem.field, problem.message, fingerprint,
        refused,
    )
    return _envelopes(state, cmd, [("operation", operation_id, rejected)], operation_id)[0]


def _envelopes(state: TenantState, cmd: CommandEnvelope, changes: list[Change], op: str) -> Decided:
    """The changes as envelopes, numbered after the state's sequences. When an event is to carry
    the status it leads to, every event is folded into the state to find it, and that state is
    returned too (else None)."""
    last: dict[tuple[str, str], int] = {}
    envelopes = []
    stamping = any(getattr(event, "status", "") is None for _, _, event in changes)
    for aggregate_type, aggregate_id, event in changes:
        key = (aggregate_type, aggregate_id)
        sequence = last[key] = last.get(key, next_sequence(state, *key) - 1) + 1
        envelopes.append(_envelope(state.tenant_id, cmd, aggregate_type, aggregate_id, sequence, event, op))
        if stamping:  # the event carries the status the lifecycle gives it, after those before it
            state = evolve(state, envelopes[-1])
            if getattr(event, "status", "") is None:
                status = state.services[aggregate_id].status.value
                envelopes[-1] = replace(envelopes[-1], payload=replace(event, status=status))
    return envelopes, state if stamping else None


def _envelope(tenant_id: str, cmd: CommandEnvelope, aggregate_type: str, aggregate_id: str, sequence: int,
              event: Event, op: str) -> Envelope:
    return new_envelope(event_id(tenant_id, aggregate_type, aggregate_id, sequence), tenant_id, aggregate_type,
                        aggregate_id, sequence, cmd.issued_at, cmd.command_id, cmd.correlation_id, cmd.command_id,
                        event, cmd.actor.subject, op)


# What a creation's two service events lead to, from the lifecycle table: a new service, nothing
# waiting on it, requested and then started.
CREATION_REQUESTED = lifecycle.after("ServiceRequested", None)
CREATION_STARTED = lifecycle.after(lifecycle.STARTED_APPLY, CREATION_REQUESTED)


def _creation(state: TenantState, cmd: CommandEnvelope, changes: list[Change], accepted: OperationAccepted,
              op: str) -> Decided:
    """An accepted CreateService's events — ServiceRequested, OperationAccepted, OperationStarted,
    each carrying the status it leads to — and the state after them, built at once: what
    `_envelopes` gives by folding each event in turn (three folds, two restamped events), for the
    command that is most of the log's traffic: the same events and state as `_accepted` (tested on
    generated creations), and `evolve` of these envelopes gives this very state (the domain tests
    check it on every creation they judge)."""
    (_, service_id, requested), (_, _, started) = changes
    tenant = state.tenant_id
    sequence = next_sequence(state, "service", service_id)
    op_sequence = next_sequence(state, "operation", op)
    envelopes = [
        _envelope(tenant, cmd, "service", service_id, sequence, requested, op),
        _envelope(tenant, cmd, "operation", op, op_sequence, accepted, op),
        _envelope(tenant, cmd, "service", service_id, sequence + 1, started, op),
    ]
    service = new_service(
        service_id=service_id, name=requested.name, engine=requested.engine,
        engine_version=requested.engine_version, pop=requested.pop, size=requested.size,
        resources=requested.resources, deletion_protection=requested.deletion_protection,
        labels=dict(requested.labels), status=CREATION_STARTED, operation_id=op, running=op,
        running_action=Action.APPLY, target=started.resources, restore=requested.restore,
    )
    return envelopes, replace(
        state,
        services=state.services.set(service_id, service),
        usage=state.usage.counting(requested.engine, requested.pop, requested.resources, 1),
        live_names=state.live_names.set(service.name, service_id),
        commands=state.commands.set(cmd.command_id, CommandRecord(accepted.command_fingerprint, Accepted(op))),
        sequences=state.sequences.set(("service", service_id), sequence + 1).set(("operation", op), op_sequence),
    )
