"""Who is calling. Until OIDC tokens arrive (tenancy), the caller names itself in the
`X-Dbaas-Subject` and `X-Dbaas-Roles` headers: a development identity, trusted as given."""
from __future__ import annotations

from fastapi import Header, HTTPException

from commands import Actor


def current_actor(x_dbaas_subject: str | None = Header(default=None),
                  x_dbaas_roles: str | None = Header(default=None)) -> Actor:
    if not x_dbaas_subject:
        raise HTTPException(401, "say who you are: send the X-Dbaas-Subject header")
    roles = tuple(r.strip() for r in (x_dbaas_roles or "").split(",") if r.strip())
    return Actor(x_dbaas_subject, roles)
