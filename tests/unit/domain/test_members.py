"""Members and roles: every role × every tenant command, allowed or denied by `decide` from the
organization's membership (not from what the caller claims), and the membership rules."""

from __future__ import annotations

import pytest
from domain_builders import op, DB1, OWNER, TENANT, cmd, committed, rendered, run, saga, trusted

from commands import (
    Actor,
    AddMember,
    CancelOperation,
    ChangeMemberRole,
    CreateOrganization,
    CreateService,
    DeleteService,
    RemoveMember,
    ScaleService,
    SetDeletionProtection,
    SetQuota,
    decide,
    fingerprint_of,
)
from events import CommandRejected, MemberAdded, MemberRemoved, MemberRoleChanged, Quota, ResourceLimit

ORG = cmd(CreateOrganization(TENANT, "Acme"))
CREATE = cmd(CreateService(DB1, "orders", "vitess", "lagos", "small"))
SCALE = cmd(ScaleService(DB1, cpu=2))
# SCALE is in flight, awaiting its PoP (so it can be cancelled)
READY_AND_SCALING = [ORG, CREATE, *saga(DB1, op(CREATE)), SCALE, rendered(DB1, op(SCALE)),
                     committed(DB1, op(SCALE))]
ROLES = ("org-owner", "org-admin", "org-member", "service-admin", "service-viewer", None)
DB2 = "1e0c9b5f-6a8d-4d2f-8e3b-2c4d6e8fa012"

# action -> the command a member sends -> roles allowed (written out, not read from the catalog)
MATRIX = {
    "create a service": (lambda: CreateService(DB2, "cache", "vitess", "lagos", "small"),
                         {"org-owner", "org-admin", "service-admin"}),
    "scale a service": (lambda: ScaleService(DB1, memory_gb=4), {"org-owner", "org-admin", "service-admin"}),
    "delete a service": (lambda: DeleteService(DB1), {"org-owner", "org-admin", "service-admin"}),
    "turn deletion protection on": (lambda: SetDeletionProtection(DB1, True), {"org-owner", "org-admin", "service-admin"}),
    "cancel an operation": (lambda: CancelOperation(op(SCALE)), {"org-owner", "org-admin", "service-admin"}),
    "set the quota": (lambda: SetQuota(Quota(5, ResourceLimit(8, 8, 8))), {"org-owner"}),
    "add a member": (lambda: AddMember("zoe", "org-member"), {"org-owner", "org-admin"}),
    "change a role": (lambda: ChangeMemberRole("dave", "service-viewer"), {"org-owner", "org-admin"}),
    "remove a member": (lambda: RemoveMember("dave"), {"org-owner", "org-admin"}),
}


def _with_member(role: str | None) -> list:
    steps = [*READY_AND_SCALING, cmd(AddMember("dave", "org-member"))]
    if role is not None and role != "org-owner":
        steps.append(cmd(AddMember("carol", role)))
    elif role == "org-owner":
        steps.append(cmd(AddMember("carol", "org-owner")))
    return steps


@pytest.mark.parametrize("role", ROLES, ids=[r or "not a member" for r in ROLES])
@pytest.mark.parametrize("action", MATRIX)
def test_every_role_and_action(role, action):
    build, allowed = MATRIX[action]
    state, _ = run(_with_member(role))
    command = cmd(build(), actor=Actor("carol"))  # claims no role: membership decides
    produced = [e.payload for e in decide(state, command, fingerprint_of(command.payload), trusted(command))]
    rejected = [p for p in produced if isinstance(p, CommandRejected)]
    if role in allowed:
        assert not rejected, rejected
    else:
        assert [r.reason_code for r in rejected] == ["forbidden"]
        assert "needs one of the roles" in rejected[0].message


def test_the_creator_is_the_first_org_owner():
    state, _ = run([ORG])
    assert state.members == {OWNER.subject: "org-owner"}


def test_members_come_change_and_go():
    state, produced = run([ORG, cmd(AddMember("bob", "org-admin")), cmd(ChangeMemberRole("bob", "org-member")),
                           cmd(RemoveMember("bob"))])
    assert [e.payload for e in produced if e.aggregate_type == "organization"][1:] == [
        MemberAdded("bob", "org-admin"), MemberRoleChanged("bob", "org-admin", "org-member"),
        MemberRemoved("bob", "org-member")]
    assert "bob" not in state.members


def _refusal(steps, command):
    state, _ = run(steps)
    [r] = [e.payload for e in decide(state, command, fingerprint_of(command.payload), trusted(command))
           if isinstance(e.payload, CommandRejected)]
    return r.reason_code, r.message


def test_membership_rules_say_what_to_do():
    admin = Actor("bob")
    steps = [ORG, cmd(AddMember("bob", "org-admin"))]
    code, message = _refusal(steps, cmd(AddMember("mallory", "org-owner"), actor=admin))
    assert code == "forbidden" and "only an org-owner" in message
    code, message = _refusal(steps, cmd(RemoveMember(OWNER.subject), actor=admin))
    assert code == "forbidden"
    code, message = _refusal(steps, cmd(RemoveMember(OWNER.subject)))
    assert code == "conflict" and "last org-owner" in message
    code, message = _refusal(steps, cmd(AddMember("bob", "org-member")))
    assert code == "conflict" and "already a member" in message
    code, _ = _refusal(steps, cmd(ChangeMemberRole("nobody", "org-member")))
    assert code == "not_found"
    code, message = _refusal(steps, cmd(AddMember("x", "superuser")))
    assert code == "invalid" and "org-member" in message
    code, _ = _refusal(steps, cmd(AddMember(" padded", "org-member")))
    assert code == "invalid"


def test_a_second_owner_can_take_over():
    steps = [ORG, cmd(AddMember("bob", "org-owner")), cmd(RemoveMember(OWNER.subject), actor=Actor("bob"))]
    state, _ = run(steps)
    assert state.members == {"bob": "org-owner"}


def test_a_removed_member_loses_access():
    steps = [*READY_AND_SCALING, cmd(AddMember("bob", "service-admin")), cmd(RemoveMember("bob"))]
    code, _ = _refusal(steps, cmd(DeleteService(DB1), actor=Actor("bob")))
    assert code == "forbidden"


def test_a_member_of_another_organization_has_no_role_here():
    code, _ = _refusal(READY_AND_SCALING, cmd(DeleteService(DB1), actor=Actor("mallory")))
    assert code == "forbidden"
