"""Nothing on the command topic is believed for being there: attacks through the real broker.

A command is judged only on the partition its key maps to (murmur2), only as far as the key that
signed it allows (gateway, platform, a registered publisher), and a PoP speaks only for its own
services. Operation ids are scoped to their organization, and the same subject from two issuers is
two people. Each test is an attack an outside publisher tried; each is refused, and nothing of the
victim changes.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import uuid
import zlib
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import fastavro
import httpx
import jwt
from confluent_kafka import Consumer, Producer
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commands import (
    Actor,
    AddMember,
    CreateOrganization,
    CreateService,
    RecordPopReport,
    SetQuota,
    operation_id,
    publisher_principal,
    refused_operation_id,
)
from commands.records import to_avro
from events import CommandRejected, MemberAdded, OperationAccepted, OrganizationCreated, Quota, ResourceLimit
from runtime.kafka import partition_for
from runtime.signing import Signer
from schemas.registry import COMMANDS_SUBJECT, Registry, Serde
from tests.conftest import SINGAPORE_TIMEOUT, wait_for
from tests.integration.conftest import operation
from tests.integration.kafka_support import by_command, command, events_until


def _dead_letters(stack, topic: str, count: int, match=lambda m: True) -> list:
    consumer = Consumer({**stack.kafka.client(), "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    dead: list = []
    try:
        wait_for(lambda: (dead.extend(m for m in [consumer.poll(0.5)] if m and not m.error() and match(m)),
                          len(dead) >= count)[1], timeout=60, interval=0, what=f"{count} dead letters on {topic}")
    finally:
        consumer.close()
    return dead


def _headers(msg) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers() or []}


def _signed(stack, topic: str, cmd, signer: Signer | None) -> tuple[bytes, bytes, list]:
    key, value = cmd.tenant_id.encode(), Serde(Registry(stack.registry), COMMANDS_SUBJECT).encode(to_avro(cmd))
    return key, value, signer.headers(topic, key, value) if signer else []


def _produce(stack, topic: str, key: bytes, value: bytes, headers: list, **kw) -> int:
    """Produce one message and return the partition it landed on."""
    landed: list[int] = []
    producer = Producer({**stack.kafka.client(), **kw.pop("config", {})})
    producer.produce(topic, key=key, value=value, headers=headers,
                     on_delivery=lambda err, msg: landed.append(msg.partition()) if err is None else None, **kw)
    assert producer.flush(30) == 0 and landed
    return landed[0]


def test_a_command_off_its_keys_partition_is_dead_lettered_and_forks_no_state(lane):
    """librdkafka's default partitioner (CRC32 of the key) puts a tenant's command on another
    partition than the platform's (murmur2): judged there, by a processor that never saw the tenant,
    a second CreateOrganization would be accepted and make the squatter its owner."""
    stack, topics, pub = lane
    victim = next(t for t in (f"victim-{uuid.uuid4().hex[:6]}" for _ in range(100))
                  if zlib.crc32(t.encode()) % topics.partitions != partition_for(t.encode(), topics.partitions))
    expected = partition_for(victim.encode(), topics.partitions)
    pub.publish(command(victim, CreateOrganization(victim, "Victim")))
    squatter = Actor(stack.principal("mallory"), ("org-owner",))
    gateway = stack.signer("gateway")  # even a correctly signed command is judged only on its partition
    by_default = command(victim, CreateOrganization(victim, "Squatted"), actor=squatter)
    explicit = command(victim, AddMember(stack.principal("mallory"), "org-owner"), actor=squatter)
    landed = _produce(stack, topics.commands, *_signed(stack, topics.commands, by_default, gateway))
    assert landed != expected, "the default partitioner and murmur2 agree on this key"
    wrong = (expected + 1) % topics.partitions
    _produce(stack, topics.commands, *_signed(stack, topics.commands, explicit, gateway), partition=wrong)
    after = command(victim, SetQuota(Quota(3, ResourceLimit(8, 16, 100))))
    pub.publish(after)

    evs = events_until(stack, topics, lambda e: by_command(e, after.command_id), "the victim's next command judged")
    assert not by_command(evs, by_default.command_id) and not by_command(evs, explicit.command_id)
    victims = [e.payload for e in evs if e.tenant_id == victim]
    assert [o.owner for o in victims if isinstance(o, OrganizationCreated)] == ["alice"], "no second creation"
    assert not [m for m in victims if isinstance(m, MemberAdded)], "nobody made a member"
    assert [type(e.payload) for e in by_command(evs, after.command_id)].count(OperationAccepted) == 1
    dead = _dead_letters(stack, topics.dlq, 2)
    by_id = {_headers(m)["dbaas-command-id"]: _headers(m) for m in dead}
    assert set(by_id) == {by_default.command_id, explicit.command_id}
    for headers in by_id.values():
        assert headers["dbaas-error-code"] == "wrong_partition"
        assert f"partition {expected}" in headers["dbaas-error-reason"], headers["dbaas-error-reason"]


def test_claimed_identity_is_believed_only_as_far_as_the_signing_key_allows(lane):
    stack, topics, pub = lane
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    pub.publish(command(victim, CreateOrganization(victim, "Victim")))
    stranger = Actor(stack.principal("mallory"), ("org-owner",))
    name = f"ci-{uuid.uuid4().hex[:6]}"
    added = json.loads(stack.cli("keys", "add-publisher", name, "--tenant", "elsewhere", "--role", "org-owner",
                                 "--home", str(stack.home), "--json").stdout)
    outsider = Signer.from_text(added["key_id"], added["private_key"])
    stranger_key = Signer.generate("nobody-registered-this")
    service = CreateService(str(uuid.uuid4()), "evil", "vitess", "lagos", "small")

    unsigned = command(victim, service, actor=stranger)
    unknown_key = command(victim, service, actor=stranger)
    tampered = command(victim, service, actor=stranger)
    other_tenant = command(victim, service, actor=Actor(publisher_principal(name), ("org-owner",)))
    platform_creates = command(victim, service, actor=Actor("system:saga", ("system",)))
    gateway_reports = command(victim, RecordPopReport(service.service_id, str(uuid.uuid4()), "lagos", "Ready",
                                                      "evil.example:5432", None), actor=Actor("x", ("system",)))
    attacks = {unsigned.command_id: "unauthenticated", unknown_key.command_id: "unauthenticated",
               tampered.command_id: "unauthenticated", other_tenant.command_id: "forbidden",
               platform_creates.command_id: "forbidden", gateway_reports.command_id: "forbidden"}
    topic = topics.commands
    _produce(stack, topic, *_signed(stack, topic, unsigned, None), config={"partitioner": "murmur2_random"})
    _produce(stack, topic, *_signed(stack, topic, unknown_key, stranger_key), config={"partitioner": "murmur2_random"})
    key, value, headers = _signed(stack, topic, tampered, stack.signer("gateway"))
    forged = Serde(Registry(stack.registry), COMMANDS_SUBJECT).encode(
        to_avro(command(victim, CreateService(service.service_id, "eviler", "vitess", "lagos", "small"),
                        command_id=tampered.command_id, actor=stranger)))
    _produce(stack, topic, key, forged, headers, config={"partitioner": "murmur2_random"})  # signature of another body
    _produce(stack, topic, *_signed(stack, topic, other_tenant, outsider), config={"partitioner": "murmur2_random"})
    for holder, forged_command in (("platform", platform_creates), ("gateway", gateway_reports)):
        signed_by = stack.publisher(topic, holder)
        try:
            signed_by.publish(forged_command)
        finally:
            signed_by.close()
    # The refusals do not take the command id: its rightful sender may still use it.
    rightful = command(victim, service, command_id=unsigned.command_id)
    pub.publish(rightful)

    evs = events_until(stack, topics, lambda e: all(by_command(e, c) for c in attacks)
                        and len(by_command(e, unsigned.command_id)) > 1, "every forged command judged")
    for command_id, code in attacks.items():
        rejections = [e.payload for e in by_command(evs, command_id) if isinstance(e.payload, CommandRejected)]
        assert rejections, command_id
        rejection = rejections[0]
        assert (rejection.reason_code, rejection.refused) == (code, True), rejection
        assert rejection.operation_id == refused_operation_id(victim, command_id, rejection.command_fingerprint)
    accepted = [e.payload for e in by_command(evs, unsigned.command_id) if isinstance(e.payload, OperationAccepted)]
    assert [a.operation_id for a in accepted] == [operation_id(victim, unsigned.command_id)]
    created = [e for e in evs if e.tenant_id == victim and e.aggregate_type == "service"]
    assert {e.command_id for e in created} == {unsigned.command_id}, "only the rightful create made a service"
    messages = {e.payload.message for e in evs if isinstance(e.payload, CommandRejected)}
    assert any("cannot be verified" in m for m in messages)
    assert any(f'publisher "{name}" may act only in the organizations it is registered for' in m for m in messages)
    assert any("reserved to the platform" in m for m in messages)


def _create(api, org: str, name: str, pop: str, **headers) -> dict:
    r = api.post("/services", json={"org": org, "name": name, "engine": "scylla", "pop": pop},
                 headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def test_a_pop_reports_only_on_its_own_services_and_only_with_its_key(stack, api, org):
    created = _create(api, org, "orders", "frankfurt")
    sid, op = created["service_id"], created["operation_id"]
    operation(api, op, lambda o: o["done_steps"] >= 2, "the create committed, awaiting frankfurt")

    # Unsigned, and signed by singapore's key while naming frankfurt: dead-lettered by the saga.
    record = {"report_id": str(uuid.uuid4()), "pop": "frankfurt", "tenant_id": org, "service_id": sid,
              "operation_id": op, "phase": "Ready", "endpoint": "evil.example:5432", "reason": None,
              "credentials": None, "observed_at": datetime.now(timezone.utc)}
    from schemas.registry import POP_STATUS_SUBJECT
    value = Serde(Registry(stack.registry), POP_STATUS_SUBJECT).encode(record)
    _produce(stack, "dbaas.pop.status", org.encode(), value, [])
    impostor = stack.pop_signer("singapore")
    _produce(stack, "dbaas.pop.status", org.encode(), value, impostor.headers("dbaas.pop.status", org.encode(), value))
    # Singapore speaking for itself about a frankfurt service: relayed, and refused by decide.
    stack.report("singapore", org, sid, op, "Ready", endpoint="evil.example:5432")
    stack.report("frankfurt", org, sid, op, "Ready", endpoint="orders.frankfurt.example:5432")

    done = operation(api, op, lambda o: o["state"] == "Succeeded", "the create succeeded on frankfurt's report")
    assert api.get(f"/services/{sid}").json()["status"] == "Ready"
    assert "evil" not in json.dumps(done)
    dead = _dead_letters(stack, "dbaas.pop.status.dlq", 2, match=lambda m: m.key() == org.encode())
    assert all(_headers(m)["dbaas-error-code"] == "unauthenticated" for m in dead)


def test_an_operation_id_reused_by_another_tenant_touches_nothing_of_the_first(stack, api, org):
    """Mallory reuses alice's Idempotency-Key (visible in every GitOps trailer) for a create in a PoP
    that never answers: her operation times out and is compensated; alice's stays as it was."""
    key = str(uuid.uuid4())
    victim = _create(api, org, "orders", "frankfurt", **{"Idempotency-Key": key})
    operation(api, victim["operation_id"], lambda o: o["done_steps"] >= 2, "alice's create committed")
    squatter = f"squatter-{uuid.uuid4().hex[:6]}"  # a caller of its own: other tests count mallory's services
    with httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(squatter), timeout=30) as mallory:
        theirs = f"squat-{uuid.uuid4().hex[:8]}"
        assert mallory.post("/organizations", json={"slug": theirs}).status_code == 202
        wait_for(lambda: mallory.get(f"/organizations/{theirs}/quotas").status_code == 200, what="mallory's org")
        attack = _create(mallory, theirs, "orders", "singapore", **{"Idempotency-Key": key})
        assert attack["operation_id"] != victim["operation_id"]
        failed = operation(mallory, attack["operation_id"],
                     lambda o: (o["compensation"] or {}).get("state") == "Done",
                     "mallory's create timed out and was compensated", timeout=SINGAPORE_TIMEOUT + 90)
        assert (failed["state"], failed["reason_code"]) == ("Failed", "timed_out"), failed

    mine = api.get(f"/operations/{victim['operation_id']}").json()
    assert (mine["state"], mine["done_steps"]) == ("Running", 2), mine
    remote = stack.gitops_remote.removeprefix("file://")
    tip = subprocess.run(["git", "--git-dir", remote, "ls-tree", "-r", "--name-only", "main", "--", f"tenants/{org}"],
                         capture_output=True, text=True, check=True).stdout
    assert tip.strip(), "alice's manifest is still committed"
    stack.report("frankfurt", org, victim["service_id"], victim["operation_id"], "Ready", endpoint="db:5432")
    operation(api, victim["operation_id"], lambda o: o["state"] == "Succeeded", "alice's create succeeded")


def test_a_development_token_never_acts_as_another_issuers_subject(stack, api, org):
    """A Keycloak-style issuer on loopback and the platform's development issuer: the same `sub`
    from both is two principals, and a membership granted to the Keycloak user is not the
    development token's."""
    from gateway.auth import Authenticator, Issuer
    from runtime import devissuer

    signing = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(signing.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "kc-1", "use": "sig", "alg": "ES256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    issuer = f"http://127.0.0.1:{server.server_address[1]}/realms/acme"
    user = str(uuid.uuid4())  # a Keycloak user id
    try:
        dev_key = json.loads((stack.home / "secrets.json").read_text())[devissuer.SECRET_NAME]
        auth = Authenticator([Issuer(issuer, "dbaas-api", jwks_uri=f"{issuer}/protocol/openid-connect/certs"),
                              Issuer.from_dict(devissuer.issuer_config(dev_key))])
        now = int(datetime.now(timezone.utc).timestamp())
        kc_token = jwt.encode({"iss": issuer, "aud": "dbaas-api", "sub": user, "iat": now, "exp": now + 300},
                              signing, algorithm="ES256", headers={"kid": "kc-1"})
        real, impostor = auth.verify(kc_token), auth.verify(stack.token(user))
        assert (real.subject, impostor.subject) == (user, user)
        assert real.principal == f"{issuer}#{user}" and impostor.principal != real.principal
    finally:
        server.shutdown()

    added = api.post(f"/organizations/{org}/members", json={"subject": user, "issuer": issuer, "role": "org-admin"})
    assert added.status_code == 202, added.text
    operation(api, added.json()["operation_id"], lambda o: o["state"] == "Succeeded", "the Keycloak user added")
    members = {(m["subject"], m.get("issuer")) for m in api.get(f"/organizations/{org}/members").json()}
    assert (user, issuer) in members
    with httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(user), timeout=30) as dev:
        assert dev.get("/services", params={"org": org}).status_code == 404
        assert dev.post("/services", json={"org": org, "name": "x", "engine": "vitess", "pop": "lagos"}
                        ).status_code == 404


def test_an_outside_publisher_following_the_readme_contract_is_accepted(stack, api, org):
    """No project code on the publishing side: fastavro, the registry's HTTP API, an Ed25519 key from
    `dbaas keys add-publisher`, and librdkafka's murmur2 partitioner, as the README says."""
    name = f"billing-{uuid.uuid4().hex[:6]}"
    added = json.loads(stack.cli("keys", "add-publisher", name, "--tenant", org, "--role", "service-admin",
                                 "--home", str(stack.home), "--json").stdout)
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(added["private_key"]))
    latest = httpx.get(f"{stack.registry}/subjects/dbaas.commands-value/versions/latest", timeout=30).json()
    schema = fastavro.parse_schema(json.loads(latest["schema"]))
    command_id, service_id = str(uuid.uuid4()), str(uuid.uuid4())
    record = {
        "command_id": command_id, "tenant_id": org,
        "actor": {"subject": f"urn:dbaas:publisher#{name}", "roles": []},
        "issued_at": int(datetime.now(timezone.utc).timestamp() * 1000),
        "correlation_id": str(uuid.uuid4()), "causation_id": None, "schema_version": 1,
        "payload": ("dbaas.v1.CreateService", {
            "service_id": service_id, "name": "from-billing", "engine": "vitess", "pop": "lagos", "size": "small",
            "engine_version": None, "cpu": None, "memory_gb": None, "storage_gb": None, "replicas": None,
            "deletion_protection": False, "labels": {}}),
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    value = b"\x00" + struct.pack(">I", latest["id"]) + body.getvalue()
    key = org.encode()
    signature = private.sign(b"dbaas.sig.v1\x00" + b"dbaas.commands" + b"\x00" + key + b"\x00" + value)
    headers = [("dbaas-key-id", added["key_id"].encode()), ("dbaas-signature", base64.b64encode(signature))]
    producer = Producer({**stack.kafka.client(), "partitioner": "murmur2_random", "acks": "all"})
    producer.produce("dbaas.commands", key=key, value=value, headers=headers)
    assert producer.flush(30) == 0

    scoped = str(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:operation"), f"{org}/{command_id}"))
    assert scoped == operation_id(org, command_id)
    op = operation(api, scoped, lambda o: o["state"] != "Accepted", "the publisher's command judged")
    assert op["state"] in ("Running", "Succeeded"), op
    service = api.get(f"/services/{service_id}").json()
    assert service["name"] == "from-billing"
