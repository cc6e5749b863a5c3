"""Token validation against a JWKS served on loopback: RS256 and ES256 keys made here, the claim
checks (iss, aud, exp/nbf with leeway, sub), refused algorithms and keys, and the Keycloak-style
mapping of organization roles."""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import LEEWAY_SECONDS, Authenticator, Issuer, Unauthenticated, org_roles

ISS = "http://127.0.0.1/realms/acme-corp"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key, kid: str, alg: str) -> dict:
    algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    return {**json.loads(algo.to_jwk(key.public_key())), "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [_jwk(RSA_KEY, "rsa-1", "RS256"), _jwk(EC_KEY, "ec-1", "ES256")]}


@pytest.fixture(scope="module")
def jwks_url():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps(JWKS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/protocol/openid-connect/certs"
    server.shutdown()


@pytest.fixture(scope="module")
def auth(jwks_url) -> Authenticator:
    return Authenticator([Issuer(ISS, "dbaas-api", jwks_uri=jwks_url, client_id="dbaas")])


def token(key=RSA_KEY, alg="RS256", kid="rsa-1", **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISS, "aud": "dbaas-api", "sub": "f3a1c2d4-user", "iat": now, "nbf": now, "exp": now + 300}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def test_rs256_and_es256_tokens_are_accepted(auth):
    assert auth.verify(token()).subject == "f3a1c2d4-user"
    assert auth.verify(token(EC_KEY, "ES256", "ec-1")).subject == "f3a1c2d4-user"


def test_audience_may_be_a_list(auth):
    assert auth.verify(token(aud=["account", "dbaas-api"])).issuer == ISS


@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": -LEEWAY_SECONDS - 5}, "expired"),  # seconds from now, resolved when the test runs
    ({"nbf": LEEWAY_SECONDS + 60}, "not_yet_valid"),
    ({"aud": "another-api"}, "audience"),
    ({"iss": "https://evil.example/realms/acme-corp"}, "issuer"),
    ({"sub": None}, "invalid"),
    ({"exp": None}, "invalid"),
])
def test_claims_are_checked(auth, claims, reason):
    now = int(time.time())
    claims = {k: (now + v if k in ("exp", "nbf") and v is not None else v) for k, v in claims.items()}
    with pytest.raises(Unauthenticated) as refused:
        auth.verify(token(**claims))
    assert refused.value.reason == reason


def test_a_small_clock_skew_is_tolerated(auth):
    assert auth.verify(token(exp=int(time.time()) - LEEWAY_SECONDS // 2)).subject


def test_a_token_signed_by_another_key_is_refused(auth):
    with pytest.raises(Unauthenticated) as refused:
        auth.verify(token(OTHER_KEY))  # claims the kid of a trusted key
    assert refused.value.reason == "invalid"
    with pytest.raises(Unauthenticated) as refused:
        auth.verify(token(OTHER_KEY, kid="unknown"))
    assert refused.value.reason == "key"


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_symmetric_and_unsigned_tokens_are_refused(auth, alg):
    now = int(time.time())
    claims = {"iss": ISS, "aud": "dbaas-api", "sub": "x", "iat": now, "exp": now + 60}
    forged = jwt.encode(claims, "s" * 32 if alg == "HS256" else None, algorithm=alg)
    with pytest.raises(Unauthenticated) as refused:
        auth.verify(forged)
    assert refused.value.reason == "algorithm"


def test_garbage_is_refused(auth):
    with pytest.raises(Unauthenticated) as refused:
        auth.verify("not.a.jwt")
    assert refused.value.reason == "malformed"


def test_keycloak_realm_and_client_roles_map_to_organization_roles(auth):
    identity = auth.verify(token(
        realm_access={"roles": ["offline_access", "org:acme:org-admin"]},
        resource_access={"dbaas": {"roles": ["org:globex:service-viewer", "org:acme:nonsense"]},
                         "other-client": {"roles": ["org:initech:org-owner"]}},
        dbaas_orgs={"hooli": ["service-admin", "god"]}))
    assert identity.org_roles == {"acme": {"org-admin"}, "globex": {"service-viewer"}, "hooli": {"service-admin"}}


def test_no_token_grants_the_system_role():
    grants = org_roles({"realm_access": {"roles": ["system", "org:acme:system"]},
                        "dbaas_orgs": {"acme": ["system"]}}, "dbaas")
    assert grants == {}


def test_issuer_configuration_is_checked():
    with pytest.raises(ValueError):
        Issuer.from_dict({"issuer": ISS, "audience": "dbaas"})


def _b64(part) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _claims() -> dict:
    now = int(time.time())
    return {"iss": ISS, "aud": "dbaas-api", "sub": "f3a1c2d4-user", "iat": now, "exp": now + 300}


@pytest.fixture(scope="module")
def static_auth() -> Authenticator:
    """An issuer whose JWKS is configuration (as the development issuer's): EC key only."""
    return Authenticator([Issuer(ISS, "dbaas-api", jwks={"keys": [_jwk(EC_KEY, "ec-1", "ES256")]})])


@pytest.mark.parametrize("which", ["fetched", "static"])
@pytest.mark.parametrize(("reason_", "forged"), [
    ("an RS256 token naming an EC key", lambda: jwt.encode(_claims(), RSA_KEY, algorithm="RS256",
                                                           headers={"kid": "ec-1"})),
    ("an RS256 token naming no key", lambda: jwt.encode(_claims(), RSA_KEY, algorithm="RS256")),
    ("a key id that is not a string", lambda: f'{_b64({"alg": "ES256", "kid": 5})}.{_b64(_claims())}.AAAA'),
    ("a header that is a list", lambda: f"{_b64([1])}.{_b64(_claims())}.AAAA"),
    ("claims that are a list", lambda: f'{_b64({"alg": "ES256", "kid": "ec-1"})}.{_b64([1])}.AAAA'),
    ("an issuer that is an object", lambda: f'{_b64({"alg": "ES256"})}.{_b64({**_claims(), "iss": {}})}.AAAA'),
    ("an algorithm that is a list", lambda: f'{_b64({"alg": ["ES256"]})}.{_b64(_claims())}.AAAA'),
    ("a critical extension nobody knows", lambda: f'{_b64({"alg": "ES256", "crit": ["x"]})}.{_b64(_claims())}.AAAA'),
    ("a signature that is garbage", lambda: f'{_b64({"alg": "ES256", "kid": "ec-1"})}.{_b64(_claims())}.AAAA'),
    ("a NUL in the subject", lambda: jwt.encode({**_claims(), "sub": "al\x00ice"}, EC_KEY, algorithm="ES256",
                                                headers={"kid": "ec-1"})),
    ("a subject of 300 characters", lambda: jwt.encode({**_claims(), "sub": "a" * 300}, EC_KEY, algorithm="ES256",
                                                       headers={"kid": "ec-1"})),
    ("not base64", lambda: "é.é.é"),
    ("a NUL", lambda: "a\x00b.c.d"),
    ("dots only", lambda: "..."),
])
def test_a_token_of_any_odd_shape_is_refused_as_unauthenticated(auth, static_auth, which, reason_, forged):
    verifier = auth if which == "fetched" else static_auth
    with pytest.raises(Unauthenticated):
        verifier.verify(forged())


def test_the_algorithm_must_fit_the_key_it_names(auth):
    with pytest.raises(Unauthenticated) as refused:
        auth.verify(token(RSA_KEY, "RS256", kid="ec-1"))
    assert refused.value.reason == "key" and "RS256" in str(refused.value) and "ES256" in str(refused.value)


def test_role_claims_of_another_shape_grant_nothing_and_break_nothing(auth):
    identity = auth.verify(token(EC_KEY, "ES256", "ec-1", realm_access=[1], resource_access="x",
                                 roles={"org:acme:org-owner": 1}, dbaas_orgs={"acme": "org-owner"}))
    assert identity.org_roles == {}
    assert auth.verify(token(EC_KEY, "ES256", "ec-1", realm_access={"roles": 5})).org_roles == {}


def test_organization_names_in_roles_are_organization_slugs():
    grants = org_roles({"roles": ["org:ac\x00me:org-owner", "org:Acme Inc:org-owner", "org:acme:org-owner"],
                        "dbaas_orgs": {"glo\x00bex": ["org-owner"]}}, None)
    assert grants == {"acme": {"org-owner"}}
