"""Authentication: every API request carries an OIDC bearer JWT from a trusted issuer.

Issuers are configuration (`DBAAS_OIDC_ISSUERS`, a JSON list of `{issuer, audience, jwks_uri |
jwks, client_id?, development?}`). A token is accepted when its `iss` is one of them, its signature
verifies with a key of that issuer's JWKS (RS256 or ES256 only; the key is picked by `kid`; JWKS
fetched over HTTP are cached and refetched for an unknown `kid`), its `aud` holds the issuer's
audience, and `exp`/`nbf`/`iat` hold with a small leeway. `sub` is the caller.

Organization roles in the token (the identity provider's grants, added to the platform's own
membership) are read Keycloak-style: realm roles (`realm_access.roles`), the client's roles
(`resource_access.<client_id>.roles`) and a top-level `roles` claim, each named
`org:<organization>:<role>`; and a `dbaas_orgs` claim `{organization: [role, …]}`. Anything else in
the token is ignored; in particular no token grants `system`, the platform processes' role.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from fastapi import HTTPException, Request
from prometheus_client import Counter

from commands import principal
from commands.catalog import ORG_ROLES
from commands.validation import DNS_LABEL, SUBJECT_MAX

ALGORITHMS = ("RS256", "ES256")
KEY_ALGORITHMS = ((RSAPublicKey, "RS256"), (EllipticCurvePublicKey, "ES256"))
LEEWAY_SECONDS = 30
AUTH_FAILURES = Counter("dbaas_http_auth_failures_total", "Requests refused for their token", ["reason"])
log = structlog.get_logger("gateway.auth")


class Unauthenticated(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Issuer:
    issuer: str
    audience: str
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None
    client_id: str | None = None
    development: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Issuer:
        if not d.get("issuer") or not d.get("audience") or not (d.get("jwks_uri") or d.get("jwks")):
            raise ValueError(f"DBAAS_OIDC_ISSUERS entry {d!r} needs issuer, audience and jwks_uri (or jwks)")
        return cls(d["issuer"], d["audience"], d.get("jwks_uri"), d.get("jwks"), d.get("client_id"),
                   bool(d.get("development", False)))


@dataclass(frozen=True)
class Identity:
    subject: str
    issuer: str
    org_roles: dict[str, frozenset[str]] = field(default_factory=dict)  # granted by the token
    development: bool = False

    @property
    def principal(self) -> str:
        """Who the caller is on the platform: the subject bound to its issuer (`<issuer>#<sub>`), so
        the same `sub` from two issuers never names the same member."""
        return principal(self.issuer, self.subject)


class Authenticator:
    def __init__(self, issuers: list[Issuer], default_issuer: str | None = None):
        self.issuers = {i.issuer: i for i in issuers}
        # The issuer a member named without one belongs to (`dbaas member add bob`): the one set, or
        # the first configured.
        self.default_issuer = default_issuer or next(iter(self.issuers), None)
        self._clients: dict[str, jwt.PyJWKClient] = {
            i.issuer: jwt.PyJWKClient(i.jwks_uri, cache_keys=True, lifespan=300, timeout=5)
            for i in issuers if i.jwks_uri}
        self._static: dict[str, jwt.PyJWKSet] = {
            i.issuer: jwt.PyJWKSet.from_dict(i.jwks) for i in issuers if i.jwks and not i.jwks_uri}

    @classmethod
    def from_env(cls) -> Authenticator:
        entries = json.loads(os.environ.get("DBAAS_OIDC_ISSUERS") or "[]")
        return cls([Issuer.from_dict(e) for e in entries], os.environ.get("DBAAS_DEFAULT_ISSUER") or None)

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed", f"the bearer token is not a JWT: {exc}") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated("algorithm", f"token algorithm {header.get('alg')!r} is not accepted; "
                                  f"use one of {', '.join(ALGORITHMS)}")
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise Unauthenticated("issuer", f"token issuer {unverified.get('iss')!r} is not trusted by this API")
        key = self._key(issuer, token, header)
        fits = [alg for kind, alg in KEY_ALGORITHMS if isinstance(key, kind)]
        if header["alg"] not in fits:
            raise Unauthenticated("key", f"the token is signed with {header['alg']}, but the key "
                                  f"{header.get('kid')!r} of {issuer.issuer} verifies {', '.join(fits) or 'neither'}"
                                  f" of {', '.join(ALGORITHMS)}")
        try:
            claims = jwt.decode(token, key, algorithms=fits, audience=issuer.audience,
                                issuer=issuer.issuer, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "sub", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("expired", "the token has expired; sign in again") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("not_yet_valid", "the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("audience", f"the token is not for this API (aud must hold {issuer.audience!r})") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid", f"the token is not valid: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthenticated("invalid", "the token has no subject (sub)")
        if len(subject) > SUBJECT_MAX or not subject.isprintable():
            raise Unauthenticated("invalid", f"the token's subject (sub) is not 1 to {SUBJECT_MAX} printable "
                                  "characters")
        return Identity(subject, issuer.issuer, org_roles(claims, issuer.client_id), issuer.development)

    def _key(self, issuer: Issuer, token: str, header: dict[str, Any]) -> Any:
        try:
            if issuer.issuer in self._clients:
                return self._clients[issuer.issuer].get_signing_key_from_jwt(token).key
            keys = self._static[issuer.issuer]
            kid = header.get("kid")
            matching = [k for k in keys.keys if k.key_id == kid or (kid is None and header["alg"] == k.algorithm_name)]
            if not matching:
                raise Unauthenticated("key", f"no key {kid!r} in the JWKS of {issuer.issuer}")
            return matching[0].key
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated("key", f"no key to verify the token from {issuer.issuer}: {exc}") from None


def org_roles(claims: dict[str, Any], client_id: str | None) -> dict[str, frozenset[str]]:
    """Organization roles granted by the token (see the module docstring for where they are read)."""
    names: list[Any] = []
    names += _roles(claims.get("realm_access"))
    if client_id:
        names += _roles(_object(claims.get("resource_access")).get(client_id))
    if isinstance(claims.get("roles"), list):
        names += claims["roles"]
    grants: dict[str, set[str]] = {}
    for name in names:
        if isinstance(name, str) and name.startswith("org:") and name.count(":") == 2:
            _, org, role = name.split(":")
            if DNS_LABEL.fullmatch(org) and role in ORG_ROLES:
                grants.setdefault(org, set()).add(role)
    for org, roles in _object(claims.get("dbaas_orgs")).items():
        for role in roles if isinstance(roles, list) and DNS_LABEL.fullmatch(org) else []:
            if role in ORG_ROLES:
                grants.setdefault(str(org), set()).add(role)
    return {org: frozenset(roles) for org, roles in grants.items()}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _roles(holder: Any) -> list[Any]:
    """`holder.roles` when the token has it as a list; a claim of another shape grants nothing."""
    roles = _object(holder).get("roles")
    return roles if isinstance(roles, list) else []


def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the verified caller, or 401 with a `WWW-Authenticate` challenge."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing", "send an OIDC access token: Authorization: Bearer <token> "
                                  "(locally: dbaas auth login --dev --user <you>)")
        try:
            identity = request.app.state.authenticator.verify(token.strip())
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # A token shaped in a way no check above foresaw is still only an unreadable token.
            log.warning("token could not be read", error=type(exc).__name__)
            raise Unauthenticated("malformed", "the bearer token could not be read") from exc
    except Unauthenticated as exc:
        AUTH_FAILURES.labels(exc.reason).inc()
        log.info("request refused: token", reason=exc.reason)
        raise HTTPException(401, str(exc), headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.reason}"'}) from None
    structlog.contextvars.bind_contextvars(subject=identity.principal)
    return identity
