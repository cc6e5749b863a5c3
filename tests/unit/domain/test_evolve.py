"""evolve: given a tenant's events, then its state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from domain_builders import DB1, TENANT, ev

from events import (
    Accepted,
    CommandRecord,
    CommandRejected,
    Envelope,
    Event,
    InconsistentLog,
    OperationAccepted,
    OperationStarted,
    Organization,
    OrganizationCreated,
    Rejected,
    Resources,
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
    evolve,
    next_sequence,
    outcome_of,
    replay,
)

SMALL = Resources(1.0, 2, 10, 1)
BIG = Resources(4.0, 16, 500, 3)
ORG = ev(OrganizationCreated(TENANT, "Acme Inc.", "alice"), "organization", TENANT)
REQUESTED = ev(
    ServiceRequested(
        DB1, "orders", "vitess", "v24.0.0-rc1-mysql80", "lagos", "small", SMALL, labels={"team": "a"}
    ),
    "service",
    DB1,
    command_id="c-create",
)
SCALED = ev(ServiceScaleRequested(DB1, SMALL, BIG), "service", DB1, 2, command_id="c-scale")
DELETING = ev(ServiceDeletionRequested(DB1), "service", DB1, 3, command_id="c-delete")
ACCEPTED = ev(OperationAccepted("c-1", "CreateService", DB1, 3, "fp-1"), "operation", "c-1")
REJECTED = ev(
    CommandRejected("c-1", "CreateService", "not_found", None, "no org", "fp-1"), "operation", "c-1"
)
REUSE_REJECTED = ev(
    CommandRejected("r-1", "CreateService", "conflict", None, "reused", "fp-2"), "operation", "r-1"
)


def started(operation_id: str, action: str = "apply", resources: Resources = SMALL) -> OperationStarted:
    return OperationStarted(
        operation_id,
        DB1,
        action,
        "orders",
        "vitess",
        "v24.0.0-rc1-mysql80",
        "lagos",
        "small",
        resources,
        labels={"team": "a"},
    )


def service_log(*events: tuple[Event, str]) -> list[Envelope]:
    """Service DB1's events in order, numbered 1, 2, …, each with the command that caused it."""
    return [ev(payload, "service", DB1, n, command_id=c) for n, (payload, c) in enumerate(events, 1)]


def saga_state(s: TenantState) -> tuple[ServiceStatus, str | None, int, tuple]:
    """DB1's status, running operation, steps of it done and queued (operation, action)s."""
    service = s.services[DB1]
    return service.status, service.running, service.step, tuple((q.operation_id, q.action) for q in service.queued)


# (event, causing command) chains of DB1's saga: a create, then a scale or a delete.
CREATE_RUNNING = [
    (REQUESTED.payload, "c-create"),
    (started("c-create"), "c-create"),
]
CREATE_COMMITTED = [
    *CREATE_RUNNING,
    (ServiceClaimRendered("c-create", DB1, "ab" * 32), "c-r1"),
    (ServiceClaimCommitted("c-create", DB1, "lagos", "tenants/acme/lagos/orders.yaml", "c0ffee"), "c-c1"),
]
CREATE_READY = [*CREATE_COMMITTED, (ServiceReady("c-create", DB1, "orders:3306"), "c-p1")]
CREATE_FAILED = [*CREATE_COMMITTED, (ServiceFailed("c-create", DB1, "no nodes"), "c-p1")]
SCALE_RUNNING = [
    *CREATE_READY,
    (ServiceScaleRequested(DB1, SMALL, BIG), "c-scale"),
    (started("c-scale", resources=BIG), "c-scale"),
]
DELETE_COMMITTED = [
    *CREATE_READY,
    (ServiceDeletionRequested(DB1), "c-delete"),
    (started("c-delete", "delete"), "c-delete"),
    (ServiceClaimRendered("c-delete", DB1, "cd" * 32), "c-r2"),
    (ServiceClaimCommitted("c-delete", DB1, "lagos", "tenants/acme/lagos/orders.yaml", "beef"), "c-c2"),
]


@dataclass(frozen=True)
class Case:
    reason: str
    given: list
    then: Callable[[TenantState], Any]
    expected: Any


CASES = [
    Case(
        "an organization starts the tenant",
        [ORG],
        lambda s: s.organization,
        Organization(TENANT, "Acme Inc.", "alice"),
    ),
    Case(
        "a requested service is Requested with its resolved spec",
        [REQUESTED],
        lambda s: (
            s.services[DB1].status,
            s.services[DB1].resources,
            s.services[DB1].labels,
            s.services[DB1].operation_id,
        ),
        (ServiceStatus.REQUESTED, SMALL, {"team": "a"}, "c-create"),
    ),
    Case(
        "a scale request switches to the new resources and to Scaling",
        [REQUESTED, SCALED],
        lambda s: (s.services[DB1].status, s.services[DB1].resources, s.services[DB1].operation_id),
        (ServiceStatus.SCALING, BIG, "c-scale"),
    ),
    Case(
        "a deletion request makes the service Deleting, still live",
        [REQUESTED, SCALED, DELETING],
        lambda s: (s.services[DB1].status, s.services[DB1].live),
        (ServiceStatus.DELETING, True),
    ),
    Case(
        "an accepted operation records the command's fingerprint and operation",
        [ACCEPTED],
        lambda s: s.commands,
        {"c-1": CommandRecord("fp-1", Accepted("c-1"))},
    ),
    Case(
        "a rejection records the command's fingerprint and reason",
        [REJECTED],
        lambda s: outcome_of(s, "c-1"),
        Rejected("c-1", "not_found", None, "no org"),
    ),
    Case(
        "rejecting a reused command id leaves the first outcome",
        [ACCEPTED, REUSE_REJECTED],
        lambda s: s.commands["c-1"],
        CommandRecord("fp-1", Accepted("c-1")),
    ),
    Case(
        "sequences count per aggregate",
        [ORG, REQUESTED, SCALED, ACCEPTED],
        lambda s: (
            next_sequence(s, "organization", TENANT),
            next_sequence(s, "service", DB1),
            next_sequence(s, "operation", "c-1"),
            next_sequence(s, "operation", "c-2"),
        ),
        (2, 3, 2, 1),
    ),
    Case(
        "an event delivered twice is applied once",
        [REQUESTED, SCALED, SCALED, REQUESTED],
        lambda s: (s.services[DB1].status, next_sequence(s, "service", DB1)),
        (ServiceStatus.SCALING, 3),
    ),
]


SAGA_CASES = [
    Case(
        "a create's start runs it at step 0; the service stays Requested",
        service_log(*CREATE_RUNNING),
        saga_state,
        (ServiceStatus.REQUESTED, "c-create", 0, ()),
    ),
    Case(
        "rendering is step 1 and makes a Requested service Provisioning",
        service_log(*CREATE_COMMITTED[:3]),
        saga_state,
        (ServiceStatus.PROVISIONING, "c-create", 1, ()),
    ),
    Case(
        "committing is step 2; the status stays",
        service_log(*CREATE_COMMITTED),
        saga_state,
        (ServiceStatus.PROVISIONING, "c-create", 2, ()),
    ),
    Case(
        "Ready finishes the operation: step 3, nothing running",
        service_log(*CREATE_READY),
        saga_state,
        (ServiceStatus.READY, None, 3, ()),
    ),
    Case(
        "Failed finishes the operation: nothing running",
        service_log(*CREATE_FAILED),
        lambda s: (s.services[DB1].status, s.services[DB1].running, s.services[DB1].idle),
        (ServiceStatus.FAILED, None, True),
    ),
    Case(
        "a scale request while the create runs waits in the queue",
        service_log(*CREATE_RUNNING, (ServiceScaleRequested(DB1, SMALL, BIG), "c-scale")),
        saga_state,
        (ServiceStatus.SCALING, "c-create", 0, (("c-scale", "apply"),)),
    ),
    Case(
        "requests queue in arrival order behind the running operation",
        service_log(
            *CREATE_RUNNING,
            (ServiceScaleRequested(DB1, SMALL, BIG), "c-scale"),
            (ServiceDeletionRequested(DB1), "c-delete"),
        ),
        lambda s: tuple((q.operation_id, q.action) for q in s.services[DB1].queued),
        (("c-scale", "apply"), ("c-delete", "delete")),
    ),
    Case(
        "a queued apply starting on a Ready service leaves the queue and makes it Scaling",
        service_log(
            *CREATE_READY,
            (ServiceScaleRequested(DB1, SMALL, BIG), "c-scale"),
            (started("c-scale", resources=BIG), "c-scale"),
        ),
        saga_state,
        (ServiceStatus.SCALING, "c-scale", 0, ()),
    ),
    Case(
        "a queued apply starting on a Failed service makes it Scaling",
        service_log(
            *CREATE_FAILED,
            (ServiceScaleRequested(DB1, SMALL, BIG), "c-scale"),
            (started("c-scale", resources=BIG), "c-scale"),
        ),
        saga_state,
        (ServiceStatus.SCALING, "c-scale", 0, ()),
    ),
    Case(
        "a scale's Ready report makes the service Ready on its new resources",
        service_log(*SCALE_RUNNING, (ServiceReady("c-scale", DB1, "orders:3306"), "c-p2")),
        lambda s: (s.services[DB1].status, s.services[DB1].resources, s.services[DB1].idle),
        (ServiceStatus.READY, BIG, True),
    ),
    Case(
        "rendering a scale keeps it Scaling",
        service_log(*SCALE_RUNNING, (ServiceClaimRendered("c-scale", DB1, "cd" * 32), "c-r2")),
        saga_state,
        (ServiceStatus.SCALING, "c-scale", 1, ()),
    ),
    Case(
        "a Ready report while a deletion waits keeps the service Deleting",
        service_log(
            *SCALE_RUNNING,
            (ServiceDeletionRequested(DB1), "c-delete"),
            (ServiceReady("c-scale", DB1, "orders:3306"), "c-p2"),
        ),
        saga_state,
        (ServiceStatus.DELETING, None, 3, (("c-delete", "delete"),)),
    ),
    Case(
        "a delete's start makes the service Deleting",
        service_log(*DELETE_COMMITTED[:-2]),
        saga_state,
        (ServiceStatus.DELETING, "c-delete", 0, ()),
    ),
    Case(
        "Deleted finishes the service: no longer live, nothing running or queued",
        service_log(*DELETE_COMMITTED, (ServiceDeleted("c-delete", DB1), "c-p2")),
        lambda s: (s.services[DB1].status, s.services[DB1].live, s.services[DB1].idle),
        (ServiceStatus.DELETED, False, True),
    ),
    Case(
        "Deleted drops whatever still waits in the queue",
        service_log(
            *CREATE_COMMITTED,
            (ServiceScaleRequested(DB1, SMALL, BIG), "c-scale"),
            (ServiceDeleted("c-create", DB1), "c-p1"),
        ),
        lambda s: (s.services[DB1].status, s.services[DB1].queued, s.services[DB1].idle),
        (ServiceStatus.DELETED, (), True),
    ),
    Case(
        "the saga's events do not change the spec or the operation that last changed it",
        service_log(*CREATE_READY),
        lambda s: (s.services[DB1].resources, s.services[DB1].labels, s.services[DB1].operation_id),
        (SMALL, {"team": "a"}, "c-create"),
    ),
]


@pytest.mark.parametrize("case", CASES + SAGA_CASES, ids=[c.reason for c in CASES + SAGA_CASES])
def test_evolve(case: Case) -> None:
    assert case.then(replay(TENANT, case.given)) == case.expected


# Each saga event, on a state it may follow.
SAGA_STEPS = [
    (service_log(*CREATE_RUNNING[:1]), CREATE_RUNNING[1]),
    (service_log(*CREATE_COMMITTED[:2]), CREATE_COMMITTED[2]),
    (service_log(*CREATE_COMMITTED[:3]), CREATE_COMMITTED[3]),
    (service_log(*CREATE_COMMITTED), CREATE_READY[-1]),
    (service_log(*CREATE_COMMITTED), CREATE_FAILED[-1]),
    (service_log(*DELETE_COMMITTED), (ServiceDeleted("c-delete", DB1), "c-p2")),
]
SAGA_EVENTS = [payload for _, (payload, _) in SAGA_STEPS]

FAILURES = [
    (
        "a missing event is a gap, not something to paper over",
        [REQUESTED, DELETING],
        "expected sequence 2, got 3",
    ),
    (
        "another tenant's event never enters this state",
        [ev(OrganizationCreated("globex", "G", "x"), "organization", "globex", tenant="globex")],
        "belongs to tenant 'globex'",
    ),
    ("a scale of a service never requested", [replace(SCALED, sequence=1)], f"has no service {DB1}"),
    *[
        (
            f"a {type(e).__name__} of a service never requested",
            [ev(e, "service", DB1)],
            f"has no service {DB1}",
        )
        for e in SAGA_EVENTS
    ],
]


@pytest.mark.parametrize("given, message", [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_evolve_refuses_an_inconsistent_log(given: list, message: str) -> None:
    with pytest.raises(InconsistentLog, match=message):
        replay(TENANT, given)


def test_evolve_returns_a_new_state_and_leaves_the_old_one_alone() -> None:
    before = replay(TENANT, [REQUESTED])
    after = evolve(before, SCALED)

    assert before.services[DB1].status is ServiceStatus.REQUESTED
    assert after.services[DB1].status is ServiceStatus.SCALING


@pytest.mark.parametrize("given, event", SAGA_STEPS, ids=[type(event[0]).__name__ for _, event in SAGA_STEPS])
def test_every_saga_event_evolves_deterministically_and_once(given: list, event: tuple[Event, str]) -> None:
    before = replay(TENANT, given)
    envelope = ev(event[0], "service", DB1, len(given) + 1, command_id=event[1])
    after = evolve(before, envelope)

    assert after == evolve(before, envelope) == evolve(replay(TENANT, given), envelope)
    assert evolve(after, envelope) == after  # delivered twice, applied once
    assert after.services[DB1] != before.services[DB1]
    assert before == replay(TENANT, given)  # the old state is left alone


def test_the_states_replace_copies_like_dataclasses_replace() -> None:
    from events import state as state_module

    service = replay(TENANT, [REQUESTED]).services[DB1]
    fast = state_module.replace(service, status=ServiceStatus.READY, step=2)
    assert fast == replace(service, status=ServiceStatus.READY, step=2)
    assert type(fast) is type(service) and service.status is ServiceStatus.REQUESTED
    with pytest.raises(TypeError, match="no field colour"):
        state_module.replace(service, colour="blue")
