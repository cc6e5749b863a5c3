"""`decide` for tenant subscriptions: who may, names, and the saga's reports (given/when/then)."""
from __future__ import annotations

import pytest
from domain_builders import DB1, DB2, SYSTEM, cmd, op, run

from commands import (
    AddMember,
    CreateOrganization,
    CreateSubscription,
    RecordSubscriptionGranted,
    RecordSubscriptionRevoked,
    RevokeSubscription,
)
from commands.records import Actor
from events import CommandRejected, SubscriptionRequested, SubscriptionRevoked, SubscriptionStatus

SEALED = "v1.subscriptions." + "A" * 124
create = cmd(CreateSubscription(DB1, "analytics", SEALED))
revoke = cmd(RevokeSubscription(DB1))


def outcome(steps):
    """The state after `steps`, and what the last one decided (its rejection, or its event other than
    the operation's acceptance)."""
    state, _ = run([cmd(CreateOrganization("acme", "Acme")), *steps[:-1]])
    state, out = run(steps[-1:], state)
    decided = [e.payload for e in out if type(e.payload).__name__ != "OperationAccepted"]
    return state, decided[0]


@pytest.mark.parametrize("steps, expected, reason", [
    ([create], SubscriptionRequested, "an owner asks for one"),
    ([create, cmd(CreateSubscription(DB2, "analytics", SEALED))], "conflict", "names are unique while in use"),
    ([create, revoke, cmd(RecordSubscriptionRevoked(DB1, op(revoke)), actor=SYSTEM),
      cmd(CreateSubscription(DB2, "analytics", SEALED))], SubscriptionRequested, "a revoked one frees its name"),
    ([revoke], "not_found", "nothing to revoke"),
    ([create, revoke, cmd(RevokeSubscription(DB1), command_id="0b6f1c9e-2d3a-4e5f-8a7b-9c0d1e2f3a4b")], "conflict",
     "revoked twice"),
    ([cmd(AddMember("bob", "org-member")), cmd(CreateSubscription(DB1, "mine", SEALED), actor=Actor("bob", ()))],
     "forbidden", "members list, they do not create"),
    ([cmd(CreateSubscription(DB1, "analytics", "the-password-itself"))], "invalid", "never a password in clear"),
    ([create, cmd(RecordSubscriptionGranted(DB1, op(create)), actor=Actor("alice", ("org-owner",)))], "forbidden",
     "only the platform records a grant"),
])
def test_decide(steps, expected, reason):
    _, payload = outcome(steps)
    if isinstance(expected, str):
        assert isinstance(payload, CommandRejected) and payload.reason_code == expected, (reason, payload)
    else:
        assert isinstance(payload, expected), (reason, payload)


def test_a_grant_and_a_revocation_move_the_status():
    state, payload = outcome([create, cmd(RecordSubscriptionGranted(DB1, op(create)), actor=SYSTEM)])
    assert state.subscriptions[DB1].status is SubscriptionStatus.ACTIVE
    assert payload.__class__.__name__ == "SubscriptionGranted"
    state, payload = outcome([create, cmd(RecordSubscriptionGranted(DB1, op(create)), actor=SYSTEM), revoke,
                              cmd(RecordSubscriptionRevoked(DB1, op(revoke)), actor=SYSTEM)])
    assert isinstance(payload, SubscriptionRevoked) and state.subscriptions[DB1].status is SubscriptionStatus.REVOKED


def test_the_principal_and_group_prefix_are_decided_from_the_names():
    _, payload = outcome([create])
    assert (payload.principal, payload.group_prefix) == ("sub.acme.analytics", "sub.acme.analytics.")
