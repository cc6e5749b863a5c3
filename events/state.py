"""Tenant aggregate state and `evolve`, the pure fold of events into it.

Owns what a command processor must know to judge a tenant's next command: the organization, its
services by id, every command id already judged (fingerprint + outcome, for idempotency) and the
last sequence per aggregate. `evolve` does no I/O and reads no clock or random source. The state's
maps are persistent (`events.pmap.PMap`): an event costs what it changes, not what the tenant holds.
Imports `events.records`, `events.lifecycle` and `events.pmap` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from events import lifecycle
from events.lifecycle import Action, Compensation, Status
from events.pmap import PMap
from events.records import (
    BackupClaimCommitted,
    BackupClaimRendered,
    BackupClaimReverted,
    BackupCompleted,
    BackupDeleted,
    BackupDeletionRequested,
    BackupFailed,
    BackupPolicySet,
    BackupRequested,
    CdcConnectorCommitted,
    CdcConnectorFailed,
    CdcConnectorRegistered,
    CdcConnectorRendered,
    CdcDisabled,
    CdcDisableRequested,
    CdcEnableRequested,
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
    RestoreSource,
    ServiceClaimCommitted,
    ServiceClaimRendered,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceDeletionRequested,
    ServiceFailed,
    ServiceReady,
    ServiceRequested,
    ServiceScaleRequested,
    SubscriptionFailed,
    SubscriptionGranted,
    SubscriptionRequested,
    SubscriptionRevocationRequested,
    SubscriptionRevoked,
    direct_builder,
    replace,
)


class InconsistentLog(EventError):
    """The events do not fit the state: another tenant's event, a sequence gap, an unknown service."""


ServiceStatus = Status  # the name the rest of the project knows it by


@dataclass(frozen=True)
class Organization:
    slug: str
    display_name: str
    owner: str


@dataclass(frozen=True)
class Queued:
    """An accepted operation waiting for the one running on its service."""

    operation_id: str
    action: Action
    resources: Resources  # the service's resources this operation makes true


@dataclass(frozen=True)
class BackupPolicy:
    schedule: str | None  # cron (UTC); None: no scheduled backups
    retain_count: int  # 0: no limit by count
    retain_days: int  # 0: no limit by age
    pitr: bool
    set_at: datetime


class BackupStatus(StrEnum):
    REQUESTED = "Requested"  # accepted, its claim not rendered yet
    RUNNING = "Running"  # rendered, committed, awaiting the PoP
    COMPLETED = "Completed"  # restorable
    FAILED = "Failed"  # never restorable
    DELETING = "Deleting"  # its file is being removed from GitOps; the PoP deletes the objects
    DELETED = "Deleted"


class CdcStatus(StrEnum):
    ENABLING = "Enabling"  # its KafkaConnector is being rendered and committed; the PoP registers it
    RUNNING = "Running"  # changes flow to the service's CDC topics
    FAILED = "Failed"  # could not be set up, or stayed failed after its PoP's restarts
    DISABLING = "Disabling"  # its KafkaConnector is being removed; the PoP drops slot and publication
    DISABLED = "Disabled"


@dataclass(frozen=True)
class Cdc:
    """A service's change stream: one connector per service, one operation on it at a time."""

    service_id: str
    connector: str
    status: CdcStatus
    operation_id: str  # the last operation on it (enable or disable)
    tables: tuple[str, ...] = ()
    step: int = 0  # of `operation_id`: 1 rendered, 2 committed, 3 reported
    reason: str | None = None  # why it failed

    @property
    def in_flight(self) -> bool:
        return self.status in (CdcStatus.ENABLING, CdcStatus.DISABLING)

    @property
    def holds_connector(self) -> bool:
        """A connector (or its file in GitOps) may exist: disabling has something to remove."""
        return self.status is not CdcStatus.DISABLED


@dataclass(frozen=True)
class Backup:
    backup_id: str
    service_id: str
    engine: str
    pop: str
    status: BackupStatus
    operation_id: str  # the operation in flight on it (the backup's, then its deletion's)
    requested_at: datetime
    step: int = 0  # of `operation_id`: 1 rendered, 2 committed
    slot: str | None = None
    pitr: bool = False
    taken_at: datetime | None = None
    pitr_from: datetime | None = None
    size_bytes: int = 0
    dek_id: str | None = None
    kek_id: str | None = None
    compensating: bool = False  # its failed operation's GitOps change is being reverted

    @property
    def in_flight(self) -> bool:
        return self.status in (BackupStatus.REQUESTED, BackupStatus.RUNNING, BackupStatus.DELETING)


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
    running_action: Action | None = None  # of `running`
    target: Resources | None = None  # the resources `running` makes true
    compensating: Compensation | None = None  # the revert of `running`'s commit is pending
    provisioned: bool = False  # the PoP reported it Ready at least once
    applied: Resources | None = None  # the resources of the last Ready report
    restore: RestoreSource | None = None  # a restored service's source
    backup_policy: BackupPolicy | None = None
    deleted_at: datetime | None = None

    @property
    def idle(self) -> bool:
        return self.running is None and not self.queued

    @property
    def counts_toward_quota(self) -> bool:
        """A deleted service, or one whose creation failed and was reverted, uses no quota."""
        return self.live and (self.provisioned or self.status is not Status.FAILED)

    @property
    def never_ran(self) -> bool:
        """Its creation failed and was reverted: no PoP ever had it, there is no data to protect."""
        return not self.provisioned and self.status is Status.FAILED and self.running is None

    @property
    def quota_share(self) -> tuple[str, str, Resources] | None:
        """What the service holds of its organization's quota: engine, PoP and resources (None: nothing)."""
        return (self.engine, self.pop, self.resources) if self.counts_toward_quota else None

    @property
    def live(self) -> bool:
        return self.status is not Status.DELETED


# `new_service(...)`: `Service(...)` without the frozen `__init__`'s setattr per field (22 of them:
# the larger part of folding a creation), the same parameters; an unknown or missing field is the
# same TypeError, naming it.
new_service: Callable[..., Service] = direct_builder(Service)


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


def amounts(r: Resources) -> Amounts:
    """What a service of resources `r` holds of a quota: cpu, memory and storage, each times replicas."""
    return (r.cpu * r.replicas, float(r.memory_gb * r.replicas), float(r.storage_gb * r.replicas))


def moved(used: Amounts, gone: Amounts | None, new: Amounts) -> Amounts:
    """`used` without `gone` (when given) and with `new`: a scope's usage after a service in it is
    created (gone None) or changed, computed as `Usage.without` then `Usage.counting` would."""
    if gone is not None:
        used = _plus(used, gone, -1)
    return _plus(used, new, 1)


@dataclass(frozen=True)
class Usage:
    """What an organization's services hold of its quota, kept up to date event by event."""

    services: int = 0
    total: Amounts = NONE
    engines: dict[str, Amounts] = field(default_factory=dict)
    pops: dict[str, Amounts] = field(default_factory=dict)

    def counting(self, engine: str, pop: str, r: Resources, sign: int) -> Usage:
        """This usage with a service of these resources added (sign 1) or taken away (-1)."""
        cpu, memory, storage = amounts(r)
        if sign < 0:  # a + (-b) is a - b exactly: the sums `_plus` gives
            cpu, memory, storage = -cpu, -memory, -storage
        engines, pops, total = self.engines, self.pops, self.total
        e, p = engines.get(engine, NONE), pops.get(pop, NONE)
        return _new_usage(  # `Usage(...)` without the frozen `__init__`: one per creation
            self.services + sign,
            (total[0] + cpu, total[1] + memory, total[2] + storage),
            {**engines, engine: (e[0] + cpu, e[1] + memory, e[2] + storage)},
            {**pops, pop: (p[0] + cpu, p[1] + memory, p[2] + storage)},
        )

    def of_engine(self, engine: str) -> Amounts:
        return self.engines.get(engine, NONE)

    def of_pop(self, pop: str) -> Amounts:
        return self.pops.get(pop, NONE)

    def without(self, s: Service) -> Usage:
        return self.counting(*share, -1) if (share := s.quota_share) else self

    def with_(self, s: Service) -> Usage:
        return self.counting(*share, 1) if (share := s.quota_share) else self


_new_usage: Callable[..., Usage] = direct_builder(Usage)


class SubscriptionStatus(StrEnum):
    REQUESTED = "Requested"  # the saga has not granted it yet
    ACTIVE = "Active"
    REVOKING = "Revoking"
    REVOKED = "Revoked"
    FAILED = "Failed"  # granting failed for good: nothing of it is on the broker


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    name: str
    principal: str
    status: SubscriptionStatus
    operation_id: str  # of the running (or last) operation on it

    @property
    def holds_name(self) -> bool:
        return self.status in (SubscriptionStatus.REQUESTED, SubscriptionStatus.ACTIVE, SubscriptionStatus.REVOKING)


@dataclass(frozen=True)
class TenantState:
    """Never mutated: `evolve` returns a new state sharing what did not change (its maps are
    `PMap`s; plain dicts given to the constructor become ones)."""

    tenant_id: str
    organization: Organization | None = None
    services: PMap[str, Service] = field(default_factory=PMap)
    commands: PMap[str, CommandRecord] = field(default_factory=PMap)
    quota: Quota | None = None  # None: the platform's default quota
    members: PMap[str, str] = field(default_factory=PMap)  # subject -> role; the creator is org-owner
    usage: Usage = field(default_factory=Usage)  # of the quota, by the services above
    live_names: PMap[str, str] = field(default_factory=PMap)  # name -> id of the live service so named
    sequences: PMap[AggregateKey, int] = field(default_factory=PMap)  # last applied, per aggregate
    backups: PMap[str, Backup] = field(default_factory=PMap)  # by backup id, of live and deleted services
    cdc: PMap[str, Cdc] = field(default_factory=PMap)  # by service id: its change stream
    subscriptions: PMap[str, Subscription] = field(default_factory=PMap)  # by id, revoked ones too

    def __post_init__(self) -> None:
        for name in _MAPS:
            value = self.__dict__[name]
            if not isinstance(value, PMap):
                object.__setattr__(self, name, PMap(value))


_MAPS = ("services", "commands", "members", "live_names", "sequences", "backups", "cdc", "subscriptions")


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
    after = _apply(state, envelope)
    sequences = after.sequences.set(key, envelope.sequence)
    if after is state:
        return replace(state, sequences=sequences)
    # An applier returns `state` or a new state of its own making, seen by nothing yet: that copy
    # takes the sequence too, instead of being copied again (three copies fewer per CreateService).
    after.__dict__["sequences"] = sequences
    return after


def replay(tenant_id: str, envelopes: Iterable[Envelope]) -> TenantState:
    state = TenantState(tenant_id)
    for envelope in envelopes:
        state = evolve(state, envelope)
    return state


def _apply(state: TenantState, env: Envelope) -> TenantState:
    apply = APPLIERS.get(type(env.payload))
    return state if apply is None else apply(state, env, env.payload)


def _status(service: Service | None, env: Envelope, kind: str, operation_id: str | None = None) -> Status:
    """The status the event carries; for an event recorded before events carried it, the one the
    lifecycle table gives (`status: null`)."""
    carried = getattr(env.payload, "status", None)
    if carried is not None:
        return Status(carried)
    status = service.status if service else None
    try:
        return lifecycle.after(kind, status, facts(service, operation_id) if service else lifecycle.Facts())
    except lifecycle.LifecycleError:  # recorded, so it happened: take what the event says on its own
        return lifecycle.implied(kind) or status or Status.REQUESTED


def facts(service: Service, operation_id: str | None = None) -> lifecycle.Facts:
    """What the lifecycle's guards ask about `service`; `operation_id`: the event's own operation,
    which does not count as waiting in the queue (it starts, or is dropped, by this event)."""
    return lifecycle.Facts(
        ran=service.provisioned,
        deletion_waits=any(q.action == Action.DELETE and q.operation_id != operation_id for q in service.queued),
        deleting=service.running_action == Action.DELETE,
        rendered=service.step >= 1,
        reverting_failure=service.compensating == Compensation.FAILED,
    )


def _organization_created(state: TenantState, env: Envelope, e: OrganizationCreated) -> TenantState:
    return replace(state, organization=Organization(e.slug, e.display_name, e.owner),
                   members=state.members.set(e.owner, "org-owner"))


def _member_set(state: TenantState, env: Envelope, e: MemberAdded | MemberRoleChanged) -> TenantState:
    role = e.role if isinstance(e, MemberAdded) else e.new_role
    return replace(state, members=state.members.set(e.subject, role))


def _member_removed(state: TenantState, env: Envelope, e: MemberRemoved) -> TenantState:
    return replace(state, members=state.members.discard(e.subject))


def _service_requested(state: TenantState, env: Envelope, e: ServiceRequested) -> TenantState:
    return _put_service(state, new_service(
        service_id=e.service_id, name=e.name, engine=e.engine, engine_version=e.engine_version, pop=e.pop,
        size=e.size, resources=e.resources, deletion_protection=e.deletion_protection, labels=dict(e.labels),
        status=_status(None, env, "ServiceRequested"), operation_id=env.operation, restore=e.restore,
    ))


def _scale_requested(state: TenantState, env: Envelope, e: ServiceScaleRequested) -> TenantState:
    return _requested(state, env, e.service_id, Action.APPLY, resources=e.new_resources)


def _protection_set(state: TenantState, env: Envelope, e: DeletionProtectionSet) -> TenantState:
    # as for a scale: the manifests are applied again
    return _requested(state, env, e.service_id, Action.APPLY, deletion_protection=e.enabled)


def _deletion_requested(state: TenantState, env: Envelope, e: ServiceDeletionRequested) -> TenantState:
    return _requested(state, env, e.service_id, Action.DELETE)


def _requested(state: TenantState, env: Envelope, service_id: str, action: Action, **changes: Any) -> TenantState:
    """A scale, a deletion-protection change or a deletion was accepted: the service takes the
    change at once, and its operation joins the service's queue with the resources it applies."""
    service = _service(state, service_id)
    changed = replace(service, **changes)
    queued = (*service.queued, Queued(env.operation, action, changed.resources))
    status = _status(service, env, type(env.payload).__name__)
    return _put_service(state, replace(changed, status=status, operation_id=env.operation, queued=queued))


def _operation_started(state: TenantState, env: Envelope, e: OperationStarted) -> TenantState:
    service = _service(state, e.service_id)
    queued = tuple(q for q in service.queued if q.operation_id != e.operation_id)
    status = _status(service, env, lifecycle.started(e.action), e.operation_id)
    return _put_service(state, replace(service, running=e.operation_id, step=0, queued=queued, status=status,
                                       running_action=Action(e.action), target=e.resources, compensating=None))


def _rendered(state: TenantState, env: Envelope, e: ServiceClaimRendered) -> TenantState:
    service = _service(state, e.service_id)
    return _put_service(state, replace(service, step=1, status=_status(service, env, "ServiceClaimRendered")))


def _committed(state: TenantState, env: Envelope, e: ServiceClaimCommitted) -> TenantState:
    return _put_service(state, replace(_service(state, e.service_id), step=2))


def _ready(state: TenantState, env: Envelope, e: ServiceReady) -> TenantState:
    service = _service(state, e.service_id)
    return _put_service(state, replace(service, step=3, running=None, status=_status(service, env, "ServiceReady"),
                                       provisioned=True, applied=service.target or service.resources))


def _failed(state: TenantState, env: Envelope, e: ServiceFailed) -> TenantState:
    service = _service(state, e.service_id)
    if e.compensate:
        return _put_service(state, replace(service, compensating=Compensation.FAILED, status=Status(e.status)))
    # Failures recorded before events carried the lifecycle's status said Failed even with a
    # deletion waiting; that deletion outranks it, as the lifecycle's `fail-behind-deletion` says.
    status = Status.DELETING if facts(service).deletion_waits else Status(e.status)
    return _put_service(state, replace(service, running=None, status=status,
                                       resources=e.resources or service.resources))


def _cancelled(state: TenantState, env: Envelope, e: OperationCancelled) -> TenantState:
    service = _service(state, e.service_id)
    if e.compensate:
        return _put_service(state, replace(service, compensating=Compensation.CANCELLED, status=Status(e.status)))
    queued = tuple(q for q in service.queued if q.operation_id != e.operation_id)
    return _put_service(state, replace(service, queued=queued, status=Status(e.status),
                                       resources=e.resources or service.resources))


def _reverted(state: TenantState, env: Envelope, e: ServiceClaimReverted) -> TenantState:
    service = _service(state, e.service_id)
    status = Status(e.status)
    return _put_service(state, replace(service, running=None, compensating=None, status=status,
                                       resources=e.resources or service.resources,
                                       queued=() if status is Status.DELETED else service.queued))


def _deleted(state: TenantState, env: Envelope, e: ServiceDeleted) -> TenantState:
    service = _service(state, e.service_id)
    return _put_service(state, replace(service, running=None, queued=(),
                                       status=_status(service, env, "ServiceDeleted"), deleted_at=env.occurred_at))


def _quota_set(state: TenantState, env: Envelope, e: QuotaSet) -> TenantState:
    return replace(state, quota=e.quota)


def _operation_accepted(state: TenantState, env: Envelope, e: OperationAccepted) -> TenantState:
    return _record(state, env.command_id, CommandRecord(e.command_fingerprint, Accepted(e.operation_id)))


def _command_rejected(state: TenantState, env: Envelope, e: CommandRejected) -> TenantState:
    if env.command_id in state.commands or e.refused:  # a conflicting reuse: the first outcome stands
        return state
    outcome = Rejected(e.operation_id, e.reason_code, e.field, e.message)
    return _record(state, env.command_id, CommandRecord(e.command_fingerprint, outcome))


def _policy_set(state: TenantState, env: Envelope, e: BackupPolicySet) -> TenantState:
    policy = BackupPolicy(e.schedule, e.retain_count, e.retain_days, e.pitr, env.occurred_at)
    return _put_service(state, replace(_service(state, e.service_id), backup_policy=policy))


def _backup_requested(state: TenantState, env: Envelope, e: BackupRequested) -> TenantState:
    return _put_backup(state, Backup(e.backup_id, e.service_id, e.engine, e.pop, BackupStatus.REQUESTED,
                                     e.operation_id, env.occurred_at, slot=e.slot, pitr=e.pitr))


def _backup_rendered(state: TenantState, env: Envelope, e: BackupClaimRendered) -> TenantState:
    backup = _backup(state, e.backup_id)
    status = BackupStatus.RUNNING if backup.status is BackupStatus.REQUESTED else backup.status
    return _put_backup(state, replace(backup, step=1, status=status))


def _backup_committed(state: TenantState, env: Envelope, e: BackupClaimCommitted) -> TenantState:
    return _put_backup(state, replace(_backup(state, e.backup_id), step=2))


def _backup_completed(state: TenantState, env: Envelope, e: BackupCompleted) -> TenantState:
    return _put_backup(state, replace(_backup(state, e.backup_id), step=3, status=BackupStatus.COMPLETED,
                                      taken_at=e.taken_at, pitr_from=e.pitr_from, size_bytes=e.size_bytes,
                                      dek_id=e.dek_id, kek_id=e.kek_id))


def _backup_failed(state: TenantState, env: Envelope, e: BackupFailed) -> TenantState:
    backup = _backup(state, e.backup_id)
    return _put_backup(state, replace(backup, status=BackupStatus(e.status), step=3, compensating=e.compensate))


def _backup_reverted(state: TenantState, env: Envelope, e: BackupClaimReverted) -> TenantState:
    return _put_backup(state, replace(_backup(state, e.backup_id), compensating=False))


def _backup_deletion_requested(state: TenantState, env: Envelope, e: BackupDeletionRequested) -> TenantState:
    return _put_backup(state, replace(_backup(state, e.backup_id), status=BackupStatus.DELETING, step=0,
                                      operation_id=e.operation_id))


def _backup_deleted(state: TenantState, env: Envelope, e: BackupDeleted) -> TenantState:
    return _put_backup(state, replace(_backup(state, e.backup_id), status=BackupStatus.DELETED, step=3))


def _subscription(state: TenantState, subscription_id: str) -> Subscription:
    found = state.subscriptions.get(subscription_id)
    if found is None:
        raise InconsistentLog(f"subscription {subscription_id} of {state.tenant_id} was never requested")
    return found


def _put_subscription(state: TenantState, sub: Subscription) -> TenantState:
    return replace(state, subscriptions=state.subscriptions.set(sub.subscription_id, sub))


def _subscription_requested(state: TenantState, env: Envelope, e: SubscriptionRequested) -> TenantState:
    return _put_subscription(state, Subscription(e.subscription_id, e.name, e.principal, SubscriptionStatus.REQUESTED,
                                                 e.operation_id))


def _subscription_status(status: SubscriptionStatus, new_operation: bool = False) -> Applier:
    def apply(state: TenantState, env: Envelope, e: Any) -> TenantState:
        sub = _subscription(state, e.subscription_id)
        return _put_subscription(state, replace(sub, status=status, **(
            {"operation_id": e.operation_id} if new_operation else {})))
    return apply


Applier = Callable[[TenantState, Envelope, Any], TenantState]
# Event type -> how it changes the tenant state; events not named here change nothing.
def _cdc_enable_requested(state: TenantState, env: Envelope, e: CdcEnableRequested) -> TenantState:
    return _put_cdc(state, Cdc(e.service_id, e.connector, CdcStatus.ENABLING, e.operation_id, tuple(e.tables)))


def _cdc_disable_requested(state: TenantState, env: Envelope, e: CdcDisableRequested) -> TenantState:
    old = state.cdc.get(e.service_id)
    tables = old.tables if old else ()
    return _put_cdc(state, Cdc(e.service_id, e.connector, CdcStatus.DISABLING, e.operation_id, tables))


def _cdc_step(step: int) -> Applier:
    def apply(state: TenantState, env: Envelope, e: Any) -> TenantState:
        cdc = state.cdc.get(e.service_id)
        return state if cdc is None else _put_cdc(state, replace(cdc, step=step))
    return apply


def _cdc_registered(state: TenantState, env: Envelope, e: CdcConnectorRegistered) -> TenantState:
    cdc = state.cdc.get(e.service_id)
    if cdc is None:
        return state
    return _put_cdc(state, replace(cdc, status=CdcStatus.RUNNING, step=3, reason=None, operation_id=e.operation_id))


def _cdc_failed(state: TenantState, env: Envelope, e: CdcConnectorFailed) -> TenantState:
    cdc = state.cdc.get(e.service_id)
    if cdc is None:
        return state
    # a failed removal leaves the connector where it was: still to be disabled
    status = CdcStatus.FAILED
    return _put_cdc(state, replace(cdc, status=status, step=3, reason=e.reason))


def _cdc_disabled(state: TenantState, env: Envelope, e: CdcDisabled) -> TenantState:
    cdc = state.cdc.get(e.service_id)
    if cdc is None:
        return state
    return _put_cdc(state, replace(cdc, status=CdcStatus.DISABLED, step=3, reason=None))


APPLIERS: dict[type, Applier] = {
    OrganizationCreated: _organization_created,
    MemberAdded: _member_set,
    MemberRoleChanged: _member_set,
    MemberRemoved: _member_removed,
    QuotaSet: _quota_set,
    ServiceRequested: _service_requested,
    ServiceScaleRequested: _scale_requested,
    DeletionProtectionSet: _protection_set,
    ServiceDeletionRequested: _deletion_requested,
    OperationStarted: _operation_started,
    ServiceClaimRendered: _rendered,
    ServiceClaimCommitted: _committed,
    ServiceReady: _ready,
    ServiceFailed: _failed,
    OperationCancelled: _cancelled,
    ServiceClaimReverted: _reverted,
    ServiceDeleted: _deleted,
    OperationAccepted: _operation_accepted,
    CommandRejected: _command_rejected,
    BackupPolicySet: _policy_set,
    BackupRequested: _backup_requested,
    BackupClaimRendered: _backup_rendered,
    BackupClaimCommitted: _backup_committed,
    BackupCompleted: _backup_completed,
    BackupFailed: _backup_failed,
    BackupDeletionRequested: _backup_deletion_requested,
    BackupDeleted: _backup_deleted,
    BackupClaimReverted: _backup_reverted,
    CdcEnableRequested: _cdc_enable_requested,
    CdcDisableRequested: _cdc_disable_requested,
    CdcConnectorRendered: _cdc_step(1),
    CdcConnectorCommitted: _cdc_step(2),
    CdcConnectorRegistered: _cdc_registered,
    CdcConnectorFailed: _cdc_failed,
    CdcDisabled: _cdc_disabled,
    SubscriptionRequested: _subscription_requested,
    SubscriptionGranted: _subscription_status(SubscriptionStatus.ACTIVE),
    SubscriptionRevocationRequested: _subscription_status(SubscriptionStatus.REVOKING, new_operation=True),
    SubscriptionRevoked: _subscription_status(SubscriptionStatus.REVOKED),
    SubscriptionFailed: _subscription_status(SubscriptionStatus.FAILED),
}


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
        # a name is only ever bound to the id of the service of that name (names never change)
        if names.get(service.name) == service.service_id:
            names = names.discard(service.name)
    elif service.live and names.get(service.name) != service.service_id:
        names = names.set(service.name, service.service_id)
    return replace(state, services=state.services.set(service.service_id, service),
                   usage=usage, live_names=names)


def _backup(state: TenantState, backup_id: str) -> Backup:
    try:
        return state.backups[backup_id]
    except KeyError:
        raise InconsistentLog(f"tenant {state.tenant_id!r} has no backup {backup_id}") from None


def _put_backup(state: TenantState, backup: Backup) -> TenantState:
    return replace(state, backups=state.backups.set(backup.backup_id, backup))


def _put_cdc(state: TenantState, cdc: Cdc) -> TenantState:
    return replace(state, cdc=state.cdc.set(cdc.service_id, cdc))


def _record(state: TenantState, command_id: str, record: CommandRecord) -> TenantState:
    return replace(state, commands=state.commands.set(command_id, record))
