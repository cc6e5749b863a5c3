"""`GET /services/{id}/credentials`: the connection credentials a PoP created for a service.

They are stored only encrypted (a Fernet token from the PoP's report); this route decrypts them
for a caller allowed to manage the service, answers with `Cache-Control: no-store`, and never
logs them.
"""
from __future__ import annotations

import json
import os

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel

from gateway.access import require_read
from gateway.auth import Identity, current_identity

router = APIRouter()


class Credentials(BaseModel):
    username: str
    password: str
    host: str
    port: int
    database: str | None = None
    key_prefix: str | None = None
    uri: str


@router.get("/services/{service_id}/credentials", response_model=Credentials, tags=["services"],
            responses={403: {"description": "not allowed"}, 404: {"description": "no credentials yet"}})
def service_credentials(service_id: str, request: Request, response: Response,
                        identity: Identity = Depends(current_identity)) -> Credentials:
    with request.app.state.engine.connect() as conn:
        row = conn.execute(sa.text("select tenant_id, credentials from services where id = :id"),
                           {"id": service_id}).first()
    if row is None:
        raise HTTPException(404, f"no service {service_id}")
    require_read(request, identity, row.tenant_id, "credentials", missing=f"no service {service_id}")
    if row.credentials is None:
        raise HTTPException(404, f"service {service_id} has no credentials: they exist once the service is "
                                 "Ready in a PoP that issues them (PoP local)")
    key = os.environ.get("DBAAS_CREDENTIALS_KEY")
    if not key:
        raise HTTPException(503, "this API process has no credentials key (DBAAS_CREDENTIALS_KEY)")
    try:
        values = json.loads(Fernet(key).decrypt(row.credentials.encode()))
    except InvalidToken:
        raise HTTPException(500, "the stored credentials cannot be decrypted with this key") from None
    response.headers["Cache-Control"] = "no-store"
    return Credentials(**values)
