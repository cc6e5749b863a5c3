"""`GET /services/{id}/credentials`: the connection credentials a PoP created for a service.

They are stored only encrypted (a Fernet token from the PoP's report); this route decrypts them
for a caller allowed to manage the service, answers with `Cache-Control: no-store`, and never
logs them.
"""
from __future__ import annotations

import json
import os

from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel

from gateway.access import Reads, require_read
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
def service_credentials(service_id: str, request: Request, response: Response, reads: Reads,
                        identity: Identity = Depends(current_identity)) -> Credentials:
    stored = reads.credentials(service_id)
    if stored is None:
        raise HTTPException(404, f"no service {service_id}")
    require_read(request, reads, identity, stored.tenant_id, "credentials", missing=f"no service {service_id}")
    if stored.token is None:
        raise HTTPException(404, f"service {service_id} has no credentials: they exist once the service is "
                                 "Ready in a PoP that issues them (PoP local)")
    key = os.environ.get("DBAAS_CREDENTIALS_KEY")
    if not key:
        raise HTTPException(503, "this API process has no credentials key (DBAAS_CREDENTIALS_KEY)")
    try:
        values = json.loads(Fernet(key).decrypt(stored.token.encode()))
    except InvalidToken:
        raise HTTPException(500, "the stored credentials cannot be decrypted with this key") from None
    response.headers["Cache-Control"] = "no-store"
    return Credentials(**values)
