"""Command records: one frozen dataclass per Avro record of `command_envelope.avsc`, same names and fields.

Owns the imperative command vocabulary, the `CommandEnvelope`, the mapping to and from the Avro
dicts that `schemas.codec` reads and writes (a routing table by record name), and the payload
`fingerprint` that tells a replay from a conflicting reuse of a command id. Imports `schemas` only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events import Quota, builder, quota_from_avro, stores_directly
from schemas import as_record, full_name, short_name


class CommandError(Exception):
    """Base of every error raised by `commands`."""


class UnknownCommand(CommandError):
    """A command record name this code has no class for."""


@dataclass(frozen=True)
class Actor:
    subject: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateOrganization:
    slug: str
    display_name: str


@dataclass(frozen=True)
class CreateService:
    service_id: str
    name: str
    engine: str
    pop: str
    size: str
    engine_version: str | None = None  # None = the engine's default
    cpu: float | None = None  # the size plan's value unless given
    memory_gb: int | None = None
    storage_gb: int | None = None
    replicas: int | None = None
    deletion_protection: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScaleService:
    service_id: str
    cpu: float | None = None  # None = unchanged
    memory_gb: int | None = None
    storage_gb: int | None = None
    replicas: int | None = None


@dataclass(frozen=True)
class DeleteService:
    service_id: str


@dataclass(frozen=True)
class SetDeletionProtection:
    """Turn deletion protection on or off; the ServiceClaim is rendered and committed again."""

    service_id: str
    enabled: bool


@dataclass(frozen=True)
class RecordServiceClaimRendered:
    """System (saga): the operation's manifests were rendered."""

    service_id: str
    operation_id: str
    digest: str


@dataclass(frozen=True)
class RecordServiceClaimCommitted:
    """System (saga): the operation's manifests were committed to the GitOps repository."""

    service_id: str
    operation_id: str
    pop: str
    path: str
    sha: str
    changed: bool = True  # False: the repository already held these manifests; nothing was committed


@dataclass(frozen=True)
class RecordPopReport:
    """System (PoP status bridge): what the PoP reported about the operation's service."""

    service_id: str
    operation_id: str
    pop: str
    phase: str  # Ready | Failed | Deleted
    endpoint: str | None = None
    reason: str | None = None
    credentials: str | None = None  # encrypted (Fernet token), never clear text


@dataclass(frozen=True)
class CancelOperation:
    """Cancel an operation that is queued, or awaiting its PoP (its commit is then reverted)."""

    operation_id: str


@dataclass(frozen=True)
class SetQuota:
    """Replace the organization's quota (org-owner only)."""

    quota: Quota


@dataclass(frozen=True)
class RecordStepTimedOut:
    """System (saga): a step of the running operation did not finish within its time."""

    service_id: str
    operation_id: str
    step: str  # render | commit | pop-report
    after_seconds: int


@dataclass(frozen=True)
class RecordStepFailed:
    """System (saga): a step of the running operation failed in a way no retry mends (the chart
    refused the values, the change cannot be committed): the operation fails with `reason`."""

    service_id: str
    operation_id: str
    step: str  # render | commit
    reason: str  # what was refused and what to change, for a person


@dataclass(frozen=True)
class RecordServiceClaimReverted:
    """System (saga): the GitOps change of a failed or cancelled operation was reverted."""

    service_id: str
    operation_id: str
    sha: str | None = None  # None: the repository already held the reverted content


@dataclass(frozen=True)
class AddMember:
    subject: str  # the identity provider's subject (`sub`) of the user
    role: str


@dataclass(frozen=True)
class ChangeMemberRole:
    subject: str
    role: str


@dataclass(frozen=True)
class RemoveMember:
    subject: str


@dataclass(frozen=True)
class BackupService:
    """Back up a service now (`slot` None) or for a schedule slot (sent by the scheduler)."""

    service_id: str
    backup_id: str
    slot: str | None = None  # RFC 3339 time of the schedule slot


@dataclass(frozen=True)
class SetBackupPolicy:
    """Replace a service's backup policy (schedule None: no scheduled backups; 0: no limit)."""

    service_id: str
    schedule: str | None
    retain_count: int
    retain_days: int
    pitr: bool


@dataclass(frozen=True)
class DeleteBackup:
    backup_id: str


@dataclass(frozen=True)
class RestoreService:
    """Create a new service from a backup (`backup_id`) or a point in time (`to_time`) of another."""

    service_id: str
    name: str
    source_service_id: str
    backup_id: str | None = None
    to_time: datetime | None = None
    pop: str | None = None  # None: the source's
    size: str | None = None  # None: the source's
    deletion_protection: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordBackupRendered:
    """System (saga): a backup's claim was rendered."""

    backup_id: str
    operation_id: str
    digest: str


@dataclass(frozen=True)
class RecordBackupCommitted:
    """System (saga): a backup's claim change was committed to GitOps."""

    backup_id: str
    operation_id: str
    path: str
    sha: str
    changed: bool = True


@dataclass(frozen=True)
class RecordBackupReport:
    """System (PoP status bridge): what the PoP reported about a backup."""

    backup_id: str
    operation_id: str
    pop: str
    phase: str  # Completed | Failed | Deleted
    reason: str | None = None
    details: str | None = None  # JSON of a completed backup


@dataclass(frozen=True)
class RecordBackupStepFailed:
    """System (saga): a step of a backup operation failed for good or timed out."""

    backup_id: str
    operation_id: str
    step: str  # render | commit | pop-report
    reason: str
    code: str  # failed | timed_out



@dataclass(frozen=True)
class RecordBackupReverted:
    """System (saga): the GitOps change of a failed backup operation was reverted."""

    backup_id: str
    operation_id: str
    sha: str | None = None


@dataclass(frozen=True)
class EnableCdc:
    """Stream a service's changes to its CDC topics (`tables` empty: every table)."""

    service_id: str
    tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class DisableCdc:
    service_id: str


@dataclass(frozen=True)
class RecordCdcRendered:
    """System (saga): a service's KafkaConnector was rendered."""

    service_id: str
    operation_id: str
    digest: str


@dataclass(frozen=True)
class RecordCdcCommitted:
    """System (saga): a service's KafkaConnector change was committed to GitOps."""

    service_id: str
    operation_id: str
    path: str
    sha: str
    changed: bool = True


@dataclass(frozen=True)
class RecordCdcReport:
    """System (PoP status bridge): what the PoP reported about a service's connector."""

    service_id: str
    operation_id: str
    pop: str
    phase: str  # Running | Failed | Removed
    connector: str
    reason: str | None = None


@dataclass(frozen=True)
class RecordCdcStepFailed:
    """System (saga): a step of a CDC operation failed for good or timed out."""

    service_id: str
    operation_id: str
    step: str  # render | commit | pop-report
    reason: str
    code: str  # failed | timed_out


@dataclass(frozen=True)
class CreateSubscription:
    """Give the organization a Kafka principal that reads its own streams (CDC, audit, alerts,
    metrics). The password is generated by the gateway, shown once, and carried only sealed to the
    subscription saga's key (`runtime.sealing`)."""

    subscription_id: str
    name: str
    sealed_password: str


@dataclass(frozen=True)
class RevokeSubscription:
    subscription_id: str


@dataclass(frozen=True)
class RecordSubscriptionGranted:
    """System (subscription saga): the credential and ACLs exist."""

    subscription_id: str
    operation_id: str


@dataclass(frozen=True)
class RecordSubscriptionRevoked:
    """System (subscription saga): the ACLs and the credential are gone."""

    subscription_id: str
    operation_id: str


@dataclass(frozen=True)
class RecordSubscriptionFailed:
    """System (subscription saga): granting failed for good (e.g. a password sealed to another key)."""

    subscription_id: str
    operation_id: str
    reason: str


Command = (
    CreateOrganization
    | CreateService
    | ScaleService
    | DeleteService
    | RecordServiceClaimRendered
    | RecordServiceClaimCommitted
    | RecordPopReport
    | CancelOperation
    | SetQuota
    | RecordStepTimedOut
    | RecordServiceClaimReverted
    | AddMember
    | ChangeMemberRole
    | RemoveMember
    | SetDeletionProtection
    | RecordStepFailed
    | BackupService
    | SetBackupPolicy
    | DeleteBackup
    | RestoreService
    | RecordBackupRendered
    | RecordBackupCommitted
    | RecordBackupReport
    | RecordBackupStepFailed
    | RecordBackupReverted
    | EnableCdc
    | DisableCdc
    | RecordCdcRendered
    | RecordCdcCommitted
    | RecordCdcReport
    | RecordCdcStepFailed
    | CreateSubscription
    | RevokeSubscription
    | RecordSubscriptionGranted
    | RecordSubscriptionRevoked
    | RecordSubscriptionFailed
)

# Record name -> class. New commands: add the class here and a branch in the .avsc.
COMMAND_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        CreateOrganization,
        CreateService,
        ScaleService,
        DeleteService,
        RecordServiceClaimRendered,
        RecordServiceClaimCommitted,
        RecordPopReport,
        CancelOperation,
        SetQuota,
        RecordStepTimedOut,
        RecordServiceClaimReverted,
        AddMember,
        ChangeMemberRole,
        RemoveMember,
        SetDeletionProtection,
        RecordStepFailed,
        BackupService,
        SetBackupPolicy,
        DeleteBackup,
        RestoreService,
        RecordBackupRendered,
        RecordBackupCommitted,
        RecordBackupReport,
        RecordBackupStepFailed,
        RecordBackupReverted,
        EnableCdc,
        DisableCdc,
        RecordCdcRendered,
        RecordCdcCommitted,
        RecordCdcReport,
        RecordCdcStepFailed,
        CreateSubscription,
        RevokeSubscription,
        RecordSubscriptionGranted,
        RecordSubscriptionRevoked,
        RecordSubscriptionFailed,
    )
}


@dataclass(frozen=True)
class CommandEnvelope:
    command_id: str
    tenant_id: str
    actor: Actor
    issued_at: datetime
    correlation_id: str
    payload: Command
    causation_id: str | None = None
    schema_version: int = 1

    @property
    def command_type(self) -> str:
        return type(self.payload).__name__

    def to_avro(self) -> dict[str, Any]:
        """The `CommandEnvelope` record the codec writes (what `runtime.publisher` publishes)."""
        return to_avro(self)


def payload_to_avro(command: Command) -> tuple[str, dict[str, Any]]:
    """Command -> the `(full record name, fields)` union branch the codec writes."""
    name = type(command).__name__
    if name not in COMMAND_TYPES:
        raise UnknownCommand(f"{name} is not a command record")
    return full_name(name), as_record(command)


def payload_from_avro(branch: tuple[str, Mapping[str, Any]]) -> Command:
    name, fields = branch
    try:
        cls = COMMAND_TYPES[short_name(name)]
    except KeyError:
        raise UnknownCommand(
            f"no command class for record {name!r}; known: {', '.join(COMMAND_TYPES)}"
        ) from None
    if cls is SetQuota:
        return SetQuota(quota_from_avro(fields["quota"]))
    if cls is EnableCdc:
        return EnableCdc(fields["service_id"], tuple(fields.get("tables") or ()))
    return _BUILDERS[cls](fields)  # type: ignore[no-any-return]


def to_avro(envelope: CommandEnvelope) -> dict[str, Any]:
    """CommandEnvelope -> the record dict for `schemas.codec.encode`."""
    record = {f.name: getattr(envelope, f.name) for f in dataclasses.fields(envelope)}
    record["actor"] = {"subject": envelope.actor.subject, "roles": list(envelope.actor.roles)}
    record["payload"] = payload_to_avro(envelope.payload)
    return record


def from_avro(record: Mapping[str, Any]) -> CommandEnvelope:
    """CommandEnvelope record dict from `schemas.codec.decode` -> CommandEnvelope; a record that is
    no command this platform knows raises `CommandError` (only)."""
    try:
        actor = record["actor"]
        return _ENVELOPE({
            **record,
            "actor": Actor(actor["subject"], tuple(actor["roles"])),
            "payload": payload_from_avro(record["payload"]),
        })
    except CommandError:
        raise
    except (TypeError, KeyError, ValueError) as exc:
        raise CommandError(f"{type(exc).__name__}: {exc}") from exc


stores_directly(CommandEnvelope, Actor, *COMMAND_TYPES.values())  # one envelope and command per message

# Command class -> its builder from the decoded fields: without the frozen `__init__`'s setattr per
# field when they are exactly its fields (as the codec decodes them), else through `__init__`.
_BUILDERS = {cls: builder(cls) for cls in COMMAND_TYPES.values()}
_ENVELOPE = builder(CommandEnvelope)


def fingerprint(payload: tuple[str, Mapping[str, Any]]) -> str:
    """sha256 hex of the canonical JSON of an Avro payload branch `(record name, fields)`.

    Give it the decoded `record["payload"]` or `payload_to_avro(command)`: both name the record, so
    two command types with equal fields never share a fingerprint. Canonical: keys sorted, no
    whitespace, null fields left out (a field added later as nullable with default null keeps old
    fingerprints stable), integral numbers written as integers (cpu 2 and 2.0 are the same request).
    """
    name, fields = payload
    text = _canonical_json([short_name(name), _canonical(fields)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# What `json.dumps` with these options builds on every call (it keeps no state between calls).
# No circular check: `_canonical` builds fresh lists and dicts, which hold no cycle.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                   check_circular=False)


def _json_writer(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode` for a list or dict, through the C encoder `encode` would build for that
    call, built once (a quarter of the encoding was building it); `encode` itself where Python has
    no C encoder."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None or encoder.indent is not None or encoder.check_circular:  # pragma: no cover
        return encoder.encode
    write = make(None, encoder.default, json.encoder.encode_basestring_ascii if encoder.ensure_ascii
                 else json.encoder.encode_basestring, None, encoder.key_separator, encoder.item_separator,
                 encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)
    return lambda value: "".join(write(value, 0))


_canonical_json = _json_writer(_CANONICAL_JSON)
_AS_IS = frozenset({str, bool, int, type(None)})  # canonical as they are


def _canonical(value: Any) -> Any:
    cls = value.__class__
    if cls is dict:  # a record's fields, a map: the usual case, taken without the matching below
        return {k: v if v.__class__ in _AS_IS else _canonical(v) for k, v in value.items() if v is not None}
    if cls in _AS_IS:
        return value
    match value:
        case bool() | str() | None:
            return value
        case float() if not math.isfinite(value):
            return repr(value)  # JSON has no NaN; validation rejects it, the fingerprint must still exist
        case float() if value.is_integer():
            return int(value)
        case datetime():  # as Avro keeps it: milliseconds since the epoch
            return {"timestamp_ms": int(value.timestamp() * 1000)}
        case Mapping():
            return {k: _canonical(v) for k, v in value.items() if v is not None}
        case list() | tuple():
            return [_canonical(v) for v in value]
        case _:
            return value


def fingerprint_of(command: Command) -> str:
    return fingerprint(payload_to_avro(command))
