"""decide: given earlier commands, when a command arrives, then these events (or this rejection)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from domain_builders import op, DB1, DB2, MEMBER, T0, TENANT, cmd, run, saga, trusted

from commands import (
    Actor,
    CommandEnvelope,
    CreateOrganization,
    CreateService,
    DeleteService,
    ScaleService,
    WrongTenant,
    decide,
    fingerprint_of,
    outcome_of,
    reuse_operation_id,
)
from events import (
    Accepted,
    CommandRejected,
    OperationAccepted,
    OperationStarted,
    OrganizationCreated,
    Rejected,
    Resources,
    ServiceDeletionRequested,
    ServiceRequested,
    ServiceScaleRequested,
    TenantState,
)

ORG = cmd(CreateOrganization(TENANT, "Acme Inc."))
SMALL = CreateService(DB1, "orders", "yugabyte", "frankfurt", "small")
CREATE_DB1 = cmd(SMALL)
MEDIUM = cmd(CreateService(DB1, "orders", "vitess", "lagos", "medium"))
PROTECTED = cmd(CreateService(DB1, "orders", "yugabyte", "ashburn", "small", deletion_protection=True))
DELETE_DB1 = cmd(DeleteService(DB1))
OVERRIDES = cmd(
    CreateService(
        DB1,
        "orders",
        "scylla",
        "singapore",
        "medium",
        engine_version="2025.4.0",
        cpu=6.5,
        replicas=5,
        labels={"team": "payments"},
    )
)
DRAGONFLY = cmd(
    CreateService(DB1, "cache", "dragonfly", "local", "large", deletion_protection=True),
    actor=Actor("dave", ("service-admin",)),
)
SCALE_MEDIUM = cmd(ScaleService(DB1, cpu=4, storage_gb=200))
CREATE_DB2 = cmd(CreateService(DB2, "orders", "yugabyte", "frankfurt", "small"))

SMALL_REQUESTED = ServiceRequested(
    DB1, "orders", "yugabyte", "2024.2.0.0-b145", "frankfurt", "small", Resources(1.0, 2, 10, 1),
    status="Requested",
)
OVERRIDES_REQUESTED = ServiceRequested(
    DB1,
    "orders",
    "scylla",
    "2025.4.0",
    "singapore",
    "medium",
    Resources(6.5, 8, 100, 5),
    labels={"team": "payments"},
    status="Requested",
)
DRAGONFLY_REQUESTED = ServiceRequested(
    DB1,
    "cache",
    "dragonfly",
    "v1.36.0",
    "local",
    "large",
    Resources(4.0, 16, 500, 3),
    deletion_protection=True,
    status="Requested",
)
MEDIUM_REQUESTED = ServiceRequested(
    DB1, "orders", "vitess", "v24.0.0-rc1-mysql80", "lagos", "medium", Resources(2.0, 8, 100, 3)
)
# The saga run to its end: the create is Ready (the service idle), or the service is Deleted.
DB1_READY = [ORG, CREATE_DB1, *saga(DB1, op(CREATE_DB1))]
MEDIUM_READY = [ORG, MEDIUM, *saga(DB1, op(MEDIUM), pop="lagos")]
DB1_DELETED = [*DB1_READY, DELETE_DB1, *saga(DB1, op(DELETE_DB1), "Deleted")]


def started(
    spec: ServiceRequested,
    command: CommandEnvelope,
    action: str = "apply",
    resources: Resources | None = None,
    status: str = "Requested",
) -> OperationStarted:
    """`command`'s operation starting on the resolved spec (with `resources` when a scale changed them)."""
    return OperationStarted(
        op(command),
        spec.service_id,
        action,
        spec.name,
        spec.engine,
        spec.engine_version,
        spec.pop,
        spec.size,
        resources or spec.resources,
        spec.deletion_protection,
        spec.labels,
        status,
    )


@dataclass(frozen=True)
class Accept:
    reason: str
    given: list
    when: CommandEnvelope
    then: list  # domain events, before OperationAccepted
    steps: int


ACCEPTED = [
    Accept(
        "the creator of an organization becomes its owner; nothing is left to do",
        [],
        ORG,
        [OrganizationCreated(TENANT, "Acme Inc.", owner="alice")],
        steps=0,
    ),
    Accept(
        "any signed-in subject may create an organization",
        [],
        cmd(CreateOrganization(TENANT, "Acme"), actor=Actor("carol")),
        [OrganizationCreated(TENANT, "Acme", owner="carol")],
        steps=0,
    ),
    Accept(
        "a small service gets the small plan and the engine's default version, and its apply starts at once",
        [ORG],
        CREATE_DB1,
        [SMALL_REQUESTED, started(SMALL_REQUESTED, CREATE_DB1)],
        steps=3,
    ),
    Accept(
        "overrides replace only the plan values they name; the apply starts on the resolved spec",
        [ORG],
        OVERRIDES,
        [OVERRIDES_REQUESTED, started(OVERRIDES_REQUESTED, OVERRIDES)],
        steps=3,
    ),
    Accept(
        "the local pop offers dragonfly",
        [ORG],
        DRAGONFLY,
        [DRAGONFLY_REQUESTED, started(DRAGONFLY_REQUESTED, DRAGONFLY)],
        steps=3,
    ),
    Accept(
        "scaling an idle service changes only the given resources and starts its apply at once",
        MEDIUM_READY,
        SCALE_MEDIUM,
        [
            ServiceScaleRequested(DB1, Resources(2.0, 8, 100, 3), Resources(4.0, 8, 200, 3), "Scaling"),
            started(MEDIUM_REQUESTED, SCALE_MEDIUM, resources=Resources(4.0, 8, 200, 3), status="Scaling"),
        ],
        steps=3,
    ),
    Accept(
        "scaling while the create is in flight is queued: no start yet",
        [ORG, MEDIUM],
        SCALE_MEDIUM,
        [ServiceScaleRequested(DB1, Resources(2.0, 8, 100, 3), Resources(4.0, 8, 200, 3), "Scaling")],
        steps=3,
    ),
    Accept(
        "scaling while a scale is in flight queues on the newest resources",
        [*MEDIUM_READY, cmd(ScaleService(DB1, cpu=4))],
        cmd(ScaleService(DB1, memory_gb=32)),
        [ServiceScaleRequested(DB1, Resources(4.0, 8, 100, 3), Resources(4.0, 32, 100, 3), "Scaling")],
        steps=3,
    ),
    Accept(
        "an unprotected idle service is deleted at once, on its current spec",
        DB1_READY,
        DELETE_DB1,
        [ServiceDeletionRequested(DB1, "Deleting"), started(SMALL_REQUESTED, DELETE_DB1, "delete", status="Deleting")],
        steps=3,
    ),
    Accept(
        "deleting while the create is in flight is queued: no start yet",
        [ORG, CREATE_DB1],
        DELETE_DB1,
        [ServiceDeletionRequested(DB1, "Deleting")],
        steps=3,
    ),
    Accept(
        "a deleted service's name is free again",
        DB1_DELETED,
        CREATE_DB2,
        [
            ServiceRequested(
                DB2, "orders", "yugabyte", "2024.2.0.0-b145", "frankfurt", "small", Resources(1.0, 2, 10, 1),
                status="Requested",
            ),
            OperationStarted(
                op(CREATE_DB2),
                DB2,
                "apply",
                "orders",
                "yugabyte",
                "2024.2.0.0-b145",
                "frankfurt",
                "small",
                Resources(1.0, 2, 10, 1),
                status="Requested",
            ),
        ],
        steps=3,
    ),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.reason for c in ACCEPTED])
def test_accepted_commands_emit_domain_events_and_start_an_operation(case: Accept) -> None:
    state, _ = run(case.given)
    command = case.when
    events = decide(state, command, fingerprint_of(command.payload), trusted(command))

    (start,) = [e for e in events if isinstance(e.payload, OperationAccepted)]
    assert [e.payload for e in events if e is not start] == case.then
    # The operation exists before it starts: OperationStarted comes after OperationAccepted.
    assert all(i > events.index(start) for i, e in enumerate(events) if isinstance(e.payload, OperationStarted))
    assert start.payload == OperationAccepted(
        op(command),
        command.command_type,
        events[0].aggregate_id,
        case.steps,
        fingerprint_of(command.payload),
    )
    assert (start.aggregate_type, start.aggregate_id, start.sequence) == ("operation", op(command), 1)


@dataclass(frozen=True)
class Reject:
    reason: str
    given: list
    when: object
    code: str
    field: str | None
    message: str  # exact, or a fragment when it ends with "…"


REJECTED = [
    Reject(
        "a service needs its organization",
        [],
        CREATE_DB1,
        "not_found",
        None,
        'organization "acme" does not exist; create it first with CreateOrganization',
    ),
    Reject(
        "members may not create services; the message names the roles that may",
        [ORG],
        cmd(SMALL, actor=MEMBER),
        "forbidden",
        None,
        "CreateService needs one of the roles org-owner, org-admin, service-admin; "
        'actor "bob" has org-member in organization "acme"',
    ),
    Reject(
        "an actor without roles is told so",
        [ORG, CREATE_DB1],
        cmd(DeleteService(DB1), actor=Actor("eve")),
        "forbidden",
        None,
        'DeleteService needs one of the roles org-owner, org-admin, service-admin; actor "eve" has no roles in organization "acme"',
    ),
    Reject(
        "an anonymous actor may not even create an organization",
        [],
        cmd(CreateOrganization(TENANT, "Acme"), actor=Actor("")),
        "forbidden",
        None,
        "the command has no actor subject; sign in and send it again",
    ),
    Reject(
        "the organization slug is the tenant key",
        [],
        cmd(CreateOrganization("other", "Other")),
        "invalid",
        "slug",
        'slug "other" must equal the command\'s tenant_id "acme": '
        "an organization's commands are keyed by its slug",
    ),
    Reject(
        "an organization is created once",
        [ORG],
        cmd(CreateOrganization(TENANT, "Acme again")),
        "conflict",
        "slug",
        'organization "acme" already exists; choose another slug',
    ),
    Reject(
        "an engine that is not offered lists the ones that are",
        [ORG],
        cmd(CreateService(DB1, "orders", "mysql", "lagos", "small")),
        "invalid",
        "engine",
        'engine "mysql" is not offered; choose one of: '
        "yugabyte, vitess, scylla, dragonfly, aerospike, mongodb",
    ),
    Reject(
        "the local pop has no scylla; the message lists the pops that do",
        [ORG],
        cmd(CreateService(DB1, "orders", "scylla", "local", "small")),
        "unsupported",
        "pop",
        'engine "scylla" is not offered in pop "local"; '
        "pops that offer scylla: lagos, johannesburg, frankfurt, ashburn, singapore",
    ),
    Reject(
        "every problem is reported at once; the first one sets code and field",
        [ORG],
        cmd(CreateService(DB1, "Orders", "yugabyte", "frankfurt", "huge", cpu=100)),
        "invalid",
        "name",
        "name \"Orders\" is not a valid name: use 1 to 63 characters: lowercase letters, digits and '-', "
        "starting with a letter and ending with a letter or digit; "
        'size "huge" is not offered; choose one of: '
        "small, medium, large; cpu 100 is out of range; choose a value from 0.5 to 64",
    ),
    Reject(
        "live service names are unique in a tenant",
        [ORG, CREATE_DB1],
        cmd(CreateService(DB2, "orders", "vitess", "lagos", "small")),
        "conflict",
        "name",
        f'a service named "orders" already exists in organization "acme" (service id {DB1}); '
        "choose another name or delete that service first",
    ),
    Reject(
        "a service name being deleted is not free yet",
        [ORG, CREATE_DB1, DELETE_DB1],
        cmd(CreateService(DB2, "orders", "vitess", "lagos", "small")),
        "conflict",
        "name",
        'a service named "orders" already exists…',
    ),
    Reject(
        "service ids are never reused",
        [ORG, CREATE_DB1],
        cmd(CreateService(DB1, "billing", "vitess", "lagos", "small")),
        "conflict",
        "service_id",
        f'service id {DB1} is already used by service "orders"; generate a new service id',
    ),
    Reject(
        "scaling an unknown service",
        [ORG],
        cmd(ScaleService(DB1, cpu=2)),
        "not_found",
        "service_id",
        f'service {DB1} does not exist in organization "acme"',
    ),
    Reject(
        "scaling a deleted service",
        DB1_DELETED,
        cmd(ScaleService(DB1, cpu=2)),
        "not_found",
        "service_id",
        f'service {DB1} does not exist in organization "acme"',
    ),
    Reject(
        "storage never shrinks",
        [ORG, MEDIUM],
        cmd(ScaleService(DB1, storage_gb=50)),
        "invalid",
        "storage_gb",
        'storage_gb can only grow: service "orders" has 100 GiB; ask for 100 or more',
    ),
    Reject(
        "a scale must change something",
        [ORG, MEDIUM],
        cmd(ScaleService(DB1, cpu=2.0, replicas=3)),
        "invalid",
        None,
        'nothing to change: service "orders" already has cpu 2, memory_gb 8, storage_gb 100, replicas 3',
    ),
    Reject(
        "a scale must name something",
        [ORG, MEDIUM],
        cmd(ScaleService(DB1)),
        "invalid",
        None,
        "nothing to scale: give at least one of cpu, memory_gb, storage_gb, replicas",
    ),
    Reject(
        "a service being deleted is not scaled",
        [ORG, CREATE_DB1, DELETE_DB1],
        cmd(ScaleService(DB1, cpu=2)),
        "conflict",
        None,
        'service "orders" is being deleted; it can no longer be scaled',
    ),
    Reject(
        "deletion protection says how to turn it off",
        [ORG, PROTECTED],
        DELETE_DB1,
        "conflict",
        "deletion_protection",
        'service "orders" has deletion protection on; turn deletion_protection off for this service, '
        "then delete it again",
    ),
    Reject(
        "a deletion runs once",
        [ORG, CREATE_DB1, DELETE_DB1],
        cmd(DeleteService(DB1), command_id="again"),
        "conflict",
        None,
        f'service "orders" is already being deleted by operation {op(DELETE_DB1)}',
    ),
    Reject(
        "deleting an unknown service",
        [ORG],
        DELETE_DB1,
        "not_found",
        "service_id",
        f'service {DB1} does not exist in organization "acme"',
    ),
]


@pytest.mark.parametrize("case", REJECTED, ids=[c.reason for c in REJECTED])
def test_rejected_commands_emit_one_command_rejected(case: Reject) -> None:
    state, _ = run(case.given)
    command = case.when
    [event] = decide(state, command, fingerprint_of(command.payload), trusted(command))

    assert (event.aggregate_type, event.aggregate_id, event.sequence) == ("operation", op(command), 1)
    rejected = event.payload
    assert isinstance(rejected, CommandRejected)
    assert (rejected.operation_id, rejected.command_type) == (op(command), command.command_type)
    assert (rejected.reason_code, rejected.field) == (case.code, case.field)
    if case.message.endswith("…"):
        assert rejected.message.startswith(case.message[:-1])
    else:
        assert rejected.message == case.message


def test_a_replayed_command_changes_nothing_and_its_outcome_stands() -> None:
    state, _ = run([ORG, CREATE_DB1])

    assert decide(state, CREATE_DB1, fingerprint_of(CREATE_DB1.payload), trusted(CREATE_DB1)) == []
    assert outcome_of(state, CREATE_DB1.command_id) == Accepted(op(CREATE_DB1))


def test_a_replayed_rejection_changes_nothing_and_its_outcome_stands() -> None:
    state, [rejection] = run([CREATE_DB1])  # no organization yet

    assert decide(state, CREATE_DB1, fingerprint_of(CREATE_DB1.payload), trusted(CREATE_DB1)) == []
    assert outcome_of(state, CREATE_DB1.command_id) == Rejected(
        op(CREATE_DB1), "not_found", None, rejection.payload.message
    )


def test_a_reused_command_id_with_another_payload_is_a_conflict_on_its_own_operation() -> None:
    state, _ = run([ORG, CREATE_DB1])
    reuse = cmd(CreateService(DB2, "billing", "vitess", "lagos", "small"), command_id=CREATE_DB1.command_id)
    reused_print = fingerprint_of(reuse.payload)

    [event] = decide(state, reuse, reused_print, trusted(reuse))

    operation_id = reuse_operation_id(op(reuse), reused_print)
    assert operation_id != op(CREATE_DB1)
    assert (event.aggregate_type, event.aggregate_id, event.sequence) == ("operation", operation_id, 1)
    assert event.payload == CommandRejected(
        operation_id,
        "CreateService",
        "conflict",
        None,
        f"command id {reuse.command_id} was already used for a different request, accepted as operation "
        f"{op(CREATE_DB1)}; send a new command id for a new request",
        reused_print,
    )
    after, _ = run([reuse], state)
    assert outcome_of(after, CREATE_DB1.command_id) == Accepted(op(CREATE_DB1))
    assert decide(after, reuse, reused_print, trusted(reuse)) == []  # the same reuse, delivered again


def test_events_are_positioned_deterministically() -> None:
    state, _ = run([ORG])
    events = decide(state, CREATE_DB1, fingerprint_of(CREATE_DB1.payload), trusted(CREATE_DB1))

    assert events == decide(state, CREATE_DB1, fingerprint_of(CREATE_DB1.payload), trusted(CREATE_DB1))
    assert [(e.aggregate_type, e.aggregate_id, e.sequence, type(e.payload)) for e in events] == [
        ("service", DB1, 1, ServiceRequested),
        ("operation", op(CREATE_DB1), 1, OperationAccepted),
        ("service", DB1, 2, OperationStarted),
    ]
    assert len({e.event_id for e in events}) == 3
    for e in events:
        assert (e.tenant_id, e.occurred_at, e.command_id) == (TENANT, T0, CREATE_DB1.command_id)
        assert (e.correlation_id, e.causation_id) == (CREATE_DB1.correlation_id, CREATE_DB1.command_id)


def test_sequences_continue_per_aggregate_without_gaps() -> None:
    _, events = run([*MEDIUM_READY, cmd(ScaleService(DB1, cpu=4)), cmd(ScaleService(DB1, cpu=8)), DELETE_DB1])

    service = [(e.sequence, type(e.payload).__name__) for e in events if e.aggregate_type == "service"]
    assert service == [
        (1, "ServiceRequested"),
        (2, "OperationStarted"),
        (3, "ServiceClaimRendered"),
        (4, "ServiceClaimCommitted"),
        (5, "ServiceReady"),
        (6, "ServiceScaleRequested"),
        (7, "OperationStarted"),  # the service was idle: the first scale starts at once
        (8, "ServiceScaleRequested"),  # queued behind it
        (9, "ServiceDeletionRequested"),  # queued too
    ]
    assert len({e.event_id for e in events}) == len(events)


def test_a_command_for_another_tenant_is_a_wiring_bug() -> None:
    with pytest.raises(WrongTenant):
        decide(TenantState("globex"), ORG, fingerprint_of(ORG.payload), trusted(ORG))
