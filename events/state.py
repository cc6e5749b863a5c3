"""Tenant aggregate state and `evolve`, the pure fold of events into it.

Owns what a command processor must know to judge a tenant's next command: the organization, its
services by id, every command id already judged (fingerprint + outcome, for idempotency) and the
last sequence per aggregate. `evolve` does no I/O and reads no clock or random source.
Imports `events.records` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from events.records import (
    CommandRejected,
    DeletionProtectionSet,
    Envelope,
    EventError,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    OperationAccepted,
    OperationCancelled,
    OperationStarted,
    OrganizationCreated,
    Quota,
    QuotaSet,
    Resources,
    ServiceClaimCommitted,
    ServiceClaimRendered,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceDeletionRequested,
    ServiceFailed,
    ServiceReady,
    ServiceRequested,
    ServiceScaleRequested,
)


class InconsistentLog(EventError):
    """The events do not fit the state: another tenant's event, a sequence gap, an unknown service."""


def replace(obj: Any, /, **changes: Any) -> Any:
    """`dataclasses.replace` for the state's records, which are frozen dataclasses without
    `__post_init__`, slots or init-only fields: a copy of the instance's fields with some changed,
    without going through `__init__` (evolve makes several per event; this is ~10x faster). An
    unknown field name is an error, as there."""
    values = obj.__dict__
    if not changes.keys() <= values.keys():
        raise TypeError(f"{type(obj).__name__} has no field {', '.join(sorted(changes.keys() - values.keys()))}")
    new = object.__new__(obj.__class__)
    new.__dict__.update(values)
    new.__dict__.update(changes)
    return new


class ServiceStatus(StrEnum):
    REQUESTED = "Requested"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    SCALING = "Scaling"
    DELETING = "Deleting"
    DELETED = "Deleted"
    FAILED = "Failed"


@dataclass(frozen=True)
class Organization:
    slug: str
    display_name: str
    owner: str


@dataclass(frozen=True)
class Queued:
    """An accepted operation waiting for the one running on its service."""

    operation_id: str
    action: str  # apply | delete
    resources: Resources  # the service's resources this operation makes true


@dataclass(frozen=True)
class Service:
    service_id: str
    name: str
    engine: str
    engine_version: str
    pop: str
    size: str
    resources: Resources
    deletion_protection: bool
    labels: dict[str, str]
    status: ServiceStatus
    operation_id: str  # the last operation that changed it
    running: str | None = None  # the operation in flight (started, not finished)
    step: int = 0  # steps of `running` done: 1 rendered, 2 committed, 3 reported
    queued: tuple[Queued, ...] = ()  # waiting for `running`, in order
    running_action: str | None = None  # apply | delete, of `running`
    target: Resources | None = None  # the resources `running` makes true
    compensating: str | None = None  # failed | cancelled: the revert of `running`'s commit is pending
    provisioned: bool = False  # the PoP reported it Ready at least once
    applied: Resources | None = None  # the resources of the last Ready report

    @property
    def idle(self) -> bool:
        return self.running is None and not self.queued

    @property
    def counts_toward_quota(self) -> bool:
        """A deleted service, or one whose creation failed and was reverted, uses no quota."""
        return self.live and (self.provisioned or self.status is not ServiceStatus.FAILED)

    @property
    def status_once_rendered(self) -> ServiceStatus:
        """Its status once the running operation's manifests are rendered: a creation's Requested
        becomes Provisioning, any other stays."""
        return ServiceStatus.PROVISIONING if self.status is ServiceStatus.REQUESTED else self.status

    @property
    def quota_share(self) -> tuple[str, str, Resources] | None:
        """What the service holds of its organization's quota: engine, PoP and resources (None: nothing)."""
        return (self.engine, self.pop, self.resources) if self.counts_toward_quota else None

    @property
    def live(self) -> bool:
        return self.status is not ServiceStatus.DELETED


@dataclass(frozen=True)
class Accepted:
    operation_id: str


@dataclass(frozen=True)
class Rejected:
    operation_id: str
    reason_code: str
    field: str | None
    message: str


Outcome = Accepted | Rejected


@dataclass(frozen=True)
class CommandRecord:
    fingerprint: str
    outcome: Outcome


AggregateKey = tuple[str, str]  # (aggregate_type, aggregate_id)


Amounts = tuple[float, float, float]  # cpu, memory_gb, storage_gb — each times replicas
NONE: Amounts = (0.0, 0.0, 0.0)


def _plus(a: Amounts, b: Amounts, sign: int) -> Amounts:
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2])


@dataclass(frozen=True)
class Usage:
    """What an organization's services hold of its quota, kept up to date event by event."""

    services: int = 0
    total: Amounts = NONE
    engines: dict[str, Amounts] = field(default_factory=dict)
    pops: dict[str, Amounts] = field(default_factory=dict)

    def counting(self, engine: str, pop: str, r: Resources, sign: int) -> Usage:
        """This usage with a service of these resources added (sign 1) or taken away (-1)."""
        amounts = (r.cpu * r.replicas, float(r.memory_gb * r.replicas), float(r.storage_gb * r.replicas))
        return Usage(
            self.services + sign,
            _plus(self.total, amounts, sign),
            {**self.engines, engine: _plus(self.of_engine(engine), amounts, sign)},
            {**self.pops, pop: _plus(self.of_pop(pop), amounts, sign)},
        )

    def of_engine(self, engine: str) -> Amounts:
        return self.engines.get(engine, NONE)

    def of_pop(self, pop: str) -> Amounts:
        return self.pops.get(pop, NONE)

    def without(self, s: Service) -> Usage:
        return self.counting(*share, -1) if (share := s.quota_share) else self

    def with_(self, s: Service) -> Usage:
        return self.counting(*share, 1) if (share := s.quota_share) else self


@dataclass(frozen=True)
class TenantState:
    """Never mutated: `evolve` returns a new state sharing what did not change."""

    tenant_id: str
    organization: Organization | None = None
    services: dict[str, Service] = field(default_factory=dict)
    commands: dict[str, CommandRecord] = field(default_factory=dict)
    quota: Quota | None = None  # None: the platform's default quota
    members: dict[str, str] = field(default_factory=dict)  # subject -> role; the creator is org-owner
    usage: Usage = field(default_factory=Usage)  # of the quota, by the services above
    live_names: dict[str, str] = field(default_factory=dict)  # name -> id of the live service so named
    sequences: dict[AggregateKey, int] = field(default_factory=dict)  # last applied, per aggregate


def next_sequence(state: TenantState, aggregate_type: str, aggregate_id: str) -> int:
    return state.sequences.get((aggregate_type, aggregate_id), 0) + 1


def outcome_of(state: TenantState, command_id: str) -> Outcome | None:
    """How command `command_id` was judged, or None if it never was."""
    record = state.commands.get(command_id)
    return record.outcome if record else None


def evolve(state: TenantState, envelope: Envelope) -> TenantState:
    """Apply one event. An event already applied (same aggregate, sequence not newer) changes nothing."""
    if envelope.tenant_id != state.tenant_id:
        raise InconsistentLog(
            f"event {envelope.event_id} belongs to tenant {envelope.tenant_id!r}, not {state.tenant_id!r}"
        )
    key = (envelope.aggregate_type, envelope.aggregate_id)
    last = state.sequences.get(key, 0)
    if envelope.sequence <= last:
        return state
    if envelope.sequence != last + 1:
        raise InconsistentLog(
            f"{envelope.aggregate_type} {envelope.aggregate_id}: expected sequence "
            f"{last + 1}, got {envelope.sequence}; events are missing"
        )
    state = _apply(state, envelope)
    return replace(state, sequences={**state.sequences, key: envelope.sequence})


def replay(tenant_id: str, envelopes: Iterable[Envelope]) -> TenantState:
    state = TenantState(tenant_id)
    for envelope in envelopes:
        state = evolve(state, envelope)
    return state


def _apply(state: TenantState, env: Envelope) -> TenantState:
    match env.payload:
        case OrganizationCreated() as e:
            return replace(state, organization=Organization(e.slug, e.display_name, e.owner),
                           members={**state.members, e.owner: "org-owner"})
        case MemberAdded(subject=subject, role=role) | MemberRoleChanged(subject=subject, new_role=role):
            return replace(state, members={**state.members, subject: role})
        case MemberRemoved() as e:
            return replace(state, members={k: v for k, v in state.members.items() if k != e.subject})
        case ServiceRequested() as e:
            return _put_service(
                state,
                Service(
                    e.service_id,
                    e.name,
                    e.engine,
                    e.engine_version,
                    e.pop,
                    e.size,
                    e.resources,
                    e.deletion_protection,
                    dict(e.labels),
                    ServiceStatus.REQUESTED,
                    env.operation,
                ),
            )
        case ServiceScaleRequested() as e:
            return _requested(state, env, e.service_id, "apply", ServiceStatus.SCALING,
                              resources=e.new_resources)
        case DeletionProtectionSet() as e:  # as for a scale: the manifests are applied again
            return _requested(state, env, e.service_id, "apply", ServiceStatus.SCALING,
                              deletion_protection=e.enabled)
        case ServiceDeletionRequested() as e:
            return _requested(state, env, e.service_id, "delete", ServiceStatus.DELETING)
        case OperationStarted() as e:
            service = _service(state, e.service_id)
            queued = tuple(q for q in service.queued if q.operation_id != e.operation_id)
            status = service.status
            if e.action == "delete":
                status = ServiceStatus.DELETING
            elif status in (ServiceStatus.READY, ServiceStatus.FAILED):
                # a queued scale starts after its predecessor finished; on a service whose creation
                # failed it is a new attempt to create it
                status = ServiceStatus.SCALING if service.provisioned else ServiceStatus.REQUESTED
            status = _awaiting(replace(service, queued=queued), status)
            return _put_service(
                state,
                replace(service, running=e.operation_id, step=0, queued=queued, status=status,
                        running_action=e.action, target=e.resources, compensating=None),
            )
        case ServiceClaimRendered() as e:
            service = _service(state, e.service_id)
            return _put_service(state, replace(service, step=1, status=service.status_once_rendered))
        case ServiceClaimCommitted() as e:
            return _put_service(state, replace(_service(state, e.service_id), step=2))
        case ServiceReady() as e:
            service = _service(state, e.service_id)
            return _put_service(
                state,
                replace(service, step=3, running=None, status=_awaiting(service, ServiceStatus.READY),
                        provisioned=True, applied=service.target or service.resources),
            )
        case ServiceFailed() as e:
            service = _service(state, e.service_id)
            status = ServiceStatus(e.status)
            if e.compensate:
                return _put_service(state, replace(service, compensating="failed", status=status))
            return _put_service(
                state,
                replace(service, running=None, status=_awaiting(service, status),
                        resources=e.resources or service.resources),
            )
        case OperationCancelled() as e:
            service = _service(state, e.service_id)
            if e.compensate:
                return _put_service(state, replace(service, compensating="cancelled", status=ServiceStatus(e.status)))
            queued = tuple(q for q in service.queued if q.operation_id != e.operation_id)
            return _put_service(
                state,
                replace(service, queued=queued, status=ServiceStatus(e.status),
                        resources=e.resources or service.resources),
            )
        case ServiceClaimReverted() as e:
            service = _service(state, e.service_id)
            status = ServiceStatus(e.status)
            return _put_service(
                state,
                replace(service, running=None, compensating=None, status=status,
                        resources=e.resources or service.resources,
                        queued=() if status is ServiceStatus.DELETED else service.queued),
            )
        case QuotaSet() as e:
            return replace(state, quota=e.quota)
        case ServiceDeleted() as e:
            return _put_service(
                state,
                replace(_service(state, e.service_id), running=None, queued=(), status=ServiceStatus.DELETED),
            )
        case OperationAccepted() as e:
            return _record(
                state, env.command_id, CommandRecord(e.command_fingerprint, Accepted(e.operation_id))
            )
        case CommandRejected() as e if env.command_id not in state.commands and not e.refused:
            outcome = Rejected(e.operation_id, e.reason_code, e.field, e.message)
            return _record(state, env.command_id, CommandRecord(e.command_fingerprint, outcome))
        case _:  # a conflicting reuse of a command id (the first outcome stands), or no effect on state
            return state


def _requested(state: TenantState, env: Envelope, service_id: str, action: str, status: ServiceStatus,
               **changes: Any) -> TenantState:
    """A scale, a deletion-protection change or a deletion was accepted: the service takes the
    change at once, and its operation joins the service's queue with the resources it applies."""
    service = _service(state, service_id)
    changed = replace(service, **changes)
    queued = (*service.queued, Queued(env.operation, action, changed.resources))
    return _put_service(state, replace(changed, status=status, operation_id=env.operation, queued=queued))


def _awaiting(service: Service, status: ServiceStatus) -> ServiceStatus:
    """A deletion waiting in the queue outranks any other status: the service is on its way out."""
    return ServiceStatus.DELETING if any(q.action == "delete" for q in service.queued) else status


def _service(state: TenantState, service_id: str) -> Service:
    try:
        return state.services[service_id]
    except KeyError:
        raise InconsistentLog(f"tenant {state.tenant_id!r} has no service {service_id}") from None


def _put_service(state: TenantState, service: Service) -> TenantState:
    """Every change to a service goes through here, so usage and the live names stay in step."""
    old = state.services.get(service.service_id)
    usage = state.usage
    if old is None or old.quota_share != service.quota_share:  # most events change neither
        usage = (usage.without(old) if old is not None else usage).with_(service)
    names = state.live_names
    if old is not None and old.live and not service.live:
        names = {k: v for k, v in names.items() if v != service.service_id}
    elif service.live and names.get(service.name) != service.service_id:
        names = {**names, service.name: service.service_id}
    return replace(state, services={**state.services, service.service_id: service},
                   usage=usage, live_names=names)


def _record(state: TenantState, command_id: str, record: CommandRecord) -> TenantState:
    return replace(state, commands={**state.commands, command_id: record})
