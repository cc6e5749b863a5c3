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
    InconsistentLog,
    OperationAccepted,
    Organization,
    OrganizationCreated,
    Rejected,
    Resources,
    ServiceDeletionRequested,
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


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_evolve(case: Case) -> None:
    assert case.then(replay(TENANT, case.given)) == case.expected


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
