"""The gateway's decisions, driven through `create_app` over an in-memory read port (no database,
no broker): who may read and write what in an organization (membership roles, roles the token
grants, 404 for strangers, 403 for roles too weak), credentials, quota reads, the idempotency
check, and the read port's failures answered 503 (down) or 422 (a refused value)."""
from __future__ import annotations

import json
import uuid
from concurrent.futures import Future

import pytest
from cryptography.fernet import Fernet
from fastapi import Request
from fastapi.testclient import TestClient

import commands
from events import Quota, ResourceLimit
from gateway.access import read_model
from gateway.app import GatewaySettings, create_app
from gateway.auth import Authenticator, Identity, current_identity
from projections.reads import ReadModel, ReadModelRefused, ReadModelUnavailable, UsageGroup
from tests.unit.gateway.fake_reads import FakeReadModel

ISS = "https://issuer.test"
SERVICE = "5b1b6a39-0d6e-4a43-9b4f-3c8b0c1f2a10"
OTHER_SERVICE = "9f3c2d1e-7a6b-4c5d-8e9f-0a1b2c3d4e5f"
OPERATION = "0c9a8b7c-6d5e-4f3a-9b2c-1d0e9f8a7b6c"
KEY = Fernet.generate_key()
SECRET = {"username": "u1", "password": "p1", "host": "127.0.0.1", "port": 5432, "database": "d1",
          "uri": "postgresql://u1:p1@127.0.0.1:5432/d1"}


def who(name: str) -> str:
    return f"{ISS}#{name}"


class FakePublisher:
    def __init__(self) -> None:
        self.published: list = []

    def publish_async(self, envelope) -> Future:
        self.published.append(envelope)
        done: Future = Future()
        done.set_result(None)
        return done


@pytest.fixture
def reads() -> FakeReadModel:
    return FakeReadModel(
        roles={("acme", who("olivia")): "org-owner", ("acme", who("adam")): "org-admin",
               ("acme", who("mia")): "org-member", ("acme", who("sam")): "service-admin",
               ("acme", who("vera")): "service-viewer", ("globex", who("gus")): "org-owner"},
        services={SERVICE: ("acme", Fernet(KEY).encrypt(json.dumps(SECRET).encode()).decode()),
                  OTHER_SERVICE: ("globex", None)},
        operations={OPERATION: ("acme", "fingerprint-of-another-body")},
        organizations={"acme": None, "globex": Quota(3, ResourceLimit(8.0, 16, 100), {}, {})},
        usage={"acme": [UsageGroup("vitess", "lagos", 2, 4.0, 8, 40),
                        UsageGroup("vitess", "frankfurt", 1, 1.0, 2, 10),
                        UsageGroup("dragonfly", "lagos", 1, 0.5, 1, 0)]},
    )


@pytest.fixture
def api(reads, monkeypatch):
    """`create_app` with the fake read port and a fake publisher; the caller is `X-Who`, and
    `X-Grants` (`org=role,…`) are the roles its token grants."""
    monkeypatch.setenv("DBAAS_CREDENTIALS_KEY", KEY.decode())
    monkeypatch.delenv("DBAAS_RATE_LIMITS", raising=False)
    app = create_app(GatewaySettings("127.0.0.1:9", "http://127.0.0.1:9", "postgresql://x@127.0.0.1:9/x"),
                     Authenticator([]))
    publisher = app.state.publisher = FakePublisher()

    def identity(request: Request) -> Identity:
        grants: dict[str, set[str]] = {}
        for grant in filter(None, request.headers.get("x-grants", "").split(",")):
            org, role = grant.split("=")
            grants.setdefault(org, set()).add(role)
        return Identity(request.headers["x-who"], ISS, {o: frozenset(r) for o, r in grants.items()})

    app.dependency_overrides[current_identity] = identity
    app.dependency_overrides[read_model] = lambda: reads
    client = TestClient(app)  # no lifespan: nothing connects to PostgreSQL or Kafka
    client.publisher = publisher
    return client


def as_(name: str, grants: str = "") -> dict[str, str]:
    return {"x-who": name, **({"x-grants": grants} if grants else {})}


def test_the_fake_and_the_sql_implementation_are_read_models():
    from projections.reads import SqlReadModel

    assert isinstance(FakeReadModel(), ReadModel)  # every method of the port is there
    port = SqlReadModel.connect("postgresql://dbaas:x@127.0.0.1:9/dbaas")  # connects on first use only
    try:
        assert isinstance(port, ReadModel)
    finally:
        port.close()


READS = [
    # (reason, caller, token grants, path, status, text in the answer)
    ("an org-owner reads the quotas", "olivia", "", "/organizations/acme/quotas", 200, '"organization":"acme"'),
    ("an org-member may not read the quotas", "mia", "", "/organizations/acme/quotas", 403,
     "reading quotas needs one of the roles org-owner, org-admin"),
    ("a stranger does not see the organization", "eve", "", "/organizations/acme/quotas", 404,
     "no organization acme among yours"),
    ("a role the token grants counts without membership", "eve", "acme=org-admin",
     "/organizations/acme/quotas", 200, '"organization":"acme"'),
    ("a grant in another organization does not count", "eve", "globex=org-owner",
     "/organizations/acme/quotas", 404, "no organization acme among yours"),
    ("a token grant in an organization the read model lacks: its quotas are not found", "eve",
     "initech=org-owner", "/organizations/initech/quotas", 404, "organization initech not found"),
    ("any member lists the members", "vera", "", "/organizations/acme/members", 200, '"subject":"adam"'),
    ("a stranger does not see the members", "gus", "", "/organizations/acme/members", 404,
     "no organization acme among yours"),
    ("a service-admin reads credentials", "sam", "", f"/services/{SERVICE}/credentials", 200, '"password":"p1"'),
    ("a service-viewer may not read credentials", "vera", "", f"/services/{SERVICE}/credentials", 403,
     "reading credentials needs one of the roles org-owner, org-admin, service-admin"),
    ("a token-granted service-admin reads credentials", "eve", "acme=service-admin",
     f"/services/{SERVICE}/credentials", 200, '"username":"u1"'),
    ("a stranger's answer is the unknown service's", "eve", "", f"/services/{SERVICE}/credentials", 404,
     f"no service {SERVICE}"),
    ("an unknown service", "olivia", "", f"/services/{uuid.uuid4()}/credentials", 404, "no service"),
    ("a service without credentials yet", "gus", "", f"/services/{OTHER_SERVICE}/credentials", 404,
     "has no credentials"),
    ("the audit trail needs org-owner or org-admin", "sam", "", "/organizations/acme/audit", 403,
     "reading audit needs one of the roles org-owner, org-admin"),
]


@pytest.mark.parametrize(("reason", "caller", "grants", "path", "status", "text"), READS,
                         ids=[r[0] for r in READS])
def test_reads_are_decided_by_membership_and_token_roles(api, reason, caller, grants, path, status, text):
    answer = api.get(f"/api/v1{path}", headers=as_(caller, grants))
    assert answer.status_code == status, (reason, answer.text)
    assert text in answer.text, reason


def test_credentials_are_decrypted_and_never_cached(api):
    answer = api.get(f"/api/v1/services/{SERVICE}/credentials", headers=as_("olivia"))
    assert answer.json() == {**SECRET, "key_prefix": None}
    assert answer.headers["Cache-Control"] == "no-store"


def test_quotas_show_the_default_or_the_set_quota_and_usage_per_engine_and_pop(api):
    acme = api.get("/api/v1/organizations/acme/quotas", headers=as_("adam")).json()
    assert acme["default"] is True and acme["quota"]["max_services"] == 25
    assert acme["usage"] == {
        "services": 4, "total": {"cpu": 5.5, "memory_gb": 11, "storage_gb": 50},
        "engines": {"vitess": {"cpu": 5.0, "memory_gb": 10, "storage_gb": 50},
                    "dragonfly": {"cpu": 0.5, "memory_gb": 1, "storage_gb": 0}},
        "pops": {"lagos": {"cpu": 4.5, "memory_gb": 9, "storage_gb": 40},
                 "frankfurt": {"cpu": 1.0, "memory_gb": 2, "storage_gb": 10}}}
    globex = api.get("/api/v1/organizations/globex/quotas", headers=as_("gus")).json()
    assert globex["default"] is False
    assert globex["quota"] == {"max_services": 3, "total": {"cpu": 8.0, "memory_gb": 16, "storage_gb": 100},
                               "engines": {}, "pops": {}}
    assert globex["usage"]["services"] == 0


def test_me_joins_memberships_and_token_grants(api):
    me = api.get("/api/v1/users/me", headers=as_("gus", "acme=service-viewer")).json()
    assert me["organizations"] == [{"organization": "acme", "roles": ["service-viewer"]},
                                   {"organization": "globex", "roles": ["org-owner"]}]


def test_users_are_the_members_of_the_callers_organizations_only(api):
    users = api.get("/api/v1/users", headers=as_("gus")).json()
    assert users == [{"subject": "gus", "issuer": ISS,
                      "organizations": [{"organization": "globex", "roles": ["org-owner"]}]}]


SERVICE_BODY = {"org": "acme", "name": "db1", "engine": "vitess", "pop": "lagos"}
WRITES = [
    # (reason, caller, grants, method, path, body, status, text)
    ("a service-admin creates a service", "sam", "", "POST", "/services", SERVICE_BODY, 202, "operation_id"),
    ("a service-viewer may not", "vera", "", "POST", "/services", SERVICE_BODY, 403,
     "CreateService needs one of the roles org-owner, org-admin, service-admin"),
    ("a stranger is told the organization is not among theirs", "eve", "", "POST", "/services", SERVICE_BODY,
     404, "no organization acme among yours"),
    ("a token-granted org-admin creates a service", "eve", "acme=org-admin", "POST", "/services",
     SERVICE_BODY, 202, "operation_id"),
    ("a stranger cannot delete another organization's service", "olivia", "", "DELETE",
     f"/services/{OTHER_SERVICE}", None, 404, f"no service {OTHER_SERVICE}"),
    ("an org-member may not scale", "mia", "", "POST", f"/services/{SERVICE}/scale", {"replicas": 3}, 403,
     "ScaleService needs one of the roles"),
    ("an unknown operation cannot be cancelled", "olivia", "", "POST", f"/operations/{uuid.uuid4()}/cancel",
     None, 404, "no operation"),
    ("an org-admin may not set quotas", "adam", "", "PUT", "/organizations/acme/quotas",
     {"max_services": 1, "total": {"cpu": 1, "memory_gb": 1, "storage_gb": 1}}, 403,
     "SetQuota needs one of the roles org-owner"),
    ("an org-member may not add members", "mia", "", "POST", "/organizations/acme/members",
     {"subject": "zoe", "role": "org-member"}, 403, "AddMember needs one of the roles org-owner, org-admin"),
    ("anyone signed in may create an organization", "eve", "", "POST", "/organizations", {"slug": "evecorp"},
     202, "operation_id"),
]


@pytest.mark.parametrize(("reason", "caller", "grants", "method", "path", "body", "status", "text"), WRITES,
                         ids=[w[0] for w in WRITES])
def test_writes_publish_only_what_the_caller_may_do(api, reason, caller, grants, method, path, body, status,
                                                    text):
    answer = api.request(method, f"/api/v1{path}", json=body, headers=as_(caller, grants))
    assert answer.status_code == status, (reason, answer.text)
    assert text in answer.text, reason
    assert len(api.publisher.published) == (1 if status == 202 else 0), reason


def test_the_published_command_carries_the_caller_and_its_token_roles(api):
    api.post("/api/v1/services", json=SERVICE_BODY, headers=as_("eve", "acme=org-admin"))
    [envelope] = api.publisher.published
    assert envelope.tenant_id == "acme" and envelope.actor.subject == who("eve")
    assert envelope.actor.roles == ("org-admin",)


def test_an_idempotency_key_reused_with_another_body_is_409_and_publishes_nothing(api, reads):
    key = str(uuid.uuid4())
    reads.operations[commands.operation_id("acme", key)] = ("acme", "fingerprint-of-another-body")
    answer = api.post("/api/v1/services", json=SERVICE_BODY, headers={**as_("sam"), "Idempotency-Key": key})
    assert answer.status_code == 409 and "already used for a different request" in answer.text
    assert api.publisher.published == []


@pytest.mark.parametrize(("failure", "status", "text"), [
    (ReadModelUnavailable("connection refused"), 503, "the read models' database is unavailable"),
    (ReadModelRefused("invalid byte sequence"), 422, "a value the database cannot store: invalid byte sequence"),
], ids=["database down: 503 with Retry-After", "a value refused: 422"])
@pytest.mark.parametrize("method, path, body", [
    ("GET", "/organizations/acme/quotas", None), ("GET", "/users/me", None),
    ("GET", f"/services/{SERVICE}/credentials", None), ("POST", "/services", SERVICE_BODY),
    ("POST", "/organizations", {"slug": "newco"}),
])
def test_read_port_failures_answer_503_or_422_never_500(api, reads, failure, status, text, method, path, body):
    reads.failing = failure
    answer = api.request(method, f"/api/v1{path}", json=body, headers=as_("olivia"))
    assert answer.status_code == status, answer.text
    assert text in answer.json()["detail"]
    if status == 503:
        assert int(answer.headers["Retry-After"]) >= 1
    assert api.publisher.published == []


def test_the_sql_read_port_reports_a_database_it_cannot_reach_as_unavailable():
    import socket

    from projections.reads import SqlReadModel

    with socket.socket() as s:  # bound, never listening: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = SqlReadModel.connect(f"postgresql://dbaas:x@127.0.0.1:{s.getsockname()[1]}/dbaas")
        try:
            with pytest.raises(ReadModelUnavailable):
                port.member_role("acme", who("olivia"))
        finally:
            port.close()
