"""Authorization at the gateway: what the caller may do in an organization, answered fast (403)
before anything is published; `decide` judges every command again on the organization's own
state, so a publisher that skips the gateway gains nothing.

A caller's roles in an organization are its membership role (the `members` read model, asked
through the read port `projections.reads.ReadModel`) and the roles its token grants there. The
port reaches every route through one dependency, `read_model` (the app's; tests override it with
`app.dependency_overrides[read_model]`). Reads are scoped: only organizations the caller has a role in exist
for it (others answer 404, so their names and ids leak nothing).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from commands import Actor
from commands.catalog import PERMISSIONS, READ_PERMISSIONS
from gateway import ratelimit
from gateway.auth import Identity
from projections.reads import ReadModel


def read_model(request: Request) -> ReadModel:
    """The read port the app was built with (`create_app` puts it in `app.state.read_model`)."""
    return request.app.state.read_model


Reads = Annotated[ReadModel, Depends(read_model)]


def roles_in(request: Request, reads: ReadModel, identity: Identity, tenant: str) -> set[str]:
    """The caller's roles in `tenant`, looked up once per request (a route may check visibility
    and then permission); the request counts once against the tenant's rate limit when the caller
    is a member there, against the caller's own otherwise (`ratelimit.bucket_for`)."""
    known: dict[str, set[str]] | None = getattr(request.state, "roles", None)
    if known is None:
        known = request.state.roles = {}
    if tenant not in known:
        role = reads.member_role(tenant, identity.principal)
        held = {*identity.org_roles.get(tenant, ()), *([role] if role else [])}
        # Charged once membership is known: a stranger's requests never drain the organization's bucket.
        ratelimit.charge(request, ratelimit.bucket_for(tenant, held, identity.principal))
        known[tenant] = held
    return known[tenant]


def tenants_of(reads: ReadModel, identity: Identity) -> set[str]:
    """Every organization the caller holds a role in."""
    mine = {m.tenant_id for m in reads.memberships(identity.principal)}
    return {*mine, *(org for org, roles in identity.org_roles.items() if roles)}


def actor_for(identity: Identity, tenant: str) -> Actor:
    """The actor a command carries: the issuer-bound principal and the roles its token grants in
    `tenant` (its membership there is known to `decide` already)."""
    return Actor(identity.principal, tuple(sorted(identity.org_roles.get(tenant, ()))))


def require_command(request: Request, reads: ReadModel, identity: Identity, tenant: str,
                    command_type: str) -> Actor:
    allowed = PERMISSIONS[command_type]
    if allowed:
        held = roles_in(request, reads, identity, tenant)
        if not held:
            raise HTTPException(404, f"no organization {tenant} among yours")
        if not held & set(allowed):
            _deny(tenant, held, allowed, command_type)
    return actor_for(identity, tenant)


def require_read(request: Request, reads: ReadModel, identity: Identity, tenant: str, what: str,
                 missing: str | None = None) -> set[str]:
    """The caller's roles in `tenant` when they allow reading `what`; 404 (`missing`) when it has
    none there (the organization does not exist for it), 403 when its roles do not cover `what`."""
    held = roles_in(request, reads, identity, tenant)
    if not held:
        raise HTTPException(404, missing or f"no organization {tenant} among yours")
    allowed = READ_PERMISSIONS[what]
    if not held & set(allowed):
        _deny(tenant, held, allowed, f"reading {what}")
    return held


def _deny(tenant: str, held: set[str], allowed: tuple[str, ...], what: str) -> None:
    has = ", ".join(sorted(held)) or "no role"
    raise HTTPException(403, f'{what} needs one of the roles {", ".join(allowed)} in organization '
                             f'"{tenant}"; you have {has}')
