"""The development token issuer of a local platform — DEVELOPMENT ONLY.

`make up` generates an EC P-256 key per platform instance (in its `secrets.json`) and configures
the API to trust this issuer with the key's public half; `dbaas auth login --dev` signs tokens with
the private half, on the machine that runs the platform. A production deployment configures its
real OIDC issuers (Keycloak, …) instead and never this one. Tokens are ordinary ES256 JWTs with
`iss`, `aud`, `sub`, `iat`, `nbf`, `exp`, and the organization roles in `dbaas_orgs`.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://dev-issuer.dbaas.invalid"  # .invalid: never a real host
AUDIENCE = "dbaas"
SECRET_NAME = "dev_oidc_key"


def generate_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _public_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(private_pem: str) -> str:
    return "dev-" + hashlib.sha256(_public_pem(private_pem)).hexdigest()[:16]


def public_jwks(private_pem: str) -> dict[str, Any]:
    public = serialization.load_pem_public_key(_public_pem(private_pem))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    return {"keys": [{**jwk, "kid": key_id(private_pem), "use": "sig", "alg": "ES256"}]}


def issuer_config(private_pem: str) -> dict[str, Any]:
    """The entry of `DBAAS_OIDC_ISSUERS` that makes the API trust this issuer."""
    return {"issuer": ISSUER, "audience": AUDIENCE, "jwks": public_jwks(private_pem), "development": True}


def mint(private_pem: str, subject: str, orgs: dict[str, list[str]] | None = None,
         ttl_seconds: int = 8 * 3600, now: float | None = None, **claims: Any) -> str:
    issued = int(now if now is not None else time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": issued, "nbf": issued,
               "exp": issued + ttl_seconds, "dbaas_orgs": orgs or {}, "development": True, **claims}
    return jwt.encode(payload, private_pem, algorithm="ES256", headers={"kid": key_id(private_pem)})
