"""Authorization at the gateway: what the caller may do in an organization, answered fast (403)
before anything is published; `decide` judges every command again on the organization's own
state, so a publisher that skips the gateway gains nothing.

A caller's roles in an organization are its membership role (the `members` read model) and the
roles its token grants there. Reads are scoped: only organizations the caller has a role in exist
for it (others answer 404, so their names and ids leak nothing).
"""
from __future__ import annotations

import sqlalchemy as sa
from fastapi import HTTPException, Request

from commands import Actor
from commands.catalog import PERMISSIONS, READ_PERMISSIONS
from gateway import ratelimit
from gateway.auth import Identity


def member_role(request: Request, subject: str, tenant: str) -> str | None:
    with request.app.state.engine.connect() as conn:
        return conn.execute(sa.text("select role from members where tenant_id = :t and subject = :s"),
                            {"t": tenant, "s": subject}).scalar()


def roles_in(request: Request, identity: Identity, tenant: str) -> set[str]:
    """The caller's roles in `tenant`, looked up once per request (a route may check visibility
    and then permission); the request counts once against the tenant's rate limit when the caller
    is a member there, against the caller's own otherwise (`ratelimit.bucket_for`)."""
    known: dict[str, set[str]] | None = getattr(request.state, "roles", None)
    if known is None:
        known = request.state.roles = {}
    if tenant not in known:
        role = member_role(request, identity.principal, tenant)
        held = {*identity.org_roles.get(tenant, ()), *([role] if role else [])}
        # Charged once membership is known: a stranger's requests never drain the organization's bucket.
        ratelimit.charge(request, ratelimit.bucket_for(tenant, held, identity.principal))
        known[tenant] = held
    return known[tenant]


def tenants_of(request: Request, identity: Identity) -> set[str]:
    """Every organization the caller holds a role in."""
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("select tenant_id from members where subject = :s and role is not null"),
                            {"s": identity.principal}).scalars().all()
    return {*rows, *(org for org, roles in identity.org_roles.items() if roles)}


def actor_for(identity: Identity, tenant: str) -> Actor:
    """The actor a command carries: the issuer-bound principal and the roles its token grants in
    `tenant` (its membership there is known to `decide` already)."""
    return Actor(identity.principal, tuple(sorted(identity.org_roles.get(tenant, ()))))


def require_command(request: Request, identity: Identity, tenant: str, command_type: str) -> Actor:
    allowed = PERMISSIONS[command_type]
    if allowed:
        held = roles_in(request, identity, tenant)
        if not held:
            raise HTTPException(404, f"no organization {tenant} among yours")
        if not held & set(allowed):
            _deny(tenant, held, allowed, command_type)
    return actor_for(identity, tenant)


def require_read(request: Request, identity: Identity, tenant: str, what: str,
                 missing: str | None = None) -> set[str]:
    """The caller's roles in `tenant` when they allow reading `what`; 404 (`missing`) when it has
    none there (the organization does not exist for it), 403 when its roles do not cover `what`."""
    held = roles_in(request, identity, tenant)
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
