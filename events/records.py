"""Event records: one frozen dataclass per Avro record of `event_envelope.avsc`, same names and fields.

Owns the event vocabulary, the event `Envelope`, and the mapping to and from the Avro dicts that
`schemas.codec` reads and writes (a routing table by record name). Imports `schemas` only.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from events.lifecycle import Step
from schemas import PoisonMessage, as_record, full_name, short_name


class EventError(Exception):
    """Base of every error raised by `events`."""


class UnknownEvent(EventError):
    """An event record name this code has no class for."""


def replace(obj: Any, /, **changes: Any) -> Any:
    """`dataclasses.replace` for the domain's records (events, envelopes, commands, the tenant
    state), frozen dataclasses whose `__init__` only stores its arguments (no slots, no init-only
    fields; `TenantState.__post_init__` only turns plain dicts into the maps it keeps): a copy of
    the instance's fields with some changed, without going through `__init__` (`evolve` and
    `decide` make several per event; this is ~10x faster). An unknown field name is an error, as
    there."""
    values = obj.__dict__
    if not changes.keys() <= values.keys():
        raise TypeError(f"{type(obj).__name__} has no field {', '.join(sorted(changes.keys() - values.keys()))}")
    return _assembled(obj.__class__, values, changes)


def _assembled(cls: type[Any], fields: Mapping[str, Any], changes: Mapping[str, Any] | None = None) -> Any:
    """An instance of `cls` holding `fields` (and `changes` over them), without `__init__`, which
    for the frozen dataclasses here only stores its arguments, one setattr each (`replace`,
    `new_envelope` and the decoding builders, `builder`, build several per event)."""
    new = object.__new__(cls)
    values = new.__dict__
    values.update(fields)
    if changes:
        values.update(changes)
    return new


_FACTORY: Any = object()  # an argument left out whose field has a default factory (`stores_directly`)


def stores_directly(*classes: type[Any]) -> None:
    """Give each of these frozen dataclasses an `__init__` storing its arguments in the instance's
    `__dict__`, instead of the frozen dataclass's one `object.__setattr__` per field: about a third
    of the instructions (decide builds three events and their envelopes per creation). The same
    parameters, defaults and default factories; the instance holds a dict of its own (about 64
    bytes more), so it is for records that do not live long (events, envelopes, commands), not
    for those a tenant's state keeps. A class whose `__init__` takes other parameters than its
    fields (a `__post_init__`, an init-only or keyword-only field) keeps its own."""
    for cls in classes:
        init = _storing(cls, "__init__")
        if init is not None:
            cls.__init__ = init


def direct_builder(cls: type[Any]) -> Callable[..., Any]:
    """A function taking `cls`'s `__init__` parameters (a frozen dataclass's fields, their defaults
    and factories) and returning an instance holding them, stored straight into its `__dict__`
    as `stores_directly`'s `__init__` does, for a class that keeps its own `__init__`: one whose
    instances are built often but also kept (`events.state.new_service`). Its instances hold a
    dict of their own, as `replace`'s copies do."""
    build = _storing(cls, "build")
    if build is None:
        raise TypeError(f"{cls.__name__}'s __init__ takes other parameters than its fields")
    return build


def _storing(cls: type[Any], role: str) -> Callable[..., Any] | None:
    """The code of `stores_directly` (`role` "__init__": storing into `self`) or of `direct_builder`
    (`role` "build": making the instance first); None for a class whose `__init__` does more."""
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if (hasattr(cls, "__post_init__") or any(not f.init or f.kw_only for f in fields)
            or {"self", "_values", "_cls", "_new"} & set(names)):
        return None
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY, "_cls": cls, "_new": object.__new__}
    parameters = ["self"] if role == "__init__" else []
    lines = ["    _values = self.__dict__"] if role == "__init__" else ["    self = _new(_cls)", "    _values = self.__dict__"]
    for f in fields:
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            parameters.append(f"{f.name}=_FACTORY")
            lines.append(f"    if {f.name} is _FACTORY: {f.name} = _factory_{f.name}()")
        else:
            parameters.append(f.name)
    lines += [f"    _values[{name!r}] = {name}" for name in names]
    if role != "__init__":
        lines.append("    return self")
    exec(compile(f"def {role}({', '.join(parameters)}):\n" + "\n".join(lines),  # noqa: S102
                 f"<{cls.__name__}.{role}>", "exec"), namespace)
    function = namespace[role]
    function.__qualname__ = f"{cls.__qualname__}.{role}"
    return function  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Resources:
    cpu: float  # cores
    memory_gb: int  # GiB
    storage_gb: int  # GiB
    replicas: int


@dataclass(frozen=True)
class ResourceLimit:
    """Upper bounds on the sum over services of cpu, memory and storage, each times replicas."""

    cpu: float  # vCPU
    memory_gb: int  # GiB
    storage_gb: int  # GiB


@dataclass(frozen=True)
class Quota:
    max_services: int
    total: ResourceLimit
    engines: dict[str, ResourceLimit] = field(default_factory=dict)  # engines not named: total only
    pops: dict[str, ResourceLimit] = field(default_factory=dict)  # PoPs not named: total only


@dataclass(frozen=True)
class OrganizationCreated:
    slug: str
    display_name: str
    owner: str  # subject of the creator, who becomes org-owner


@dataclass(frozen=True)
class RestoreSource:
    """Where a restored service's data comes from: a backup of another service of the
    organization (`backup_id`), or a point in time of it (`to_time`)."""

    source_service_id: str
    source_engine: str
    backup_id: str | None = None
    to_time: datetime | None = None


@dataclass(frozen=True)
class ServiceRequested:
    service_id: str
    name: str
    engine: str
    engine_version: str
    pop: str
    size: str
    resources: Resources
    deletion_protection: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    status: str | None = None  # the service's status after this event (`events.lifecycle`); None before
    restore: RestoreSource | None = None  # a restored service's source


@dataclass(frozen=True)
class ServiceScaleRequested:
    service_id: str
    old_resources: Resources
    new_resources: Resources
    status: str | None = None  # the service's status after this event (`events.lifecycle`); None before


@dataclass(frozen=True)
class ServiceDeletionRequested:
    service_id: str
    status: str | None = None  # the service's status after this event (`events.lifecycle`); None before


@dataclass(frozen=True)
class OperationAccepted:
    operation_id: str
    operation_type: str  # the command's record name
    aggregate_id: str  # organization slug or service id the operation acts on
    total_steps: int
    command_fingerprint: str


@dataclass(frozen=True)
class CommandRejected:
    operation_id: str
    command_type: str
    reason_code: str  # one of REASON_CODES
    field: str | None
    message: str
    command_fingerprint: str
    refused: bool = False  # the publisher may not send it: not recorded against its command id


@dataclass(frozen=True)
class OperationStarted:
    """An operation on a service starts (at once, or when the one before it on that service
    finished): the desired spec the saga must make true, and whether to apply or delete it."""

    operation_id: str
    service_id: str
    action: str  # an `Action`: apply | delete
    name: str
    engine: str
    engine_version: str
    pop: str
    size: str
    resources: Resources
    deletion_protection: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    status: str | None = None  # the service's status after this event (`events.lifecycle`); None before
    restore: RestoreSource | None = None  # a restored service's source (its creation loads the data)


@dataclass(frozen=True)
class ServiceClaimRendered:
    operation_id: str
    service_id: str
    digest: str  # sha256 of the rendered manifests
    status: str | None = None  # the service's status after this event (Provisioning for a creation)


@dataclass(frozen=True)
class ServiceClaimCommitted:
    operation_id: str
    service_id: str
    pop: str
    path: str  # in the GitOps repository
    sha: str
    changed: bool = True  # False: the repository already held these manifests; no PoP report will come


@dataclass(frozen=True)
class ServiceReady:
    operation_id: str
    service_id: str
    endpoint: str | None
    credentials: str | None = None  # encrypted (Fernet token) by the PoP, never clear text
    status: str | None = None  # the service's status after this event (`events.lifecycle`); None before


@dataclass(frozen=True)
class ServiceFailed:
    operation_id: str
    service_id: str
    reason: str
    compensate: bool = False  # True: the operation's commit is reverted next (ServiceClaimReverted)
    status: str = "Failed"  # the service's status after this event
    resources: Resources | None = None  # the service's resources after this event, when they changed
    code: str = "pop_failed"  # pop_failed | timed_out | render_failed | commit_failed
    step: str = "pop-report"  # the step that failed: render | commit | pop-report


@dataclass(frozen=True)
class ServiceDeleted:
    operation_id: str
    service_id: str
    status: str | None = None  # the service's status after this event (`events.lifecycle`); None before


@dataclass(frozen=True)
class OperationCancelled:
    """Dropped from the service's queue, or (compensate) cancelled while awaiting the PoP: its commit
    is reverted next."""

    operation_id: str
    service_id: str
    compensate: bool
    status: str  # the service's status after this event
    resources: Resources | None = None


@dataclass(frozen=True)
class ServiceClaimReverted:
    """Compensation done: the GitOps change of a failed or cancelled operation was reverted."""

    operation_id: str
    service_id: str
    sha: str | None  # the revert commit; None when nothing had to change
    status: str
    resources: Resources | None = None


@dataclass(frozen=True)
class QuotaSet:
    quota: Quota


@dataclass(frozen=True)
class MemberAdded:
    subject: str  # the identity provider's subject (`sub`)
    role: str


@dataclass(frozen=True)
class MemberRoleChanged:
    subject: str
    old_role: str
    new_role: str


@dataclass(frozen=True)
class MemberRemoved:
    subject: str
    role: str  # the role the member had


@dataclass(frozen=True)
class DeletionProtectionSet:
    service_id: str
    enabled: bool
    status: str | None = None  # the service's status after this event (`events.lifecycle`); None before


@dataclass(frozen=True)
class BackupRequested:
    """A backup operation was accepted and starts (render the claim, commit it, the PoP reports)."""

    backup_id: str
    operation_id: str
    service_id: str
    service_name: str
    engine: str
    pop: str
    slot: str | None = None  # the schedule slot it fills; None: on demand
    pitr: bool = False  # the service's policy archives its log: the PoP keeps a base for PITR


@dataclass(frozen=True)
class BackupPolicySet:
    service_id: str
    schedule: str | None  # cron (UTC); None: no scheduled backups
    retain_count: int  # 0: no limit by count
    retain_days: int  # 0: no limit by age
    pitr: bool


@dataclass(frozen=True)
class BackupClaimRendered:
    backup_id: str
    operation_id: str
    digest: str


@dataclass(frozen=True)
class BackupClaimCommitted:
    backup_id: str
    operation_id: str
    path: str
    sha: str
    changed: bool = True


@dataclass(frozen=True)
class BackupCompleted:
    """Stored and verified by the PoP: restorable until deleted."""

    backup_id: str
    operation_id: str
    service_id: str
    taken_at: datetime
    size_bytes: int
    location: str
    dek_id: str  # the tenant's data key the objects are sealed with
    kek_id: str  # the platform key that wraps it
    pitr_from: datetime | None = None  # with the archived log, restorable to any time from here on
    consistency: str = "{}"  # JSON: the consistency point
    tables: str = "{}"  # JSON: table -> {rows, checksum}


@dataclass(frozen=True)
class BackupFailed:
    backup_id: str
    operation_id: str
    service_id: str
    reason: str
    code: str  # pop_failed | timed_out | render_failed | commit_failed
    step: str  # render | commit | pop-report
    compensate: bool = False  # its claim change was committed: that commit is reverted next
    status: str = "Failed"  # the backup's after this event: Completed when a deletion failed


@dataclass(frozen=True)
class BackupDeletionRequested:
    backup_id: str
    operation_id: str
    service_id: str
    pop: str
    reason: str  # requested | expired


@dataclass(frozen=True)
class BackupDeleted:
    backup_id: str
    operation_id: str
    service_id: str



@dataclass(frozen=True)
class BackupClaimReverted:
    """Compensation done: the GitOps change of a failed backup operation was reverted."""

    backup_id: str
    operation_id: str
    sha: str | None = None


@dataclass(frozen=True)
class CdcEnableRequested:
    """A CDC operation was accepted and starts: render the KafkaConnector, commit it, the PoP
    registers the connector and reports it running."""

    service_id: str
    operation_id: str
    service_name: str
    engine: str
    pop: str
    connector: str  # its name in the PoP's Kafka Connect
    tables: tuple[str, ...] = ()  # empty: every table


@dataclass(frozen=True)
class CdcDisableRequested:
    """The connector's removal starts: asked for, or the service's deletion (it goes first)."""

    service_id: str
    operation_id: str
    service_name: str
    engine: str
    pop: str
    connector: str
    reason: str  # requested | service_deleted


@dataclass(frozen=True)
class CdcConnectorRendered:
    service_id: str
    operation_id: str
    digest: str


@dataclass(frozen=True)
class CdcConnectorCommitted:
    service_id: str
    operation_id: str
    path: str
    sha: str
    changed: bool = True


@dataclass(frozen=True)
class CdcConnectorRegistered:
    """The PoP registered the connector and it runs (again, after a failure)."""

    service_id: str
    operation_id: str
    connector: str


@dataclass(frozen=True)
class CdcConnectorFailed:
    """The connector could not be set up, or stayed failed after its PoP's restarts."""

    service_id: str
    operation_id: str
    connector: str
    reason: str
    code: str  # pop_failed | timed_out | render_failed | commit_failed | connector_failed
    step: str  # render | commit | pop-report


@dataclass(frozen=True)
class CdcDisabled:
    """The connector is gone from its PoP, with its replication slot and publication."""

    service_id: str
    operation_id: str
    connector: str


@dataclass(frozen=True)
class SubscriptionRequested:
    """A tenant subscription was asked for (aggregate `subscription`): its Kafka principal and
    consumer-group prefix are decided; the subscription saga grants them. The password travels only
    sealed to that saga's key, and audit records leave it out."""

    subscription_id: str
    operation_id: str
    name: str
    principal: str
    group_prefix: str
    sealed_password: str


@dataclass(frozen=True)
class SubscriptionGranted:
    subscription_id: str
    operation_id: str


@dataclass(frozen=True)
class SubscriptionRevocationRequested:
    subscription_id: str
    operation_id: str


@dataclass(frozen=True)
class SubscriptionRevoked:
    subscription_id: str
    operation_id: str


@dataclass(frozen=True)
class SubscriptionFailed:
    subscription_id: str
    operation_id: str
    reason: str


Event = (
    OrganizationCreated
    | ServiceRequested
    | ServiceScaleRequested
    | ServiceDeletionRequested
    | OperationAccepted
    | CommandRejected
    | OperationStarted
    | ServiceClaimRendered
    | ServiceClaimCommitted
    | ServiceReady
    | ServiceFailed
    | ServiceDeleted
    | OperationCancelled
    | ServiceClaimReverted
    | QuotaSet
    | MemberAdded
    | MemberRoleChanged
    | MemberRemoved
    | DeletionProtectionSet
    | BackupRequested
    | BackupPolicySet
    | BackupClaimRendered
    | BackupClaimCommitted
    | BackupCompleted
    | BackupFailed
    | BackupDeletionRequested
    | BackupDeleted
    | BackupClaimReverted
    | CdcEnableRequested
    | CdcDisableRequested
    | CdcConnectorRendered
    | CdcConnectorCommitted
    | CdcConnectorRegistered
    | CdcConnectorFailed
    | CdcDisabled
    | SubscriptionRequested
    | SubscriptionGranted
    | SubscriptionRevocationRequested
    | SubscriptionRevoked
    | SubscriptionFailed
)

# The steps of a service operation after acceptance, in order.
STEPS: tuple[str, ...] = tuple(Step)

REASON_CODES = ("invalid", "forbidden", "conflict", "not_found", "quota_exceeded", "unsupported",
                "unauthenticated")
# Envelopes from version 2 on name their operation and an issuer-bound actor (`<issuer>#<subject>`).
ENVELOPE_VERSION = 2
# Subjects recorded before principals were bound to their issuer were the development issuer's
# (the only one a platform trusted by default then).
LEGACY_ISSUER = "https://dev-issuer.dbaas.invalid"


@dataclass(frozen=True)
class Envelope:
    """One event as stored on `dbaas.events`; (aggregate_type, aggregate_id, sequence) is unique."""

    event_id: str
    tenant_id: str
    aggregate_type: str  # organization | service | operation
    aggregate_id: str
    sequence: int
    occurred_at: datetime
    command_id: str
    correlation_id: str
    causation_id: str | None
    payload: Event
    schema_version: int = ENVELOPE_VERSION
    actor_subject: str | None = None
    operation_id: str | None = None  # None before version 2: the command id was the operation id

    @property
    def operation(self) -> str:
        """The operation this event belongs to."""
        return self.operation_id or self.command_id


def new_envelope(event_id: str, tenant_id: str, aggregate_type: str, aggregate_id: str, sequence: int,
                 occurred_at: datetime, command_id: str, correlation_id: str, causation_id: str | None,
                 payload: Event, actor_subject: str | None = None, operation_id: str | None = None) -> Envelope:
    """`Envelope(...)` of the current version (the command processor makes one per event it writes;
    its `__init__` stores its arguments directly, `stores_directly`)."""
    return Envelope(event_id, tenant_id, aggregate_type, aggregate_id, sequence, occurred_at, command_id,
                    correlation_id, causation_id, payload, ENVELOPE_VERSION, actor_subject, operation_id)


def builder(cls: type[Any]) -> Callable[[dict[str, Any]], Any]:
    """A builder of `cls` (a frozen dataclass whose `__init__` only stores its arguments) from its
    decoded fields: given exactly its fields, `_assembled` (every reader of the log builds one
    payload and one envelope per event); given any other keys, `__init__`, whose TypeError names
    the field."""
    names = frozenset(f.name for f in dataclasses.fields(cls))

    def build(d: dict[str, Any]) -> Any:
        return _assembled(cls, d) if d.keys() == names else cls(**d)
    return build


def _with_resources(cls: type[Event], *names: str) -> Callable[[dict[str, Any]], Event]:
    store = builder(cls)

    def build(d: dict[str, Any]) -> Event:
        d = {**d, **{n: Resources(**d[n]) for n in names if d.get(n) is not None}}
        if d.get("restore") is not None:
            d["restore"] = RestoreSource(**d["restore"])
        return store(d)
    return build


def quota_from_avro(d: Mapping[str, Any]) -> Quota:
    return Quota(d["max_services"], ResourceLimit(**d["total"]),
                 {k: ResourceLimit(**v) for k, v in d.get("engines", {}).items()},
                 {k: ResourceLimit(**v) for k, v in d.get("pops", {}).items()})


# The Kafka header the command processor writes on every event of the log: its record's short name
# (a key of EVENT_TYPES). A consumer that folds only some events reads it to skip the others
# without decoding them.
EVENT_TYPE_HEADER = "event-type"


stores_directly(Envelope, *typing.get_args(Event))


def event_type(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The event type a message's headers name (None: no such header, e.g. an older event)."""
    for key, value in headers or ():
        if key == EVENT_TYPE_HEADER and value is not None:
            return value.decode("ascii", "replace")
    return None


# Record name -> builder from the Avro dict. New events: add the class here and a branch in the .avsc.
EVENT_TYPES: dict[str, Callable[[dict[str, Any]], Event]] = {
    "OrganizationCreated": builder(OrganizationCreated),
    "ServiceRequested": _with_resources(ServiceRequested, "resources"),
    "ServiceScaleRequested": _with_resources(ServiceScaleRequested, "old_resources", "new_resources"),
    "ServiceDeletionRequested": builder(ServiceDeletionRequested),
    "OperationAccepted": builder(OperationAccepted),
    "CommandRejected": builder(CommandRejected),
    "OperationStarted": _with_resources(OperationStarted, "resources"),
    "ServiceClaimRendered": builder(ServiceClaimRendered),
    "ServiceClaimCommitted": builder(ServiceClaimCommitted),
    "ServiceReady": builder(ServiceReady),
    "ServiceFailed": _with_resources(ServiceFailed, "resources"),
    "ServiceDeleted": builder(ServiceDeleted),
    "OperationCancelled": _with_resources(OperationCancelled, "resources"),
    "ServiceClaimReverted": _with_resources(ServiceClaimReverted, "resources"),
    "QuotaSet": lambda d: QuotaSet(quota_from_avro(d["quota"])),
    "MemberAdded": builder(MemberAdded),
    "MemberRoleChanged": builder(MemberRoleChanged),
    "MemberRemoved": builder(MemberRemoved),
    "DeletionProtectionSet": builder(DeletionProtectionSet),
    "BackupRequested": builder(BackupRequested),
    "BackupPolicySet": builder(BackupPolicySet),
    "BackupClaimRendered": builder(BackupClaimRendered),
    "BackupClaimCommitted": builder(BackupClaimCommitted),
    "BackupCompleted": builder(BackupCompleted),
    "BackupFailed": builder(BackupFailed),
    "BackupDeletionRequested": builder(BackupDeletionRequested),
    "BackupDeleted": builder(BackupDeleted),
    "BackupClaimReverted": builder(BackupClaimReverted),
    "CdcEnableRequested": lambda d: CdcEnableRequested(**{**d, "tables": tuple(d.get("tables") or ())}),
    "CdcDisableRequested": builder(CdcDisableRequested),
    "CdcConnectorRendered": builder(CdcConnectorRendered),
    "CdcConnectorCommitted": builder(CdcConnectorCommitted),
    "CdcConnectorRegistered": builder(CdcConnectorRegistered),
    "CdcConnectorFailed": builder(CdcConnectorFailed),
    "CdcDisabled": builder(CdcDisabled),
    **{cls.__name__: builder(cls) for cls in (
        SubscriptionRequested, SubscriptionGranted, SubscriptionRevocationRequested, SubscriptionRevoked,
        SubscriptionFailed)},
}


def payload_to_avro(event: Event) -> tuple[str, dict[str, Any]]:
    """Event -> the `(full record name, fields)` union branch the codec writes."""
    name = type(event).__name__
    if name not in EVENT_TYPES:
        raise UnknownEvent(f"{name} is not an event record")
    return full_name(name), as_record(event)


def payload_from_avro(branch: tuple[str, Mapping[str, Any]]) -> Event:
    """The event of a decoded union branch (its builders never change the fields they are given)."""
    name, fields = branch
    try:
        build = EVENT_TYPES[short_name(name)]
    except KeyError:
        raise UnknownEvent(f"no event class for record {name!r}; known: {', '.join(EVENT_TYPES)}") from None
    return build(fields)


def to_avro(envelope: Envelope) -> dict[str, Any]:
    """Envelope -> the EventEnvelope record dict for `schemas.codec.encode`."""
    record = dict(envelope.__dict__)  # its fields (a frozen dataclass keeps nothing else there)
    record["payload"] = payload_to_avro(envelope.payload)
    return record


_ENVELOPE = builder(Envelope)

# Record full name -> the class holding its fields: every record of `event_envelope.avsc` (tested).
RECORD_CLASSES: dict[str, type] = {
    **{full_name(cls.__name__): cls for cls in list(globals().values())
       if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == __name__},
    full_name("EventEnvelope"): Envelope,
}


class ObjectEncoding(Protocol):
    """What `encoder` needs of a `schemas.registry.Serde` (not imported: it speaks HTTP)."""

    def object_encoder(self, classes: Mapping[str, type],
                       to_record: Callable[[Any], dict[str, Any]]) -> Callable[[Any], bytes]: ...


def encoder(serde: ObjectEncoding) -> Callable[[Envelope], bytes]:
    """`serde.encode(to_avro(envelope))` for the events topic's `serde`, written straight from the
    envelope and its records (no record dicts) by code compiled for their classes; an envelope it
    does not write goes through `to_avro`: the same bytes, or the same error."""
    return serde.object_encoder(RECORD_CLASSES, to_avro)


def from_avro(record: Mapping[str, Any]) -> Envelope:
    """EventEnvelope record dict from `schemas.codec.decode` -> Envelope. Envelopes of version 1
    named bare subjects: they are read as the principals they were (`legacy_principal`)."""
    payload = payload_from_avro(record["payload"])
    if record.get("schema_version", 1) < 2:
        payload = _legacy_principals(payload)
        actor = record.get("actor_subject")
        record = {**record, "actor_subject": legacy_principal(actor) if actor else actor}
    return _ENVELOPE({**record, "payload": payload})


def decode(read: Callable[[bytes], Mapping[str, Any]], data: bytes | None) -> Envelope:
    """Bytes of `dbaas.events` -> Envelope, with `read` the topic's Avro decoder (`Serde.decode`).
    Raises only `PoisonMessage` (saying why) for anything that is not an event this platform
    knows; a registry that does not answer is the decoder's own, transient, error."""
    record = read(data or b"")
    try:
        return from_avro(record)
    except (EventError, TypeError, KeyError, ValueError) as exc:
        raise PoisonMessage(f"not an event record: {type(exc).__name__}: {exc}") from exc


def legacy_principal(subject: str) -> str:
    """A subject recorded before principals: the development issuer's, or a platform process's."""
    if subject.startswith("system:"):
        return subject
    return subject if "#" in subject else f"{LEGACY_ISSUER}#{subject}"


def _legacy_principals(event: Event) -> Event:
    match event:
        case OrganizationCreated():
            return dataclasses.replace(event, owner=legacy_principal(event.owner))
        case MemberAdded() | MemberRoleChanged() | MemberRemoved():
            return dataclasses.replace(event, subject=legacy_principal(event.subject))
    return event
