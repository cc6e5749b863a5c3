"""The service-operation saga in the domain: given a service's commands, when the saga or a PoP reports
a step (rendered, committed, the PoP's Ready/Failed/Deleted), then these events and this state.

Operations on one service run one at a time: the running one advances step by step, the others
wait in its queue and start when it finishes. Every report may arrive twice or late; only the
first report of the running operation's next step changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from domain_builders import (
    DB1,
    DB2,
    MEMBER,
    OWNER,
    SYSTEM,
    TENANT,
    cmd,
    committed,
    op,
    rendered,
    reported,
    reverted,
    run,
    saga,
    trusted,
)

from commands import (
    Actor,
    CommandEnvelope,
    CreateOrganization,
    CreateService,
    DeleteService,
    ScaleService,
    decide,
    fingerprint_of,
    outcome_of,
    refused_operation_id,
)
from commands.catalog import OPERATION_STEPS, STEP_REPORTS
from events import (
    STEPS,
    CommandRejected,
    Envelope,
    OperationAccepted,
    OperationStarted,
    Resources,
    Service,
    ServiceClaimCommitted,
    ServiceClaimRendered,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
    ServiceRequested,
    ServiceStatus,
    evolve,
    replay,
)

ORG = cmd(CreateOrganization(TENANT, "Acme Inc."))
CREATE = cmd(CreateService(DB1, "orders", "yugabyte", "frankfurt", "small", labels={"team": "pay"}))
SCALE = cmd(ScaleService(DB1, cpu=2, storage_gb=20))
DELETE = cmd(DeleteService(DB1))
C, S, D = op(CREATE), op(SCALE), op(DELETE)
NAMES = {C: "create", S: "scale", D: "delete"}  # operation ids as the tables below spell them
NOT_AN_OPERATION = "5b7e1d2c-3a4f-4e6d-8c9b-0a1b2c3d4e5f"

SMALL = Resources(1.0, 2, 10, 1)
SCALED = Resources(2.0, 2, 20, 1)
DIGEST = "ab" * 32
PATH = f"tenants/{TENANT}/frankfurt/orders.yaml"
REQUESTED = ServiceRequested(
    DB1, "orders", "yugabyte", "2024.2.0.0-b145", "frankfurt", "small", SMALL, False, {"team": "pay"}, "Requested"
)

# Where the create stands: in flight (nothing reported), rendered, committed, Ready (the service idle).
CREATED = [ORG, CREATE]
CREATE_RENDERED = [*CREATED, rendered(DB1, C)]
CREATE_COMMITTED = [*CREATE_RENDERED, committed(DB1, C)]
READY = [*CREATE_COMMITTED, reported(DB1, C)]
SCALE_COMMITTED = [*READY, SCALE, rendered(DB1, S), committed(DB1, S)]
DELETED = [*READY, DELETE, *saga(DB1, D, "Deleted")]


def started(operation_id: str, action: str = "apply", resources: Resources = SMALL,
            status: str = "Requested") -> OperationStarted:
    """`operation_id` starting on DB1's resolved spec (with the resources a scale asked for)."""
    return OperationStarted(
        operation_id,
        DB1,
        action,
        "orders",
        "yugabyte",
        "2024.2.0.0-b145",
        "frankfurt",
        "small",
        resources,
        False,
        {"team": "pay"},
        status,
    )


def test_a_service_operation_has_the_saga_steps() -> None:
    assert STEPS == ("render", "commit", "pop-report")
    assert {OPERATION_STEPS[t] for t in ("CreateService", "ScaleService", "DeleteService")} == {len(STEPS)}
    assert set(STEP_REPORTS) == {
        "RecordServiceClaimRendered",
        "RecordServiceClaimCommitted",
        "RecordPopReport",
        "RecordStepTimedOut",
        "RecordStepFailed",
        "RecordServiceClaimReverted",
        "RecordBackupRendered",
        "RecordBackupCommitted",
        "RecordBackupReport",
        "RecordBackupStepFailed",
        "RecordBackupReverted",
        "RecordCdcRendered",
        "RecordCdcCommitted",
        "RecordCdcReport",
        "RecordCdcStepFailed",
        "RecordSubscriptionGranted",
        "RecordSubscriptionRevoked",
        "RecordSubscriptionFailed",
    }
    assert {OPERATION_STEPS[t] for t in ("BackupService", "DeleteBackup", "RestoreService", "EnableCdc",
                                         "DisableCdc")} == {len(STEPS)}
    assert not set(STEP_REPORTS) & set(OPERATION_STEPS)


def test_a_create_starts_its_apply_on_the_resolved_spec() -> None:
    state, _ = run([ORG])
    [requested, accepted, start] = decide(state, CREATE, fingerprint_of(CREATE.payload), trusted(CREATE))

    assert requested.payload == REQUESTED
    assert start.payload == started(C)
    spec = ("name", "engine", "engine_version", "pop", "size", "resources", "deletion_protection", "labels")
    assert {f: getattr(start.payload, f) for f in spec} == {f: getattr(REQUESTED, f) for f in spec}
    assert (start.aggregate_type, start.aggregate_id, start.sequence) == ("service", DB1, 2)
    assert accepted.payload == OperationAccepted(C, "CreateService", DB1, 3, fingerprint_of(CREATE.payload))


@dataclass(frozen=True)
class Report:
    reason: str
    given: list
    when: CommandEnvelope
    then: list  # the events, in order; [] = already known, stale or early: nothing changes


REPORTS = [
    Report(
        "the running create's manifests were rendered",
        CREATED,
        rendered(DB1, C),
        [ServiceClaimRendered(C, DB1, DIGEST, "Provisioning")],
    ),
    Report(
        "then committed",
        CREATE_RENDERED,
        committed(DB1, C),
        [ServiceClaimCommitted(C, DB1, "frankfurt", PATH, "c0ffee")],
    ),
    Report(
        "then the PoP reports the service Ready, with its endpoint",
        CREATE_COMMITTED,
        reported(DB1, C, endpoint="orders.acme.frankfurt:5433"),
        [ServiceReady(C, DB1, "orders.acme.frankfurt:5433", status="Ready")],
    ),
    Report(
        "a Failed report carries the PoP's reason",
        CREATE_COMMITTED,
        reported(DB1, C, "Failed", reason="ImagePullBackOff"),
        [ServiceFailed(C, DB1, "the PoP frankfurt reported: ImagePullBackOff", compensate=True)],
    ),
    Report(
        "a Failed report without a reason still says what happened",
        CREATE_COMMITTED,
        reported(DB1, C, "Failed"),
        [ServiceFailed(C, DB1, "the PoP frankfurt reported: a failure without a reason", compensate=True)],
    ),
    Report(
        "a Ready report starts the first queued operation, on the current spec",
        [*CREATE_COMMITTED, SCALE],
        reported(DB1, C),
        [ServiceReady(C, DB1, None, status="Ready"), started(S, resources=SCALED, status="Scaling")],
    ),
    Report(
        "a Failed report starts nothing queued: the commit is reverted first",
        [*CREATE_COMMITTED, SCALE],
        reported(DB1, C, "Failed", reason="no nodes"),
        [ServiceFailed(C, DB1, "the PoP frankfurt reported: no nodes", compensate=True)],
    ),
    Report(
        "only the first queued operation starts; the rest keep waiting",
        [*CREATE_COMMITTED, SCALE, DELETE],
        reported(DB1, C),
        # the deletion waiting behind the scale outranks both: the service is on its way out
        [ServiceReady(C, DB1, None, status="Deleting"), started(S, resources=SCALED, status="Deleting")],
    ),
    Report(
        "a scale's Ready report starts the delete queued behind it",
        [*SCALE_COMMITTED, DELETE],
        reported(DB1, S),
        [ServiceReady(S, DB1, None, status="Deleting"), started(D, "delete", SCALED, status="Deleting")],
    ),
    Report(
        "a Deleted report finishes the delete",
        [*READY, DELETE, rendered(DB1, D), committed(DB1, D)],
        reported(DB1, D, "Deleted"),
        [ServiceDeleted(D, DB1, "Deleted")],
    ),
    Report(
        "a Deleted report ends the service; nothing queued starts",
        [*CREATE_COMMITTED, SCALE],
        reported(DB1, C, "Deleted"),
        [ServiceDeleted(C, DB1, "Deleted")],
    ),
    Report("a rendered report delivered again", CREATE_RENDERED, rendered(DB1, C), []),
    Report(
        "a rendered report sent again under a new command id, after a saga restart",
        CREATE_RENDERED,
        rendered(DB1, C, "cd" * 32),
        [],
    ),
    Report("a rendered report after the commit", CREATE_COMMITTED, rendered(DB1, C, "cd" * 32), []),
    Report("a committed report sent again", CREATE_COMMITTED, committed(DB1, C, "beef"), []),
    Report("a Ready report delivered again", READY, reported(DB1, C), []),
    Report("a Failed report after Ready", READY, reported(DB1, C, "Failed"), []),
    Report("a step report of a finished operation", [*READY, SCALE], rendered(DB1, C, "cd" * 32), []),
    Report("a step report of a queued operation", [*CREATED, SCALE], rendered(DB1, S), []),
    Report(
        "a step report of an operation the service never had", CREATED, rendered(DB1, NOT_AN_OPERATION), []
    ),
    Report("a PoP report for a finished operation", [*SCALE_COMMITTED], reported(DB1, C), []),
    Report("a PoP report after the service was deleted", DELETED, reported(DB1, D, "Deleted"), []),
    Report(
        "a PoP report before the manifests were rendered: the PoP reports again",
        CREATED,
        reported(DB1, C),
        [],
    ),
    Report("a PoP report before the manifests were committed", CREATE_RENDERED, reported(DB1, C), []),
    Report(
        "an early Deleted report",
        [*READY, DELETE, rendered(DB1, D)],
        reported(DB1, D, "Deleted"),
        [],
    ),
]


@pytest.mark.parametrize("case", REPORTS, ids=[c.reason for c in REPORTS])
def test_step_reports(case: Report) -> None:
    state, _ = run(case.given)
    command = case.when
    events = decide(state, command, fingerprint_of(command.payload), trusted(command))

    assert [e.payload for e in events] == case.then
    assert all(
        (e.aggregate_type, e.aggregate_id) == ("service", DB1) for e in events
    )  # no operation of its own
    assert [e.sequence for e in events] == [
        state.sequences[("service", DB1)] + n for n in range(1, len(events) + 1)
    ]


@dataclass(frozen=True)
class Refuse:
    reason: str
    given: list
    when: CommandEnvelope
    code: str
    field: str | None
    message: str
    refused: bool = False  # the signing key may not send it: refused on an operation of its own


RESERVED = "and the role system are reserved to the platform's own processes"
REFUSED = [
    Refuse(
        "committed before rendered is out of order",
        CREATED,
        committed(DB1, C),
        "conflict",
        None,
        f"operation {C} reports step 2 before step 1",
    ),
    *[
        Refuse(
            f"{command.command_type} for a service that does not exist",
            CREATED,
            command,
            "not_found",
            "service_id",
            f'service {DB2} does not exist in organization "acme"',
        )
        for command in (rendered(DB2, C), committed(DB2, C), reported(DB2, C))
    ],
    Refuse(
        "an owner may not report a rendering",
        CREATED,
        rendered(DB1, C, actor=OWNER),
        "forbidden",
        None,
        f"RecordServiceClaimRendered {RESERVED}",
        refused=True,
    ),
    Refuse(
        "a member may not report a commit",
        CREATE_RENDERED,
        committed(DB1, C, actor=MEMBER),
        "forbidden",
        None,
        f"RecordServiceClaimCommitted {RESERVED}",
        refused=True,
    ),
    Refuse(
        "a tenant may not report its service Ready",
        CREATE_COMMITTED,
        reported(DB1, C, actor=Actor("eve", ("org-admin", "service-admin"))),
        "forbidden",
        None,
        f"RecordPopReport {RESERVED}",
        refused=True,
    ),
    Refuse(
        "the saga's role does not manage services",
        [ORG],
        cmd(CreateService(DB2, "billing", "vitess", "lagos", "small"), actor=SYSTEM),
        "forbidden",
        None,
        "the platform key sends only the platform's own commands; CreateService must come from a user or "
        "a registered publisher",
        refused=True,
    ),
    Refuse(
        "a PoP phase the domain does not know",
        CREATE_COMMITTED,
        reported(DB1, C, "Running"),
        "invalid",
        "phase",
        'phase "Running" is not offered; choose one of: Ready, Failed, Deleted',
    ),
    Refuse(
        "a report names its operation by id",
        CREATED,
        rendered(DB1, "create"),
        "invalid",
        "operation_id",
        'operation_id "create" is not a UUID in canonical form '
        "(8-4-4-4-12 lowercase hex digits); the publisher generates it",
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.reason for c in REFUSED])
def test_refused_step_reports_emit_one_command_rejected(case: Refuse) -> None:
    state, _ = run(case.given)
    command = case.when
    [event] = decide(state, command, fingerprint_of(command.payload), trusted(command))

    fingerprint = fingerprint_of(command.payload)
    operation = refused_operation_id(TENANT, command.command_id, fingerprint) if case.refused else op(command)
    assert (event.aggregate_type, event.aggregate_id, event.sequence) == ("operation", operation, 1)
    assert event.payload == CommandRejected(
        operation, command.command_type, case.code, case.field, case.message, fingerprint, case.refused
    )
    if case.refused:  # its command id stays free for the rightful sender
        assert command.command_id not in evolve(state, event).commands


@dataclass(frozen=True)
class Journey:
    reason: str
    given: list
    when: list
    # after each service event `when` causes: (event, status, running, steps done, queued);
    # the steps are left out ("-") when nothing runs, as they count the running operation's steps.
    then: list[tuple[str, ServiceStatus, str | None, int | str, tuple[tuple[str, str], ...]]]


REQ, PROV, RDY, SCL, DEL, FLD, GONE = (
    ServiceStatus.REQUESTED,
    ServiceStatus.PROVISIONING,
    ServiceStatus.READY,
    ServiceStatus.SCALING,
    ServiceStatus.DELETING,
    ServiceStatus.FAILED,
    ServiceStatus.DELETED,
)
JOURNEYS = [
    Journey(
        "the happy path: create, rendered, committed, Ready",
        [ORG],
        [CREATE, *saga(DB1, C)],
        [
            ("ServiceRequested", REQ, None, "-", ()),
            ("OperationStarted", REQ, "create", 0, ()),
            ("ServiceClaimRendered", PROV, "create", 1, ()),
            ("ServiceClaimCommitted", PROV, "create", 2, ()),
            ("ServiceReady", RDY, None, "-", ()),
        ],
    ),
    Journey(
        "reports delivered twice, stale or early are recorded once, in order",
        CREATED,
        [
            reported(DB1, C),
            rendered(DB1, C),
            rendered(DB1, C),
            rendered(DB1, C, "cd" * 32),
            reported(DB1, C),
            committed(DB1, C),
            committed(DB1, C, "beef"),
            rendered(DB1, C),
            reported(DB1, C),
            reported(DB1, C, "Failed"),
            reported(DB1, C),
        ],
        [
            ("ServiceClaimRendered", PROV, "create", 1, ()),
            ("ServiceClaimCommitted", PROV, "create", 2, ()),
            ("ServiceReady", RDY, None, "-", ()),
        ],
    ),
    Journey(
        "a scale during the create waits for the create's Ready report, then starts Scaling",
        CREATE_RENDERED,
        [SCALE, committed(DB1, C), reported(DB1, C), *saga(DB1, S)],
        [
            ("ServiceScaleRequested", SCL, "create", 1, (("scale", "apply"),)),
            ("ServiceClaimCommitted", SCL, "create", 2, (("scale", "apply"),)),
            ("ServiceReady", RDY, None, "-", (("scale", "apply"),)),
            ("OperationStarted", SCL, "scale", 0, ()),
            ("ServiceClaimRendered", SCL, "scale", 1, ()),
            ("ServiceClaimCommitted", SCL, "scale", 2, ()),
            ("ServiceReady", RDY, None, "-", ()),
        ],
    ),
    Journey(
        "a scale of an idle service starts at once; a delete queues behind it and ends the service",
        READY,
        [SCALE, DELETE, *saga(DB1, S), *saga(DB1, D, "Deleted")],
        [
            ("ServiceScaleRequested", SCL, None, "-", (("scale", "apply"),)),
            ("OperationStarted", SCL, "scale", 0, ()),
            ("ServiceDeletionRequested", DEL, "scale", 0, (("delete", "delete"),)),
            ("ServiceClaimRendered", DEL, "scale", 1, (("delete", "delete"),)),
            ("ServiceClaimCommitted", DEL, "scale", 2, (("delete", "delete"),)),
            ("ServiceReady", DEL, None, "-", (("delete", "delete"),)),
            ("OperationStarted", DEL, "delete", 0, ()),
            ("ServiceClaimRendered", DEL, "delete", 1, ()),
            ("ServiceClaimCommitted", DEL, "delete", 2, ()),
            ("ServiceDeleted", GONE, None, "-", ()),
        ],
    ),
    Journey(
        "a Failed report is compensated, then the queued scale tries the creation again",
        [*CREATED, SCALE],
        [*saga(DB1, C, "Failed", reason="no nodes"), reverted(DB1, C), *saga(DB1, S)],
        [
            ("ServiceClaimRendered", SCL, "create", 1, (("scale", "apply"),)),
            ("ServiceClaimCommitted", SCL, "create", 2, (("scale", "apply"),)),
            ("ServiceFailed", FLD, "create", 2, (("scale", "apply"),)),
            ("ServiceClaimReverted", FLD, None, "-", (("scale", "apply"),)),
            ("OperationStarted", REQ, "scale", 0, ()),
            ("ServiceClaimRendered", PROV, "scale", 1, ()),
            ("ServiceClaimCommitted", PROV, "scale", 2, ()),
            ("ServiceReady", RDY, None, "-", ()),
        ],
    ),
    Journey(
        "a delete during the create waits, then deletes what the create made",
        CREATED,
        [DELETE, *saga(DB1, C), *saga(DB1, D, "Deleted")],
        [
            ("ServiceDeletionRequested", DEL, "create", 0, (("delete", "delete"),)),
            ("ServiceClaimRendered", DEL, "create", 1, (("delete", "delete"),)),
            ("ServiceClaimCommitted", DEL, "create", 2, (("delete", "delete"),)),
            ("ServiceReady", DEL, None, "-", (("delete", "delete"),)),
            ("OperationStarted", DEL, "delete", 0, ()),
            ("ServiceClaimRendered", DEL, "delete", 1, ()),
            ("ServiceClaimCommitted", DEL, "delete", 2, ()),
            ("ServiceDeleted", GONE, None, "-", ()),
        ],
    ),
]


def row(envelope: Envelope, service: Service) -> tuple:
    """One line of a journey's `then`: the event, then the service as it left it."""
    return (
        type(envelope.payload).__name__,
        service.status,
        NAMES.get(service.running or "", service.running),
        service.step if service.running else "-",
        tuple((NAMES[q.operation_id], q.action) for q in service.queued),
    )


@pytest.mark.parametrize("case", JOURNEYS, ids=[c.reason for c in JOURNEYS])
def test_journeys(case: Journey) -> None:
    state, _ = run(case.given)
    seen = []
    for command in case.when:
        for envelope in decide(state, command, fingerprint_of(command.payload), trusted(command)):
            state = evolve(state, envelope)
            if envelope.aggregate_type == "service":
                seen.append(row(envelope, state.services[DB1]))

    assert seen == case.then


@pytest.mark.parametrize("case", JOURNEYS, ids=[c.reason for c in JOURNEYS])
def test_replaying_the_produced_events_gives_the_folded_state(case: Journey) -> None:
    state, produced = run([*case.given, *case.when])

    assert replay(TENANT, produced) == state
    assert replay(TENANT, [e for e in produced for _ in range(2)]) == state  # each delivered twice


def test_step_reports_start_no_operation_and_keep_no_command_record() -> None:
    reports = saga(DB1, C)
    state, produced = run([*CREATED, *reports])

    assert {e.aggregate_id for e in produced if e.aggregate_type == "operation"} == {op(ORG), C}
    assert set(state.commands) == {ORG.command_id, CREATE.command_id}
    assert [outcome_of(state, r.command_id) for r in reports] == [None, None, None]


def test_a_deleted_service_frees_its_name() -> None:
    again = cmd(CreateService(DB2, "orders", "vitess", "lagos", "small"))
    deleting, _ = run(DELETED[:-1])  # the delete is committed, the PoP has not reported yet
    deleted, _ = run(DELETED)

    [taken] = decide(deleting, again, fingerprint_of(again.payload), trusted(again))
    assert isinstance(taken.payload, CommandRejected)
    assert (taken.payload.reason_code, taken.payload.field) == ("conflict", "name")
    assert not deleted.services[DB1].live
    events = decide(deleted, again, fingerprint_of(again.payload), trusted(again))
    assert [(e.aggregate_id, type(e.payload)) for e in events] == [
        (DB2, ServiceRequested),
        (op(again), OperationAccepted),
        (DB2, OperationStarted),
    ]


def test_a_failed_report_keeps_a_queued_deletion() -> None:
    state, _ = run([*CREATED, SCALE, DELETE, *saga(DB1, C, "Failed", reason="no nodes"), reverted(DB1, C)])
    service = state.services[DB1]
    assert (service.running, [(q.operation_id, q.action) for q in service.queued]) == (S, [(D, "delete")])

    assert service.status is ServiceStatus.DELETING
    again = cmd(DeleteService(DB1), command_id="c0a1b2c3-d4e5-4f60-8a7b-9c8d7e6f5a4b")
    assert [type(e.payload) for e in decide(state, again, fingerprint_of(again.payload), trusted(again))] == [CommandRejected]


def test_a_ready_report_passes_the_encrypted_credentials_on_untouched() -> None:
    from domain_builders import DB1, OWNER, TENANT, cmd, committed, rendered, run

    from commands import CreateOrganization, CreateService, RecordPopReport
    from events import ServiceReady

    create = cmd(CreateService(DB1, "orders", "yugabyte", "local", "small"), actor=OWNER)
    started = op(create)
    report = cmd(RecordPopReport(DB1, started, "local", "Ready", "127.0.0.1:15432", None, "gAAAA-token"),
                 actor=SYSTEM)
    _, produced = run([cmd(CreateOrganization(TENANT, "Acme")), create, rendered(DB1, started),
                       committed(DB1, started, pop="local"), report])
    (ready,) = [e.payload for e in produced if isinstance(e.payload, ServiceReady)]
    assert (ready.endpoint, ready.credentials) == ("127.0.0.1:15432", "gAAAA-token")
