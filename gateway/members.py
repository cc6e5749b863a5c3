"""Members of an organization and the caller's own memberships.

`GET /organizations/{id}/members` (any member), `POST /organizations/{id}/members` {subject, issuer?,
role} to add (or invite: the subject is the identity provider's `sub`, bound to its issuer — the
API's default issuer when none is named; the user gains access with their next token),
`PUT /organizations/{id}/members/{subject}?issuer=` {role}, `DELETE …/members/{subject}?issuer=`
(org-owner, org-admin; only an org-owner makes or unmakes an org-owner, and the last org-owner
stays — `decide` enforces both). `GET /users/me`: who the token says you are and where you belong.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from commands import AddMember, ChangeMemberRole, RemoveMember, principal, split_principal
from gateway import ratelimit, writes
from gateway.access import Reads, require_command, require_read, tenants_of
from gateway.auth import Identity, current_identity

router = APIRouter(tags=["members"])
IdemKey, CorrId = writes.IdemKey, writes.CorrId


class Member(BaseModel):
    subject: str
    issuer: str | None = Field(description="the issuer of the subject; null for a platform process or a "
                                           "member recorded before subjects were bound to issuers")
    role: str
    created_at: datetime
    updated_at: datetime


class MemberIn(BaseModel):
    subject: str = Field(description="the identity provider's subject (`sub`) of the user")
    issuer: str | None = Field(None, description="the identity provider (`iss`); default: the API's default issuer")
    role: str = Field(description="org-owner, org-admin, org-member, service-admin or service-viewer")


class RoleIn(BaseModel):
    role: str


class Membership(BaseModel):
    organization: str
    roles: list[str]


class Me(BaseModel):
    subject: str
    issuer: str
    development_token: bool = Field(description="issued by a local platform's development issuer")
    organizations: list[Membership]


@router.get("/organizations/{org}/members", response_model=list[Member])
def list_members(org: str, request: Request, reads: Reads,
                 identity: Identity = Depends(current_identity)) -> list[Member]:
    require_read(request, reads, identity, org, "members")
    return [Member(**_named(m.subject), role=m.role, created_at=m.created_at, updated_at=m.updated_at)
            for m in reads.members(org)]


def _named(value: str) -> dict[str, str | None]:
    issuer, subject = split_principal(value)
    return {"issuer": issuer, "subject": subject}


Issuer = Annotated[str | None, Query(description="the subject's issuer; default: the API's default issuer")]


def _principal(request: Request, subject: str, issuer: str | None) -> str:
    """The member a request names: `subject` of `issuer`, or of the API's default issuer."""
    issuer = issuer or request.app.state.authenticator.default_issuer
    if not issuer:
        raise HTTPException(422, "name the member's issuer: this API has no default issuer")
    return principal(issuer, subject)


@router.post("/organizations/{org}/members", status_code=202, response_model=writes.Accepted)
async def add_member(org: str, body: MemberIn, request: Request, response: Response, reads: Reads,
                     identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                     correlation_id: CorrId = None) -> writes.Accepted:
    require_read(request, reads, identity, org, "members")
    actor = require_command(request, reads, identity, org, "AddMember")
    return await writes.publish(request, reads, response, org, actor, AddMember(_principal(request, body.subject, body.issuer), body.role),
                                writes.command_id(idempotency_key), correlation_id)


@router.put("/organizations/{org}/members/{subject}", status_code=202, response_model=writes.Accepted)
async def change_role(org: str, subject: str, body: RoleIn, request: Request, response: Response,
                      reads: Reads, identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                      correlation_id: CorrId = None, issuer: Issuer = None) -> writes.Accepted:
    require_read(request, reads, identity, org, "members")
    actor = require_command(request, reads, identity, org, "ChangeMemberRole")
    return await writes.publish(request, reads, response, org, actor, ChangeMemberRole(_principal(request, subject, issuer), body.role),
                                writes.command_id(idempotency_key), correlation_id)


@router.delete("/organizations/{org}/members/{subject}", status_code=202, response_model=writes.Accepted)
async def remove_member(org: str, subject: str, request: Request, response: Response,
                        reads: Reads, identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                        correlation_id: CorrId = None, issuer: Issuer = None) -> writes.Accepted:
    require_read(request, reads, identity, org, "members")
    actor = require_command(request, reads, identity, org, "RemoveMember")
    return await writes.publish(request, reads, response, org, actor, RemoveMember(_principal(request, subject, issuer)),
                                writes.command_id(idempotency_key), correlation_id)


class User(BaseModel):
    subject: str
    issuer: str | None = None
    organizations: list[Membership]


@router.get("/users", response_model=list[User], tags=["users"])
def list_users(request: Request, reads: Reads, identity: Identity = Depends(current_identity)) -> list[User]:
    """The members of the organizations the caller belongs to, with their roles there."""
    ratelimit.charge(request, ratelimit.caller_bucket(identity.principal))
    mine = tenants_of(reads, identity)
    people: dict[str, dict[str, set[str]]] = {}
    for org in sorted(mine):
        for m in reads.members(org):
            people.setdefault(m.subject, {}).setdefault(org, set()).add(m.role)
    return [User(**_named(s), organizations=[Membership(organization=o, roles=sorted(r)) for o, r in sorted(orgs.items())])
            for s, orgs in sorted(people.items())]


@router.get("/users/me", response_model=Me, tags=["users"])
def me(request: Request, reads: Reads, identity: Identity = Depends(current_identity)) -> Me:
    ratelimit.charge(request, ratelimit.caller_bucket(identity.principal))
    held = {m.tenant_id: {m.role} for m in reads.memberships(identity.principal)}
    for org, roles in identity.org_roles.items():
        held.setdefault(org, set()).update(roles)
    return Me(subject=identity.subject, issuer=identity.issuer, development_token=identity.development,
              organizations=[Membership(organization=o, roles=sorted(r)) for o, r in sorted(held.items())])
