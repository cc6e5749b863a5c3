"""Deletion protection: refused deletes say how to lift it; turning it on or off is an operation
(the manifests are rendered and committed again) whose setting holds at once, so a deletion
accepted after lifting it queues behind the commit that lifts it."""

from __future__ import annotations

from domain_builders import op, DB1, MEMBER, TENANT, cmd, reverted, run, saga, trusted

from commands import (
    CreateOrganization,
    CreateService,
    DeleteService,
    SetDeletionProtection,
    decide,
    fingerprint_of,
)
from events import (
    CommandRejected,
    DeletionProtectionSet,
    OperationAccepted,
    OperationStarted,
    ServiceDeleted,
    ServiceStatus,
)

ORG = cmd(CreateOrganization(TENANT, "Acme"))
CREATE = cmd(CreateService(DB1, "orders", "yugabyte", "frankfurt", "small", deletion_protection=True))
OFF = cmd(SetDeletionProtection(DB1, False))
ON = cmd(SetDeletionProtection(DB1, True))
DELETE = cmd(DeleteService(DB1))
READY = [ORG, CREATE, *saga(DB1, op(CREATE))]


def judged(steps, when) -> list:
    state, _ = run(steps)
    return [e.payload for e in decide(state, when, fingerprint_of(when.payload), trusted(when))]


def rejection(steps, when) -> CommandRejected:
    [payload] = judged(steps, when)
    assert isinstance(payload, CommandRejected), payload
    return payload


def test_a_protected_service_refuses_deletion_and_says_how_to_lift_it():
    refused = rejection(READY, DELETE)
    assert (refused.reason_code, refused.field) == ("conflict", "deletion_protection")
    assert "turn deletion_protection off" in refused.message


def test_lifting_it_is_an_operation_that_renders_the_service_again():
    payloads = judged(READY, OFF)
    assert DeletionProtectionSet(DB1, False, "Scaling") in payloads
    [accepted] = [p for p in payloads if isinstance(p, OperationAccepted)]
    [started] = [p for p in payloads if isinstance(p, OperationStarted)]
    assert accepted.operation_type == "SetDeletionProtection" and started.action == "apply"
    assert started.deletion_protection is False and started.operation_id == op(OFF)
    state, _ = run([*READY, OFF])
    assert state.services[DB1].status is ServiceStatus.SCALING
    assert state.services[DB1].deletion_protection is False


def test_a_deletion_after_lifting_it_waits_for_the_commit_that_lifts_it():
    state, produced = run([*READY, OFF, DELETE])
    service = state.services[DB1]
    assert service.running == op(OFF), "the lifting operation runs first"
    assert [q.operation_id for q in service.queued] == [op(DELETE)]
    assert service.status is ServiceStatus.DELETING
    state, produced = run([*saga(DB1, op(OFF))], state)
    [started] = [e.payload for e in produced if isinstance(e.payload, OperationStarted)]
    assert (started.operation_id, started.action) == (op(DELETE), "delete")
    state, produced = run([*saga(DB1, op(DELETE), "Deleted")], state)
    assert any(isinstance(e.payload, ServiceDeleted) for e in produced)
    assert state.services[DB1].status is ServiceStatus.DELETED


def test_turning_it_on_again_refuses_deletion_again():
    state, _ = run([*READY, OFF, *saga(DB1, op(OFF)), ON])
    assert state.services[DB1].deletion_protection is True
    assert rejection([*READY, OFF, *saga(DB1, op(OFF)), ON], DELETE).field == "deletion_protection"


def test_setting_it_to_what_it_is_says_so():
    refused = rejection(READY, ON)
    assert (refused.reason_code, refused.field) == ("invalid", "enabled")
    assert "already on" in refused.message


def test_it_cannot_change_once_the_service_is_being_deleted():
    unprotected = [ORG, cmd(CreateService(DB1, "orders", "yugabyte", "frankfurt", "small")), DELETE]
    refused = rejection(unprotected, ON)
    assert refused.reason_code == "conflict" and "being deleted" in refused.message


def test_a_service_that_never_ran_has_nothing_to_protect():
    failed = [ORG, CREATE, *saga(DB1, op(CREATE), "Failed", reason="no capacity"),
              reverted(DB1, op(CREATE))]
    state, _ = run(failed)
    assert state.services[DB1].status is ServiceStatus.FAILED
    refused = rejection(failed, OFF)
    assert refused.reason_code == "conflict" and "never ran" in refused.message
    state, produced = run([DELETE], state)
    assert not any(isinstance(e.payload, CommandRejected) for e in produced)
    assert state.services[DB1].status is ServiceStatus.DELETING


def test_an_org_member_may_not_change_it():
    refused = rejection(READY, cmd(SetDeletionProtection(DB1, False), actor=MEMBER))
    assert refused.reason_code == "forbidden"


def test_an_unknown_service_is_not_found():
    refused = rejection([ORG], OFF)
    assert refused.reason_code == "not_found"
