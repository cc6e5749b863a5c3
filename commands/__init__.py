"""Commands: what tenants ask for, whether they may, and what it causes.

Owns the imperative command vocabulary (`commands.records`, 1:1 with
`schemas/command_envelope.avsc`), the payload fingerprint, the offer as data (`commands.catalog`),
stateless validation and authorization (`commands.validation`) and the pure
`decide(state, command, fingerprint) -> events` (`commands.decide`).
May import `schemas` and `events`; never `processors`, `projections` or anything with I/O.
"""

from commands.decide import WrongTenant, decide, event_id, reuse_operation_id, usage
from commands.records import (
    COMMAND_TYPES,
    Actor,
    AddMember,
    CancelOperation,
    ChangeMemberRole,
    Command,
    CommandEnvelope,
    CommandError,
    CreateOrganization,
    CreateService,
    DeleteService,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    RecordServiceClaimReverted,
    RecordStepTimedOut,
    RemoveMember,
    ScaleService,
    SetDeletionProtection,
    SetQuota,
    UnknownCommand,
    fingerprint,
    fingerprint_of,
    from_avro,
    payload_from_avro,
    payload_to_avro,
    to_avro,
)
from commands.validation import Problem, authorize, resolve_engine_version, resolve_resources, validate
from events import outcome_of

__all__ = [
    "COMMAND_TYPES",
    "Actor",
    "AddMember",
    "CancelOperation",
    "ChangeMemberRole",
    "Command",
    "CommandEnvelope",
    "CommandError",
    "CreateOrganization",
    "CreateService",
    "DeleteService",
    "Problem",
    "RecordPopReport",
    "RecordServiceClaimCommitted",
    "RecordServiceClaimRendered",
    "RecordServiceClaimReverted",
    "RecordStepTimedOut",
    "RemoveMember",
    "ScaleService",
    "SetDeletionProtection",
    "SetQuota",
    "UnknownCommand",
    "WrongTenant",
    "authorize",
    "decide",
    "event_id",
    "fingerprint",
    "fingerprint_of",
    "from_avro",
    "outcome_of",
    "payload_from_avro",
    "payload_to_avro",
    "resolve_engine_version",
    "resolve_resources",
    "reuse_operation_id",
    "to_avro",
    "usage",
    "validate",
]
