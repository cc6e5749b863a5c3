"""Every command and event survives its schema through the Confluent wire format; bad bytes are poison."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import fastavro
import pytest
from domain_builders import (
    DB1,
    OWNER,
    SYSTEM,
    T0,
    TENANT,
    backup_details,
    backup_saga,
    cdc_report,
    cdc_saga,
    cmd,
    ev,
    op,
    reverted,
    saga,
    trusted,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import commands
import events
from commands import (
    Actor,
    AddMember,
    BackupService,
    CancelOperation,
    ChangeMemberRole,
    CommandEnvelope,
    CreateOrganization,
    CreateService,
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
    RemoveMember,
    RestoreService,
    ScaleService,
    SetBackupPolicy,
    SetDeletionProtection,
    SetQuota,
)
from commands.catalog import LIMITS, SIZE_PLANS
from commands.cdc import disable_operation_id
from commands.validation import DNS_LABEL, LABEL_PART, SERVICE_NAME_MAX, VERSION
from events import (
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
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    OperationAccepted,
    OperationCancelled,
    OperationStarted,
    OrganizationCreated,
    Quota,
    QuotaSet,
    ResourceLimit,
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
)
from schemas import EncodeError, PoisonMessage, load_schema, parsed_schema, short_name
from schemas.catalog import POP_ENGINES
from schemas.codec import decode, encode

COMMANDS_ID, EVENTS_ID = 11, 12
REGISTRY = {COMMANDS_ID: parsed_schema("command_envelope"), EVENTS_ID: parsed_schema("event_envelope")}

OP = "7f3e2d1c-0b9a-4876-a543-210fedcba987"  # an operation id
DB2 = "5b9e4c7a-2d1f-4e8b-9a6c-3f0d2e1b7c84"  # a restored service
BK1 = "9c2d7e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f"  # a backup
BK2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
SUB1 = "3e1f5a2b-7c4d-4e8f-9a0b-1c2d3e4f5a6b"  # a subscription
SEALED = "v1.subscriptions." + "A" * 124  # the shape of runtime.sealing's output
COMMAND_SAMPLES = [
    CreateOrganization(TENANT, "Acme Inc. — Zürich"),
    CreateService(
        DB1,
        "orders",
        "mongodb",
        "johannesburg",
        "large",
        engine_version="7.0.12",
        cpu=12.5,
        memory_gb=64,
        storage_gb=2000,
        replicas=5,
        deletion_protection=True,
        labels={"team": "pay"},
    ),
    CreateService(DB1, "cache", "dragonfly", "local", "small"),
    ScaleService(DB1, storage_gb=20),
    DeleteService(DB1),
    SetDeletionProtection(DB1, enabled=False),
    RecordServiceClaimRendered(DB1, OP, "ab" * 32),
    RecordServiceClaimCommitted(DB1, OP, "frankfurt", "tenants/acme/frankfurt/orders.yaml", "c0ffee" * 6),
    RecordPopReport(DB1, OP, "frankfurt", "Ready", endpoint="orders.acme.svc:5433"),
    RecordPopReport(DB1, OP, "frankfurt", "Failed", reason="ImagePullBackOff: no such tag"),
    RecordPopReport(DB1, OP, "local", "Deleted"),
    RecordServiceClaimCommitted(DB1, OP, "local", "tenants/acme/local/orders.yaml", "c0ffee" * 6, changed=False),
    CancelOperation(OP),
    RecordStepTimedOut(DB1, OP, "pop-report", 1800),
    RecordStepFailed(DB1, OP, "render", "release name 'orders' is not a DNS-1123 label of at most 53 characters"),
    RecordServiceClaimReverted(DB1, OP, "c0ffee" * 6),
    RecordServiceClaimReverted(DB1, OP, None),
    SetQuota(Quota(10, ResourceLimit(32.5, 128, 4096), {"mongodb": ResourceLimit(8, 32, 1000)},
                   {"local": ResourceLimit(4, 8, 100)})),
    AddMember("auth0|5f7c2b", "service-admin"),
    ChangeMemberRole("bob@example.com", "org-member"),
    RemoveMember("bob@example.com"),
    BackupService(DB1, BK1),
    BackupService(DB1, BK1, slot="2026-12-03T10:00:00+00:00"),
    SetBackupPolicy(DB1, "*/5 * * * *", 7, 30, True),
    SetBackupPolicy(DB1, None, 0, 0, False),
    DeleteBackup(BK1),
    RestoreService(DB2, "orders-copy", DB1, backup_id=BK1, pop="frankfurt", size="medium", labels={"a": "b"}),
    RestoreService(DB2, "orders-copy", DB1, to_time=T0 + timedelta(minutes=3)),
    RecordBackupRendered(BK1, OP, "ab" * 32),
    RecordBackupCommitted(BK1, OP, "tenants/acme/local/backups/x.yaml", "c0ffee" * 6, False),
    RecordBackupReport(BK1, OP, "local", "Completed", details='{"size_bytes": 1}'),
    RecordBackupReport(BK1, OP, "local", "Failed", reason="disk full"),
    RecordBackupStepFailed(BK1, OP, "pop-report", "no report in 3600 s", "timed_out"),
    RecordBackupReverted(BK1, OP, "c0ffee" * 6),
    EnableCdc(DB1, ("orders", "public.items")),
    EnableCdc(DB1),
    DisableCdc(DB1),
    RecordCdcRendered(DB1, OP, "ab" * 32),
    RecordCdcCommitted(DB1, OP, "tenants/acme/local/cdc/x.yaml", "c0ffee" * 6, False),
    RecordCdcReport(DB1, OP, "local", "Running", "cdc-0123", None),
    RecordCdcStepFailed(DB1, OP, "commit", "git refused", "failed"),
    commands.CreateSubscription(SUB1, "analytics", SEALED),
    commands.RevokeSubscription(SUB1),
    commands.RecordSubscriptionGranted(SUB1, OP),
    commands.RecordSubscriptionRevoked(SUB1, OP),
    commands.RecordSubscriptionFailed(SUB1, OP, "the password is sealed to another key"),
]
SMALL, BIG = Resources(1.0, 2, 10, 1), Resources(4.0, 16, 500, 3)
EVENT_SAMPLES = [
    ev(OrganizationCreated(TENANT, "Acme", "alice"), "organization", TENANT),
    ev(
        ServiceRequested(DB1, "orders", "aerospike", "8.1.2.0", "ashburn", "small", SMALL, True, {"a": "b"}),
        "service",
        DB1,
    ),
    ev(ServiceScaleRequested(DB1, SMALL, BIG), "service", DB1, 2),
    ev(ServiceDeletionRequested(DB1), "service", DB1, 3),
    ev(OperationAccepted("c-1", "CreateService", DB1, 3, "ab" * 32), "operation", "c-1"),
    ev(
        CommandRejected("c-2", "ScaleService", "quota_exceeded", "cpu", "over quota", "cd" * 32),
        "operation",
        "c-2",
    ),
    ev(
        CommandRejected("c-3", "DeleteService", "not_found", None, "no such service", "ef" * 32),
        "operation",
        "c-3",
    ),
    ev(
        OperationStarted(
            OP, DB1, "apply", "orders", "scylla", "2026.2.4", "lagos", "medium", BIG, True, {"team": "pay"}
        ),
        "service",
        DB1,
        4,
    ),
    ev(
        OperationStarted(OP, DB1, "delete", "cache", "dragonfly", "v1.36.0", "local", "small", SMALL),
        "service",
        DB1,
        5,
    ),
    ev(ServiceClaimRendered(OP, DB1, "ab" * 32, "Provisioning"), "service", DB1, 6),
    ev(
        ServiceClaimCommitted(OP, DB1, "lagos", "tenants/acme/lagos/orders.yaml", "c0ffee" * 6),
        "service",
        DB1,
        7,
    ),
    ev(ServiceReady(OP, DB1, "orders.acme.svc:5433"), "service", DB1, 8),
    ev(ServiceReady(OP, DB1, None), "service", DB1, 9),
    ev(ServiceFailed(OP, DB1, "the PoP reported a failure"), "service", DB1, 10),
    ev(ServiceDeleted(OP, DB1), "service", DB1, 11),
    ev(ServiceFailed(OP, DB1, "timed out", compensate=True, status="Ready", resources=SMALL), "service", DB1, 12),
    ev(OperationCancelled(OP, DB1, True, "Scaling"), "service", DB1, 13),
    ev(OperationCancelled(OP, DB1, False, "Ready", BIG), "service", DB1, 14),
    ev(ServiceClaimReverted(OP, DB1, "c0ffee" * 6, "Ready", SMALL), "service", DB1, 15),
    ev(ServiceClaimReverted(OP, DB1, None, "Deleted"), "service", DB1, 16),
    ev(ServiceClaimCommitted(OP, DB1, "lagos", "tenants/acme/lagos/orders.yaml", "c0ffee" * 6, False),
       "service", DB1, 17),
    ev(QuotaSet(Quota(3, ResourceLimit(8.0, 16, 100), {}, {"lagos": ResourceLimit(2.0, 4, 50)})),
       "organization", TENANT, 2),
    ev(MemberAdded("bob", "org-admin"), "organization", TENANT, 3),
    ev(MemberRoleChanged("bob", "org-admin", "service-viewer"), "organization", TENANT, 4),
    ev(MemberRemoved("bob", "service-viewer"), "organization", TENANT, 5),
    ev(DeletionProtectionSet(DB1, True), "service", DB1, 9),
    ev(ServiceRequested(DB2, "copy", "yugabyte", "2.25", "local", "small", SMALL,
                        restore=RestoreSource(DB1, "yugabyte", None, T0)), "service", DB2),
    ev(OperationStarted(OP, DB2, "apply", "copy", "yugabyte", "2.25", "local", "small", SMALL,
                        restore=RestoreSource(DB1, "yugabyte", BK1, None)), "service", DB2, 2),
    ev(BackupPolicySet(DB1, "0 3 * * *", 7, 0, True), "service", DB1, 18),
    ev(BackupRequested(BK1, OP, DB1, "orders", "yugabyte", "local", None, True), "backup", BK1),
    ev(BackupClaimRendered(BK1, OP, "ab" * 32), "backup", BK1, 2),
    ev(BackupClaimCommitted(BK1, OP, "tenants/acme/local/backups/x.yaml", "c0ffee" * 6), "backup", BK1, 3),
    ev(BackupCompleted(BK1, OP, DB1, T0, 1234, "s3://dbaas-backups/tenants/acme/backups/x", "dek1", "kek1",
                       T0 - timedelta(minutes=1), '{"lsn": "0/16B3748"}', '{"orders": {"rows": 2}}'),
       "backup", BK1, 4),
    ev(BackupFailed(BK1, OP, DB1, "disk full", "pop_failed", "pop-report", True), "backup", BK1, 5),
    ev(BackupDeletionRequested(BK1, OP, DB1, "local", "expired"), "backup", BK1, 6),
    ev(BackupDeleted(BK1, OP, DB1), "backup", BK1, 7),
    ev(BackupClaimReverted(BK1, OP, None), "backup", BK1, 8),
    ev(CdcEnableRequested(DB1, OP, "orders", "yugabyte", "local", "cdc-0123", ("orders",)), "cdc", DB1),
    ev(CdcConnectorRendered(DB1, OP, "ab" * 32), "cdc", DB1, 2),
    ev(CdcConnectorCommitted(DB1, OP, "tenants/acme/local/cdc/x.yaml", "c0ffee" * 6), "cdc", DB1, 3),
    ev(CdcConnectorRegistered(DB1, OP, "cdc-0123"), "cdc", DB1, 4),
    ev(CdcConnectorFailed(DB1, OP, "cdc-0123", "task failed", "connector_failed", "pop-report"), "cdc", DB1, 5),
    ev(CdcDisableRequested(DB1, OP, "orders", "yugabyte", "local", "cdc-0123", "service_deleted"), "cdc", DB1, 6),
    ev(CdcDisabled(DB1, OP, "cdc-0123"), "cdc", DB1, 7),
    ev(events.SubscriptionRequested(SUB1, OP, "analytics", "sub.acme.analytics", "sub.acme.analytics.", SEALED),
       "subscription", SUB1, 1),
    ev(events.SubscriptionGranted(SUB1, OP), "subscription", SUB1, 2),
    ev(events.SubscriptionRevocationRequested(SUB1, OP), "subscription", SUB1, 3),
    ev(events.SubscriptionRevoked(SUB1, OP), "subscription", SUB1, 4),
    ev(events.SubscriptionFailed(SUB1, OP, "sealed to another key"), "subscription", SUB1, 5),
]


def union_branches(schema_name: str) -> set[str]:
    [payload] = [f for f in load_schema(schema_name)["fields"] if f["name"] == "payload"]
    return {branch["name"] for branch in payload["type"]}


def test_samples_cover_every_record_type() -> None:
    assert (
        {type(c).__name__ for c in COMMAND_SAMPLES}
        == set(commands.COMMAND_TYPES)
        == union_branches("command_envelope")
    )
    assert (
        {type(e.payload).__name__ for e in EVENT_SAMPLES}
        == set(events.EVENT_TYPES)
        == union_branches("event_envelope")
    )


@pytest.mark.parametrize("payload", COMMAND_SAMPLES, ids=lambda p: type(p).__name__)
def test_commands_round_trip(payload: object) -> None:
    envelope = CommandEnvelope(
        "c-9", TENANT, OWNER, T0, "corr-9", payload, causation_id="e-1", schema_version=1
    )
    data = encode(COMMANDS_ID, REGISTRY[COMMANDS_ID], commands.to_avro(envelope))

    assert data[:5] == b"\x00" + struct.pack(">I", COMMANDS_ID)
    record = decode(data, REGISTRY.__getitem__)
    assert short_name(record["payload"][0]) == type(payload).__name__
    assert commands.from_avro(record) == envelope


@pytest.mark.parametrize(
    "envelope", EVENT_SAMPLES, ids=lambda e: f"{type(e.payload).__name__}-{e.aggregate_id}"
)
def test_events_round_trip(envelope: Envelope) -> None:
    data = encode(EVENTS_ID, REGISTRY[EVENTS_ID], events.to_avro(envelope))

    assert events.from_avro(decode(data, REGISTRY.__getitem__)) == envelope


@pytest.mark.parametrize("change, field", [
    (lambda payload: {**payload, "colour": "blue"}, "colour"),  # a field the event class lacks
    (lambda payload: {k: v for k, v in payload.items() if k != "name"}, "name"),  # one it needs
])
def test_a_record_whose_fields_differ_from_its_class_is_poison_naming_the_field(change, field) -> None:
    """Records with exactly their class's fields are stored without `__init__`; any other keys go
    through it, and its TypeError becomes the poison's reason."""
    envelope = next(e for e in EVENT_SAMPLES if isinstance(e.payload, events.ServiceRequested))
    record = decode(encode(EVENTS_ID, REGISTRY[EVENTS_ID], events.to_avro(envelope)), REGISTRY.__getitem__)
    name, payload = record["payload"]
    record = {**record, "payload": (name, change(payload))}

    with pytest.raises(PoisonMessage) as raised:
        events.decode(lambda _data: record, b"")
    assert "not an event record: TypeError" in raised.value.reason and field in raised.value.reason


def test_decided_events_round_trip() -> None:
    create = cmd(CreateService(DB1, "db", "vitess", "local", "small", labels={"team": "pay"}))
    scale = cmd(ScaleService(DB1, cpu=2))
    scale_again = cmd(ScaleService(DB1, memory_gb=4))
    protect = cmd(SetDeletionProtection(DB1, True))
    unprotect = cmd(SetDeletionProtection(DB1, False))
    delete = cmd(DeleteService(DB1))
    backup, failing = cmd(BackupService(DB1, BK1)), cmd(BackupService(DB1, BK2))
    restore = cmd(RestoreService(DB2, "db-copy", DB1, backup_id=BK1))
    forget = cmd(DeleteBackup(BK1))
    enable = cmd(EnableCdc(DB1, ("orders",)))
    state = events.TenantState(TENANT)
    decided: set[str] = set()
    for command in (
        cmd(CreateOrganization(TENANT, "Acme")),
        cmd(SetQuota(Quota(5, ResourceLimit(16, 64, 1000), {"vitess": ResourceLimit(8, 32, 500)}))),
        cmd(AddMember("bob", "org-admin")),
        cmd(ChangeMemberRole("bob", "org-member")),
        cmd(RemoveMember("bob")),
        create,
        scale,  # queued behind the create
        scale_again,  # queued too, then cancelled
        cmd(CancelOperation(op(scale_again))),
        *saga(DB1, op(create), pop="local"),
        enable,
        *cdc_saga(DB1, op(enable)),
        cdc_report(DB1, op(enable), "Failed", reason="task 0 failed"),  # stayed failed, then recovered
        cdc_report(DB1, op(enable), "Running"),
        cmd(SetBackupPolicy(DB1, "0 3 * * *", 3, 0, True)),
        backup,
        *backup_saga(BK1, op(backup), details=backup_details(T0, pitr_from=T0)),
        restore,
        failing,
        *backup_saga(BK2, op(failing), "Failed", reason="disk full"),
        cmd(RecordBackupReverted(BK2, op(failing), "5ca1ab1e"), actor=SYSTEM),
        forget,
        *backup_saga(BK1, op(forget), "Deleted"),
        protect,  # queued behind the scale
        unprotect,
        delete,  # queued behind them; its connector's removal starts at once
        *cdc_saga(DB1, disable_operation_id(op(delete)), "Removed"),
        *saga(DB1, op(scale), "Failed", reason="quota on the PoP", pop="local"),
        reverted(DB1, op(scale)),
        *saga(DB1, op(protect), pop="local"),
        *saga(DB1, op(unprotect), pop="local"),
        *saga(DB1, op(delete), "Deleted", pop="local"),
        subscribe := cmd(commands.CreateSubscription(SUB1, "analytics", SEALED)),
        cmd(commands.RecordSubscriptionGranted(SUB1, op(subscribe)), actor=SYSTEM),
        revoke := cmd(commands.RevokeSubscription(SUB1)),
        cmd(commands.RecordSubscriptionRevoked(SUB1, op(revoke)), actor=SYSTEM),
        broken := cmd(commands.CreateSubscription(DB2, "analytics", SEALED)),  # the name is free again
        cmd(commands.RecordSubscriptionFailed(DB2, op(broken), "sealed to another key"), actor=SYSTEM),
    ):
        for envelope in commands.decide(state, command, commands.fingerprint_of(command.payload), trusted(command)):
            data = encode(EVENTS_ID, REGISTRY[EVENTS_ID], events.to_avro(envelope))
            assert events.from_avro(decode(data, REGISTRY.__getitem__)) == envelope
            assert not isinstance(envelope.payload, events.CommandRejected), envelope.payload.message
            state = events.evolve(state, envelope)
            decided.add(type(envelope.payload).__name__)

    assert decided == set(events.EVENT_TYPES) - {"CommandRejected"}


GOOD = encode(EVENTS_ID, REGISTRY[EVENTS_ID], events.to_avro(EVENT_SAMPLES[0]))
POISON = [
    ("nothing at all", b"", "truncated message: 0 byte(s), the Confluent wire format needs at least 5"),
    ("a header cut short", b"\x00\x00\x00", "truncated message: 3 byte(s)"),
    (
        "not the Confluent magic byte",
        b"\x01" + GOOD[1:],
        "magic byte is 1, expected 0: not Confluent wire format",
    ),
    (
        "a schema id the registry never issued",
        b"\x00" + struct.pack(">I", 99) + GOOD[5:],
        "unknown schema id 99: the registry does not know it",
    ),
    ("a body cut short", GOOD[:-3], f"Avro body does not decode with schema id {EVENTS_ID}"),
    (
        "a body written with another schema",
        encode(EVENTS_ID, REGISTRY[COMMANDS_ID], commands.to_avro(cmd(DeleteService(DB1)))),
        f"schema id {EVENTS_ID}",
    ),
    (
        "bytes after the record",
        GOOD + b"\x00",
        f"1 byte(s) left after the record: the body was not written with schema id {EVENTS_ID}",
    ),
]


@pytest.mark.parametrize("data, reason", [p[1:] for p in POISON], ids=[p[0] for p in POISON])
def test_undecodable_bytes_are_poison_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        decode(data, REGISTRY.__getitem__)
    assert reason in raised.value.reason


def test_a_schema_mismatch_reason_stays_readable() -> None:
    """Resolving a command against the event schema fails with fastavro printing both schemas
    (tens of KB); the dead-letter reason keeps the start of it."""
    data = encode(COMMANDS_ID, REGISTRY[COMMANDS_ID], commands.to_avro(cmd(DeleteService(DB1))))
    with pytest.raises(PoisonMessage) as raised:
        decode(data, REGISTRY.__getitem__, reader_schema=REGISTRY[EVENTS_ID])
    reason = raised.value.reason
    assert reason.startswith(f"Avro body does not decode with schema id {COMMANDS_ID}: SchemaResolutionError")
    assert len(reason) < 500


def test_a_registry_that_is_down_is_not_poison() -> None:
    def unreachable(schema_id: int) -> object:
        raise ConnectionError("registry unreachable")

    with pytest.raises(ConnectionError):
        decode(GOOD, unreachable)


def test_old_records_read_as_the_current_schema() -> None:
    v1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
    v2 = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 7}],
    }
    data = encode(1, fastavro.parse_schema(v1), {"a": "x"})

    assert decode(data, {1: fastavro.parse_schema(v1)}.__getitem__, fastavro.parse_schema(v2)) == {
        "a": "x",
        "b": 7,
    }


def test_a_record_that_does_not_fit_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="does not fit schema id 11"):
        encode(COMMANDS_ID, REGISTRY[COMMANDS_ID], {"command_id": 1})
    with pytest.raises(EncodeError, match="does not fit in 4 bytes"):
        encode(2**32, REGISTRY[COMMANDS_ID], {})


def regex(pattern: object) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True)


engine_and_pop = st.sampled_from([(e, p) for p, engines in POP_ENGINES.items() for e in engines])
label = regex(LABEL_PART)
create_services = st.builds(
    lambda ep, **fields: CreateService(engine=ep[0], pop=ep[1], **fields),
    engine_and_pop,
    service_id=st.uuids().map(str),
    name=regex(DNS_LABEL).filter(lambda name: len(name) <= SERVICE_NAME_MAX),  # a Helm release name
    size=st.sampled_from(sorted(SIZE_PLANS)),
    engine_version=st.none() | regex(VERSION),
    cpu=st.none() | st.floats(*LIMITS["cpu"]),
    memory_gb=st.none() | st.integers(*map(int, LIMITS["memory_gb"])),
    storage_gb=st.none() | st.integers(*map(int, LIMITS["storage_gb"])),
    replicas=st.none() | st.integers(*map(int, LIMITS["replicas"])),
    deletion_protection=st.booleans(),
    labels=st.dictionaries(label, st.just("") | label, max_size=4),
)
instants = st.datetimes(datetime(1990, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)).map(
    lambda t: t - timedelta(microseconds=t.microsecond % 1000)
)


@settings(max_examples=200, deadline=None)
@given(
    payload=create_services,
    command_id=st.uuids().map(str),
    tenant=regex(DNS_LABEL),
    issued_at=instants,
    roles=st.lists(st.sampled_from(["org-owner", "org-admin", "service-admin", "org-member"]), unique=True),
)
def test_valid_create_service_commands_round_trip(
    payload: CreateService, command_id: str, tenant: str, issued_at: datetime, roles: list[str]
) -> None:
    envelope = CommandEnvelope(command_id, tenant, Actor("sub", tuple(roles)), issued_at, "corr", payload)
    assert commands.validate(payload) == []

    record = commands.to_avro(envelope)
    decoded = decode(encode(COMMANDS_ID, REGISTRY[COMMANDS_ID], record), REGISTRY.__getitem__)

    assert decoded == record
    assert commands.from_avro(decoded) == envelope
    assert commands.fingerprint(decoded["payload"]) == commands.fingerprint_of(payload)
