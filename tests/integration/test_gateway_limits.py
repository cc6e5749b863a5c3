"""No poison request, no 5xx for bad input, through the gateway of the code under test against the
test platform: oversize bodies and commands are 413, NUL characters 422 (never PostgreSQL's
DataError), odd tokens 401, PostgreSQL or Kafka unreachable 503 with Retry-After (the gateway is
pointed at a closed port; the platform's own services are never stopped), and a stranger cannot
drain an organization's rate limit."""
from __future__ import annotations

import dataclasses
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from gateway.guard import MAX_BODY_BYTES
from runtime import devissuer
from runtime.publisher import Publisher
from tests.conftest import RATE_LIMIT, wait_for
from tests.integration.gateway_support import closed_port, gateway_app, serving


@pytest.fixture(scope="module")
def live(stack):
    with serving(gateway_app(stack)) as url:
        yield url + "/api/v1"


def _org(stack, base: str, prefix: str = "limits") -> str:
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=base, headers=stack.auth("alice"), timeout=30) as alice:
        answer = alice.post("/organizations", json={"slug": slug})
        assert answer.status_code == 202, answer.text
        op = answer.json()["operation_id"]
        wait_for(lambda: alice.get(f"/operations/{op}").json().get("state") == "Succeeded",
                 what=f"organization {slug}")
    return slug


@pytest.fixture(scope="module")
def org(stack, live) -> str:
    return _org(stack, live)


@pytest.fixture
def alice(stack, live):
    with httpx.Client(base_url=live, headers=stack.auth("alice"), timeout=30) as c:
        yield c


def _unavailable(answer: httpx.Response, what: str) -> None:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    assert what in answer.json()["detail"]


def test_postgresql_unreachable_is_503_with_retry_after(stack):
    with closed_port() as port:
        app = gateway_app(stack, database_url=f"postgresql://dbaas:secret@127.0.0.1:{port}/dbaas")
        with TestClient(app, headers=stack.auth("alice")) as c:
            for answer in (c.get("/api/v1/services"), c.get("/api/v1/services", params={"name": "x"}),
                           c.get(f"/api/v1/operations/{uuid.uuid4()}"), c.get("/api/v1/users/me"),
                           c.get("/api/v1/organizations/acme/members"),
                           c.post("/api/v1/organizations", json={"slug": f"down-{uuid.uuid4().hex[:6]}"})):
                _unavailable(answer, "database is unavailable")


def test_kafka_unreachable_is_503_with_retry_after_within_the_publish_timeout(stack):
    with closed_port() as port:
        app = gateway_app(stack, kafka=dataclasses.replace(stack.kafka, bootstrap=f"127.0.0.1:{port}"),
                          publish_timeout=1.0)
        with TestClient(app, headers=stack.auth("alice")) as c:
            started = time.monotonic()
            answer = c.post("/api/v1/organizations", json={"slug": f"nokafka-{uuid.uuid4().hex[:6]}"})
            took = time.monotonic() - started
    _unavailable(answer, "message broker")
    assert "Idempotency-Key" in answer.json()["detail"]
    assert took < 10, f"the caller waited {took:.1f} s"


def test_a_command_over_the_brokers_message_limit_is_413_not_500(stack, org):
    app = gateway_app(stack)
    with TestClient(app, headers=stack.auth("alice")) as c:
        # A broker that takes 2000 bytes at most: a service with 32 long labels is a bigger command.
        small = Publisher(stack.kafka, stack.registry, signer=stack.signer("gateway"),
                          extra={"message.max.bytes": 2000})
        app.state.publisher.close()
        app.state.publisher = small
        labels = {f"k{i}-{'x' * 55}": "v" * 63 for i in range(32)}
        body = {"org": org, "name": "big", "engine": "vitess", "pop": "lagos", "labels": labels}
        assert len(json.dumps(body)) < MAX_BODY_BYTES
        answer = c.post("/api/v1/services", json=body)
    assert answer.status_code == 413, answer.text
    assert "larger than the message broker accepts" in answer.json()["detail"]


def test_bodies_over_64_kib_are_413_declared_or_streamed(alice, org):
    labels = {f"k{i}": "v" * 63 for i in range(1200)}  # ~90 KiB
    answer = alice.post("/services", json={"org": org, "name": "huge", "engine": "vitess", "pop": "lagos",
                                           "labels": labels})
    assert answer.status_code == 413 and "64 KiB" in answer.json()["detail"]

    def chunks():
        yield b'{"slug": "' + b"a" * 1024
        for _ in range(80):
            yield b"a" * 1024
        yield b'"}'

    streamed = alice.post("/organizations", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_more_than_32_labels_or_a_long_name_is_422_with_the_field(alice, org):
    base = {"org": org, "engine": "vitess", "pop": "lagos"}
    many = alice.post("/services", json={**base, "name": "many", "labels": {f"k{i}": "v" for i in range(33)}})
    assert many.status_code == 422 and many.json()["detail"][0]["loc"] == ["body", "labels"]
    long = alice.post("/services", json={**base, "name": "a" * 54})
    assert long.status_code == 422 and "at most 53" in long.json()["detail"][0]["msg"]
    nan = alice.post("/services", content=json.dumps({**base, "name": "nan", "cpu": float("nan")}),
                     headers={"Content-Type": "application/json"})
    assert nan.status_code == 422


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/services/a%00b", None),
    ("GET", "/services?name=or%00ders", None),
    ("GET", "/services?org={org}&engine=%00", None),
    ("GET", "/operations/%00", None),
    ("POST", "/services/a%00b/scale", {"cpu": 2}),
    ("DELETE", "/organizations/{org}/members/bob%00", None),
    ("POST", "/organizations/{org}/members", {"subject": "bob\x00", "role": "org-admin"}),
    ("POST", "/services", {"org": "{org}", "name": "x", "engine": "vitess", "pop": "lagos",
                           "labels": {"team": "a\x00"}}),
    ("POST", "/organizations", {"slug": "acme", "display_name": "Acme\x00"}),
])
def test_a_nul_anywhere_is_422_never_a_database_error(alice, org, method, path, body):
    if body is not None:
        body = json.loads(json.dumps(body).replace("{org}", org))
    answer = alice.request(method, path.replace("{org}", org), json=body)
    assert answer.status_code == 422, answer.text
    assert "NUL" in json.dumps(answer.json())


def test_tokens_of_odd_shapes_are_401(stack, live):
    now = int(time.time())
    claims = {"iss": devissuer.ISSUER, "aud": devissuer.AUDIENCE, "sub": "alice", "iat": now, "exp": now + 60}
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = json.loads((stack.home / "secrets.json").read_text())[devissuer.SECRET_NAME]
    tokens = [
        jwt.encode(claims, other, algorithm="RS256", headers={"kid": devissuer.key_id(key)}),  # RS256 vs EC key
        jwt.encode(claims, other, algorithm="RS256"),  # no kid
        "garbage", "e30.e30.", "a.b.c",
        jwt.encode({**claims, "sub": "al\x00ice"}, key, algorithm="ES256", headers={"kid": devissuer.key_id(key)}),
    ]
    for token in tokens:
        answer = httpx.get(f"{live}/services", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 401, (token, answer.text)
        assert "WWW-Authenticate" in answer.headers


def test_a_stranger_cannot_drain_an_organizations_rate_limit(stack, live):
    burst = float(RATE_LIMIT.split("/")[1])
    org = _org(stack, live, "ratelimit")
    with httpx.Client(base_url=live, headers=stack.auth(f"mallory-{uuid.uuid4().hex[:6]}"), timeout=30) as mallory:
        strangers = [mallory.get(f"/organizations/{org}/members").status_code for _ in range(int(burst) * 3)]
    assert set(strangers) == {404}  # its own bucket (the platform's 1000/2000) is far from empty
    with httpx.Client(base_url=live, headers=stack.auth("alice"), timeout=30) as alice:
        assert alice.get(f"/organizations/{org}/members").status_code == 200
