"""Builders shared by the domain tests: fixed ids, times and actors, the saga's step reports, and a
fold of commands into state."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from commands import (
    Actor,
    Authority,
    Command,
    CommandEnvelope,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    RecordServiceClaimReverted,
    decide,
    decide_and_evolve,
    fingerprint_of,
    operation_id,
)
from events import Envelope, Event, TenantState, evolve

TENANT = "acme"
T0 = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
OWNER = Actor("alice", ("org-owner",))
MEMBER = Actor("bob", ("org-member",))
SYSTEM = Actor("system:saga", ("system",))
GATEWAY = Authority("gateway", "gateway")
PLATFORM = Authority("platform", "platform")
DB1 = "0d9b8a4e-5f7c-4c1e-9d2a-1b3c5d7e9f01"
DB2 = "1e0c9b5f-6a8d-4d2f-8e3b-2c4d6e8fa012"


def trusted(command: CommandEnvelope) -> Authority:
    """The key that would rightly sign `command`: the platform's for a step report, else the gateway's."""
    return PLATFORM if "system" in command.actor.roles else GATEWAY


def op(command: CommandEnvelope) -> str:
    """The operation `command` starts (its id scoped to the organization)."""
    return operation_id(command.tenant_id, command.command_id)


def cmd(
    payload: Command,
    *,
    command_id: str | None = None,
    actor: Actor = OWNER,
    tenant: str = TENANT,
    issued_at: datetime = T0,
) -> CommandEnvelope:
    """A command envelope; the default id derives from the payload, so equal payloads share an id."""
    command_id = command_id or str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tenant}/{payload!r}"))
    return CommandEnvelope(
        command_id=command_id,
        tenant_id=tenant,
        actor=actor,
        issued_at=issued_at,
        correlation_id=f"corr-{command_id[:8]}",
        payload=payload,
    )


def rendered(
    service_id: str, operation_id: str, digest: str = "ab" * 32, *, actor: Actor = SYSTEM
) -> CommandEnvelope:
    """The saga's report that it rendered `operation_id`'s manifests."""
    return cmd(RecordServiceClaimRendered(service_id, operation_id, digest), actor=actor)


def committed(
    service_id: str, operation_id: str, sha: str = "c0ffee", *, pop: str = "frankfurt", actor: Actor = SYSTEM
) -> CommandEnvelope:
    """The saga's report that it committed `operation_id`'s manifests to the GitOps repository."""
    path = f"tenants/{TENANT}/{pop}/orders.yaml"
    return cmd(RecordServiceClaimCommitted(service_id, operation_id, pop, path, sha), actor=actor)


def reported(
    service_id: str,
    operation_id: str,
    phase: str = "Ready",
    *,
    endpoint: str | None = None,
    reason: str | None = None,
    pop: str = "frankfurt",
    actor: Actor = SYSTEM,
) -> CommandEnvelope:
    """What the PoP reported about `operation_id`, relayed by the status bridge."""
    return cmd(RecordPopReport(service_id, operation_id, pop, phase, endpoint, reason), actor=actor)


def reverted(service_id: str, operation_id: str, sha: str | None = "5ca1ab1e", *,
             actor: Actor = SYSTEM) -> CommandEnvelope:
    """The saga's report that it reverted the commit of a failed or cancelled `operation_id`."""
    return cmd(RecordServiceClaimReverted(service_id, operation_id, sha), actor=actor)


def saga(
    service_id: str, operation_id: str, phase: str = "Ready", *, reason: str | None = None, pop: str = "frankfurt"
) -> list[CommandEnvelope]:
    """The three steps of `operation_id` as the saga and the PoP (the service's own) report them:
    rendered, committed, `phase`."""
    return [
        rendered(service_id, operation_id),
        committed(service_id, operation_id, pop=pop),
        reported(service_id, operation_id, phase, reason=reason, pop=pop),
    ]


Step = CommandEnvelope | Callable[[TenantState], TenantState]


def run(steps: Iterable[Step], state: TenantState | None = None) -> tuple[TenantState, list[Envelope]]:
    """Decide and evolve each command in turn (a callable step edits the state directly)."""
    state = state or TenantState(TENANT)
    produced: list[Envelope] = []
    for step in steps:
        if callable(step):
            state = step(state)
            continue
        fingerprint, proof = fingerprint_of(step.payload), trusted(step)
        envelopes = decide(state, step, fingerprint, proof)
        # what the command processor does in one call: the same events, the same state after them
        assert decide_and_evolve(state, step, fingerprint, proof) == (envelopes, _fold(state, envelopes))
        for envelope in envelopes:
            produced.append(envelope)
            state = evolve(state, envelope)
    return state, produced


def _fold(state: TenantState, envelopes: list[Envelope]) -> TenantState:
    for envelope in envelopes:
        state = evolve(state, envelope)
    return state


def ev(
    payload: Event,
    aggregate_type: str,
    aggregate_id: str,
    sequence: int = 1,
    *,
    command_id: str = "c-1",
    tenant: str = TENANT,
) -> Envelope:
    return Envelope(
        event_id=f"e-{aggregate_id}-{sequence}",
        tenant_id=tenant,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        sequence=sequence,
        occurred_at=T0,
        command_id=command_id,
        correlation_id="corr",
        causation_id=command_id,
        payload=payload,
    )


def backup_saga(backup_id: str, operation_id: str, phase: str = "Completed", *, pop: str = "local",
                details: str | None = None, reason: str | None = None) -> list[CommandEnvelope]:
    """The three steps of a backup operation (or a backup's deletion) as the saga and the PoP
    report them: rendered, committed, `phase`."""
    from commands import RecordBackupCommitted, RecordBackupRendered, RecordBackupReport

    path = f"tenants/{TENANT}/{pop}/backups/{backup_id}.yaml"
    return [
        cmd(RecordBackupRendered(backup_id, operation_id, "ab" * 32), actor=SYSTEM),
        cmd(RecordBackupCommitted(backup_id, operation_id, path, "c0ffee"), actor=SYSTEM),
        cmd(RecordBackupReport(backup_id, operation_id, pop, phase, reason, details), actor=SYSTEM),
    ]


def backup_details(taken_at: datetime, *, pitr_from: datetime | None = None, size: int = 4096) -> str:
    """The JSON a PoP reports for a completed backup."""
    import json

    return json.dumps({"taken_at": taken_at.isoformat(), "size_bytes": size,
                       "location": "s3://dbaas-backups/tenants/acme/backups/b", "dek_id": "dek1", "kek_id": "kek1",
                       "pitr_from": pitr_from.isoformat() if pitr_from else None,
                       "consistency": {"lsn": "0/3000060"}, "tables": {"orders": {"rows": 2, "checksum": "x"}}})


def cdc_saga(service_id: str, operation_id: str, phase: str = "Running", *, pop: str = "local",
             reason: str | None = None) -> list[CommandEnvelope]:
    """The three steps of a CDC operation as the saga and the PoP report them: rendered,
    committed, `phase` (Running | Failed | Removed)."""
    from commands import RecordCdcCommitted, RecordCdcRendered

    path = f"tenants/{TENANT}/{pop}/cdc/{service_id}.yaml"
    return [
        cmd(RecordCdcRendered(service_id, operation_id, "ab" * 32), actor=SYSTEM),
        cmd(RecordCdcCommitted(service_id, operation_id, path, "c0ffee"), actor=SYSTEM),
        cdc_report(service_id, operation_id, phase, pop=pop, reason=reason),
    ]


def cdc_report(service_id: str, operation_id: str, phase: str, *, pop: str = "local",
               reason: str | None = None) -> CommandEnvelope:
    from commands import RecordCdcReport
    from commands.cdc import connector_name

    return cmd(RecordCdcReport(service_id, operation_id, pop, phase, connector_name(TENANT, service_id), reason),
               actor=SYSTEM)
