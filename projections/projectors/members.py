"""The `members` read model: one row per (organization, subject) that ever was a member; `role` is
NULL once the member was removed. The organization's creator is its first org-owner.
Rows are versioned by the organization aggregate's sequence. Imports `events` and
`projections.projectors`.
"""

from __future__ import annotations

from events import Envelope, MemberAdded, MemberRemoved, MemberRoleChanged, OrganizationCreated
from projections.projectors import Change, Handler

NAME = "members"


def member_id(tenant: str, subject: str) -> str:
    return f"{tenant}/{subject}"


def _row(env: Envelope, subject: str, role: str) -> Change:
    return Change(member_id(env.tenant_id, subject), env.sequence, {
        "tenant_id": env.tenant_id, "subject": subject, "role": role,
        "created_at": env.occurred_at, "updated_at": env.occurred_at}, creates=True)


def _created(env: Envelope) -> Change:
    e: OrganizationCreated = env.payload  # type: ignore[assignment]
    return _row(env, e.owner, "org-owner")


def _added(env: Envelope) -> Change:
    e: MemberAdded = env.payload  # type: ignore[assignment]
    return _row(env, e.subject, e.role)


def _changed(env: Envelope) -> Change:
    e: MemberRoleChanged = env.payload  # type: ignore[assignment]
    return Change(member_id(env.tenant_id, e.subject), env.sequence,
                  {"role": e.new_role, "updated_at": env.occurred_at})


def _removed(env: Envelope) -> Change:
    e: MemberRemoved = env.payload  # type: ignore[assignment]
    return Change(member_id(env.tenant_id, e.subject), env.sequence, {"role": None, "updated_at": env.occurred_at})


HANDLERS: dict[type, Handler] = {
    OrganizationCreated: _created,
    MemberAdded: _added,
    MemberRoleChanged: _changed,
    MemberRemoved: _removed,
}
