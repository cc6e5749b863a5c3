"""`decide`: judge one command against the tenant's state and answer with the events it causes.

Owns the stateful rules (idempotency, uniqueness, existence, deletion protection, storage only
grows), operation start and rejection events, sequence numbering and deterministic event ids.
Pure: no I/O, no clock, no random source; time comes from the envelope, ids are uuid5 of positions.
Imports `commands.*` and `events`.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from commands.catalog import OPERATION_STEPS, RESOURCE_FIELDS, STEP_REPORTS
from commands.records import (
    CommandEnvelope,
    CommandError,
    CreateOrganization,
    CreateService,
    DeleteService,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    ScaleService,
)
from commands.validation import (
    Problem,
    authorize,
    format_number,
    resolve_engine_version,
    resolve_resources,
    validate,
)
from events import (
    Accepted,
    CommandRecord,
    CommandRejected,
    Envelope,
    Event,
    OperationAccepted,
    OperationStarted,
    OrganizationCreated,
    Rejected,
    Resources,
    Service,
    ServiceClaimCommitted,
    ServiceClaimRendered,
    ServiceDeleted,
    ServiceDeletionRequested,
    ServiceFailed,
    ServiceReady,
    ServiceRequested,
    ServiceScaleRequested,
    ServiceStatus,
    TenantState,
    next_sequence,
)

EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:event")
REUSE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:command-id-reuse")

Change = tuple[str, str, Event]  # (aggregate_type, aggregate_id, event)


class WrongTenant(CommandError):
    """The processor handed decide a command for another tenant's state: a wiring bug."""


def decide(state: TenantState, cmd: CommandEnvelope, fingerprint: str) -> list[Envelope]:
    """The events `cmd` causes; [] when it was already judged (its recorded outcome stands).

    `fingerprint` is `commands.fingerprint(payload)` of the command as received.
    """
    if cmd.tenant_id != state.tenant_id:
        raise WrongTenant(
            f"command {cmd.command_id} is for tenant {cmd.tenant_id!r}, state is {state.tenant_id!r}"
        )
    recorded = state.commands.get(cmd.command_id)
    if recorded is not None:
        return [] if recorded.fingerprint == fingerprint else _reused_id(state, cmd, fingerprint, recorded)
    forbidden = authorize(cmd.actor, cmd.command_type)
    problems = [forbidden] if forbidden else validate(cmd.payload)
    verdict = _summary(problems) if problems else _changes(state, cmd)
    match verdict:
        case Problem():
            return _reject(state, cmd, fingerprint, verdict, cmd.command_id)
        case changes if cmd.command_type in STEP_REPORTS:  # part of a running operation; [] = already known
            return _envelopes(state, cmd, changes)
        case changes:
            start = OperationAccepted(
                cmd.command_id,
                cmd.command_type,
                changes[0][1],
                OPERATION_STEPS[cmd.command_type],
                fingerprint,
            )
            # The operation exists before it starts: OperationAccepted precedes OperationStarted.
            starts = [c for c in changes if isinstance(c[2], OperationStarted)]
            rest = [c for c in changes if not isinstance(c[2], OperationStarted)]
            return _envelopes(state, cmd, [*rest, ("operation", cmd.command_id, start), *starts])


def reuse_operation_id(command_id: str, fingerprint: str) -> str:
    """Operation id of the rejection of a reused command id, so the original operation stays untouched."""
    return str(uuid.uuid5(REUSE_NAMESPACE, f"{command_id}/{fingerprint}"))


def event_id(tenant_id: str, aggregate_type: str, aggregate_id: str, sequence: int) -> str:
    """Deterministic and unique: one id per position in the log."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{tenant_id}/{aggregate_type}/{aggregate_id}/{sequence}"))


def _changes(state: TenantState, cmd: CommandEnvelope) -> list[Change] | Problem:
    match cmd.payload:
        case CreateOrganization() as c:
            return _create_organization(state, cmd, c)
        case CreateService() as c:
            return _create_service(state, c, cmd.command_id)
        case ScaleService() as c:
            return _scale_service(state, c, cmd.command_id)
        case DeleteService() as c:
            return _delete_service(state, c, cmd.command_id)
        case RecordServiceClaimRendered() as c:
            return _step(state, c.service_id, c.operation_id, 1,
                         ServiceClaimRendered(c.operation_id, c.service_id, c.digest))
        case RecordServiceClaimCommitted() as c:
            return _step(state, c.service_id, c.operation_id, 2,
                         ServiceClaimCommitted(c.operation_id, c.service_id, c.pop, c.path, c.sha))
        case RecordPopReport() as c:
            return _pop_report(state, c)
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
        return Problem(
            "not_found",
            None,
            f'organization "{state.tenant_id}" does not exist; create it first with CreateOrganization',
        )
    if (taken := state.services.get(c.service_id)) is not None:
        return Problem(
            "conflict",
            "service_id",
            f'service id {c.service_id} is already used by service "{taken.name}"; generate a new service id',
        )
    if (same := next((s for s in state.services.values() if s.live and s.name == c.name), None)) is not None:
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
    )
    return [("service", c.service_id, requested), ("service", c.service_id, _started(requested, cmd_id, "apply"))]


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
    changes: list[Change] = [("service", c.service_id, ServiceScaleRequested(c.service_id, old, new))]
    if service.idle:
        changes.append(("service", c.service_id, _started(replace(service, resources=new), cmd_id, "apply")))
    return changes


def _delete_service(state: TenantState, c: DeleteService, cmd_id: str) -> list[Change] | Problem:
    if (service := _live_service(state, c.service_id)) is None:
        return _not_found(state, c.service_id)
    if service.status is ServiceStatus.DELETING:
        return Problem(
            "conflict",
            None,
            f'service "{service.name}" is already being deleted by operation {service.operation_id}',
        )
    if service.deletion_protection:
        return Problem(
            "conflict",
            "deletion_protection",
            f'service "{service.name}" has deletion protection on; turn deletion_protection '
            "off for this service, then delete it again",
        )
    changes: list[Change] = [("service", c.service_id, ServiceDeletionRequested(c.service_id))]
    if service.idle:
        changes.append(("service", c.service_id, _started(service, cmd_id, "delete")))
    return changes


def _started(spec: Service | ServiceRequested, operation_id: str, action: str) -> OperationStarted:
    """The start of `operation_id` with the service's desired spec."""
    return OperationStarted(
        operation_id, spec.service_id, action, spec.name, spec.engine, spec.engine_version, spec.pop,
        spec.size, spec.resources, spec.deletion_protection, dict(spec.labels),
    )


def _running(state: TenantState, service_id: str, operation_id: str) -> Service | None:
    """The service when `operation_id` is the one in flight on it; None for a stale or unknown report."""
    service = state.services.get(service_id)
    return service if service is not None and service.running == operation_id else None


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
    service = _running(state, c.service_id, c.operation_id)
    if service is None or service.step < 2:
        return []
    match c.phase:
        case "Ready":
            outcome: Event = ServiceReady(c.operation_id, c.service_id, c.endpoint, c.credentials)
        case "Failed":
            outcome = ServiceFailed(c.operation_id, c.service_id, c.reason or "the PoP reported a failure")
        case _:
            return [("service", c.service_id, ServiceDeleted(c.operation_id, c.service_id))]
    changes: list[Change] = [("service", c.service_id, outcome)]
    if service.queued:
        next_id, action = service.queued[0]
        changes.append(("service", c.service_id, _started(service, next_id, action)))
    return changes


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
    state: TenantState, cmd: CommandEnvelope, fingerprint: str, recorded: CommandRecord
) -> list[Envelope]:
    operation_id = reuse_operation_id(cmd.command_id, fingerprint)
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


def _reject(
    state: TenantState, cmd: CommandEnvelope, fingerprint: str, problem: Problem, operation_id: str
) -> list[Envelope]:
    rejected = CommandRejected(
        operation_id, cmd.command_type, problem.reason_code, problem.field, problem.message, fingerprint
    )
    return _envelopes(state, cmd, [("operation", operation_id, rejected)])


def _envelopes(state: TenantState, cmd: CommandEnvelope, changes: list[Change]) -> list[Envelope]:
    last: dict[tuple[str, str], int] = {}
    envelopes = []
    for aggregate_type, aggregate_id, event in changes:
        key = (aggregate_type, aggregate_id)
        sequence = last[key] = last.get(key, next_sequence(state, *key) - 1) + 1
        envelopes.append(
            Envelope(
                event_id=event_id(state.tenant_id, aggregate_type, aggregate_id, sequence),
                tenant_id=state.tenant_id,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                sequence=sequence,
                occurred_at=cmd.issued_at,
                command_id=cmd.command_id,
                correlation_id=cmd.correlation_id,
                causation_id=cmd.command_id,
                payload=event,
                actor_subject=cmd.actor.subject,
            )
        )
    return envelopes
