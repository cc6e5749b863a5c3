"""The service lifecycle table: every named transition, given its source status and facts, then
its target; an event the table does not allow from a status is refused; what old events imply."""

from __future__ import annotations

import pytest

from events.lifecycle import (
    EVENTS,
    TRANSITIONS,
    Facts,
    LifecycleError,
    Status,
    When,
    after,
    implied,
    transition,
)

S = Status
RAN, WAITS = Facts(ran=True), Facts(deletion_waits=True)

# (transition, from, facts, to): one case per row of the table.
CASES = [
    ("request-creation", "ServiceRequested", None, Facts(), S.REQUESTED),
    ("request-scale", "ServiceScaleRequested", S.READY, RAN, S.SCALING),
    ("request-protection", "DeletionProtectionSet", S.READY, RAN, S.SCALING),
    ("request-deletion", "ServiceDeletionRequested", S.FAILED, Facts(), S.DELETING),
    ("start-deletion", "OperationStarted(delete)", S.DELETING, Facts(), S.DELETING),
    ("start-behind-deletion", "OperationStarted(apply)", S.READY, Facts(ran=True, deletion_waits=True), S.DELETING),
    ("start-change", "OperationStarted(apply)", S.READY, RAN, S.SCALING),
    ("retry-creation", "OperationStarted(apply)", S.FAILED, Facts(), S.REQUESTED),
    ("start", "OperationStarted(apply)", S.SCALING, RAN, S.SCALING),
    ("render-creation", "ServiceClaimRendered", S.REQUESTED, Facts(), S.PROVISIONING),
    ("render", "ServiceClaimRendered", S.SCALING, RAN, S.SCALING),
    ("ready-behind-deletion", "ServiceReady", S.SCALING, WAITS, S.DELETING),
    ("ready", "ServiceReady", S.PROVISIONING, Facts(), S.READY),
    ("fail-and-revert", "ServiceFailed(after commit)", S.SCALING, RAN, S.FAILED),
    ("fail-behind-deletion", "ServiceFailed(before commit)", S.SCALING, WAITS, S.DELETING),
    ("fail-back-to-ready", "ServiceFailed(before commit)", S.SCALING, RAN, S.READY),
    ("fail", "ServiceFailed(before commit)", S.REQUESTED, Facts(), S.FAILED),
    ("cancel-and-revert", "OperationCancelled(awaiting its PoP)", S.SCALING, RAN, S.SCALING),
    ("drop-behind-deletion", "OperationCancelled(queued)", S.DELETING, WAITS, S.DELETING),
    ("drop-while-failing", "OperationCancelled(queued)", S.SCALING, Facts(reverting_failure=True), S.FAILED),
    ("drop-while-deleting", "OperationCancelled(queued)", S.SCALING, Facts(ran=True, deleting=True), S.DELETING),
    ("drop-while-changing", "OperationCancelled(queued)", S.SCALING, RAN, S.SCALING),
    ("drop-while-provisioning", "OperationCancelled(queued)", S.SCALING, Facts(rendered=True), S.PROVISIONING),
    ("drop-while-requested", "OperationCancelled(queued)", S.SCALING, Facts(), S.REQUESTED),
    ("drop-behind-creation", "OperationCancelled(behind a cancelled creation)", S.SCALING, Facts(), S.SCALING),
    ("undo-creation", "ServiceClaimReverted(cancelled creation)", S.PROVISIONING, Facts(), S.DELETED),
    ("revert-behind-deletion", "ServiceClaimReverted", S.FAILED, WAITS, S.DELETING),
    ("revert-to-ready", "ServiceClaimReverted", S.FAILED, RAN, S.READY),
    ("revert-failed-creation", "ServiceClaimReverted", S.FAILED, Facts(), S.FAILED),
    ("remove", "ServiceDeleted", S.DELETING, RAN, S.DELETED),
]


@pytest.mark.parametrize("name, event, source, facts, target", CASES, ids=[c[0] for c in CASES])
def test_every_transition(name: str, event: str, source: Status | None, facts: Facts, target: Status) -> None:
    assert transition(event, source, facts).name == name
    assert after(event, source, facts) is target


def test_the_cases_cover_every_row_of_the_table() -> None:
    assert [c[0] for c in CASES] == [t.name for t in TRANSITIONS]
    assert len({t.name for t in TRANSITIONS}) == len(TRANSITIONS)


@pytest.mark.parametrize("event, source", [
    ("ServiceReady", S.DELETED),  # a deleted service never comes back
    ("ServiceScaleRequested", S.DELETING),  # a service on its way out is not scaled
    ("DeletionProtectionSet", S.DELETED),
    ("ServiceDeletionRequested", S.DELETING),  # deleted once
    ("ServiceRequested", S.READY),  # a service is created once
    ("OperationStarted(apply)", None),  # no service yet
], ids=["ready-after-deleted", "scale-while-deleting", "protect-deleted", "delete-twice", "create-twice",
        "start-unknown"])
def test_an_illegal_transition_is_refused(event: str, source: Status | None) -> None:
    with pytest.raises(LifecycleError, match="cannot happen to a service that is"):
        after(event, source, RAN)


def test_an_event_outside_the_lifecycle_is_refused_by_name() -> None:
    with pytest.raises(LifecycleError, match="ServiceClaimCommitted is not a service lifecycle event; known: "):
        transition("ServiceClaimCommitted", S.SCALING)


def test_what_an_old_event_says_on_its_own() -> None:
    """Events recorded before they carried the status: the projector's fallback, as it always was."""
    assert {e: implied(e) for e in EVENTS if implied(e) is not None} | {"ServiceClaimRendered": None} == {
        "ServiceRequested": S.REQUESTED,
        "ServiceScaleRequested": S.SCALING,
        "DeletionProtectionSet": S.SCALING,
        "ServiceDeletionRequested": S.DELETING,
        "OperationStarted(delete)": S.DELETING,
        "ServiceReady": S.READY,
        "ServiceFailed(after commit)": S.FAILED,
        "ServiceFailed(before commit)": S.FAILED,
        "OperationCancelled(queued)": S.REQUESTED,
        "ServiceClaimReverted(cancelled creation)": S.DELETED,
        "ServiceClaimReverted": S.FAILED,
        "ServiceDeleted": S.DELETED,
        "ServiceClaimRendered": None,
    }
    assert implied("OperationStarted(apply)") is None  # depends on what came before
    assert implied("OperationCancelled(awaiting its PoP)") is None  # it stays as it is


def test_every_guard_is_used() -> None:
    assert {t.when for t in TRANSITIONS} == set(When)
