"""Tenant subscriptions on the real broker: a plain confluent-kafka client with a subscription's
credentials reads its organization's streams and nothing else, is refused once revoked, and its
password appears nowhere but in the one answer that created it."""
from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from commands import CommandEnvelope, CreateSubscription, operation_id
from commands.records import Actor
from events import SubscriptionRequested
from runtime.kafka import KafkaAccess
from tests.conftest import wait_for
from tests.integration.conftest import operation
from tests.integration.kafka_support import read_events

DENIED = KafkaError.TOPIC_AUTHORIZATION_FAILED


def _new_org(api) -> str:
    slug = f"org-{uuid.uuid4().hex[:8]}"
    assert api.post("/organizations", json={"slug": slug}).status_code == 202
    wait_for(lambda: api.get(f"/organizations/{slug}/quotas").status_code == 200, what="the organization")
    return slug


def _quiet(conf: dict) -> dict:
    return {**conf, "log_level": 0, "socket.timeout.ms": 5000}


def _describe_error(access: KafkaAccess, topic: str) -> int | None:
    meta = AdminClient(_quiet(access.client())).list_topics(topic, timeout=10).topics[topic]
    return meta.error.code() if meta.error is not None else None


def _produce_error(access: KafkaAccess, topic: str) -> int | None:
    producer = Producer(access.client(**{"message.timeout.ms": 10000, "log_level": 0}))
    outcome: list = []
    producer.produce(topic, value=b"probe", on_delivery=lambda err, _m: outcome.append(err))
    producer.flush(20)
    return outcome[0].code() if outcome and outcome[0] is not None else None


def _topic(stack, name: str) -> None:
    admin = AdminClient(stack.kafka.client())
    try:
        admin.create_topics([NewTopic(name, 1, 1)])[name].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def _read(consumer: Consumer, want: dict[str, int], timeout: float = 60) -> dict[str, list[bytes]]:
    got: dict[str, list[bytes]] = {t: [] for t in want}

    def enough():
        for msg in consumer.consume(100, timeout=0.5):
            assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            if msg.error() is None:
                got[msg.topic()].append(msg.value())
        return all(len(got[t]) >= n for t, n in want.items())
    wait_for(enough, timeout=timeout, what=f"records on {', '.join(want)}")
    return got


def test_a_subscription_reads_its_own_streams_only_until_revoked(stack, api, org):
    other = _new_org(api)
    created = api.post(f"/organizations/{org}/subscriptions", json={"name": "analytics"})
    assert created.status_code == 202, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    client = body["client"]
    password = client["sasl_password"]
    assert client["sasl_username"] == f"sub.{org}.analytics" and client["group_id_prefix"] == f"sub.{org}.analytics."
    assert client["security_protocol"] == "SASL_PLAINTEXT" and client["sasl_mechanism"] == "SCRAM-SHA-512"
    assert f"dbaas.audit.{org}" in client["topics"] and f"dbaas.cdc.yugabyte.{org}.*" in client["topics"]
    done = operation(api, body["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed"), "the grant")
    assert done["state"] == "Succeeded", done
    listed = api.get(f"/organizations/{org}/subscriptions").json()
    assert [(s["name"], s["status"]) for s in listed] == [("analytics", "Active")]

    # the platform writes its change data capture record; the tenant reads it and its audit trail
    cdc = f"dbaas.cdc.yugabyte.{org}.orders"
    _topic(stack, cdc)
    producer = Producer(stack.kafka.client())
    producer.produce(cdc, key=b"1", value=b'{"op": "c", "after": {"id": 1}}')
    assert producer.flush(30) == 0
    wait_for(lambda: f"dbaas.audit.{org}" in AdminClient(stack.kafka.client()).list_topics(timeout=10).topics,
             what="the organization's audit topic")
    access = KafkaAccess(client["bootstrap_servers"], client["sasl_username"], password)
    consumer = Consumer(access.client(**{"group.id": client["group_id_prefix"] + "reader",
                                         "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([f"dbaas.audit.{org}", cdc])
    try:
        got = _read(consumer, {f"dbaas.audit.{org}": 1, cdc: 1})
        assert got[cdc] == [b'{"op": "c", "after": {"id": 1}}']

        # … and nothing else: another tenant's topics, the command and event topics
        _topic(stack, f"dbaas.cdc.yugabyte.{other}.orders")
        wait_for(lambda: f"dbaas.audit.{other}" in AdminClient(stack.kafka.client()).list_topics(timeout=10).topics,
                 what="the other organization's audit topic")
        for topic in (f"dbaas.audit.{other}", f"dbaas.cdc.yugabyte.{other}.orders", "dbaas.commands", "dbaas.events"):
            assert _describe_error(access, topic) == DENIED, topic
        assert _produce_error(access, "dbaas.commands") == DENIED
        assert _produce_error(access, f"dbaas.audit.{org}") == DENIED  # read only, even its own

        # members list it; only owners and admins create or revoke
        member = httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth("bob", {org: ["org-member"]}),
                              timeout=30)
        assert [s["name"] for s in member.get(f"/organizations/{org}/subscriptions").json()] == ["analytics"]
        assert member.post(f"/organizations/{org}/subscriptions", json={"name": "mine"}).status_code == 403
        assert member.delete(f"/organizations/{org}/subscriptions/{body['subscription_id']}").status_code == 403

        # revoked: the connected client is refused from its next request, and cannot sign in again
        revoked = api.delete(f"/organizations/{org}/subscriptions/{body['subscription_id']}")
        assert revoked.status_code == 202
        done = operation(api, revoked.json()["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed"),
                         "the revocation")
        assert done["state"] == "Succeeded", done
        refusals = {DENIED, KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError._AUTHENTICATION,
                    KafkaError.SASL_AUTHENTICATION_FAILED}

        def refused():
            return any(msg.error() is not None and msg.error().code() in refusals
                       for msg in consumer.consume(100, timeout=0.5))
        # its next request is refused (a fetch the broker authorized before the revocation may still
        # be waiting for records: up to the broker's fetch wait, half a second)
        wait_for(refused, timeout=60, what="the connected consumer to be refused")
        producer.produce(cdc, key=b"2", value=b"after the revocation")
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 5  # a window in which a still-authorized client would read it
        while time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                assert msg.error() is not None or msg.value() != b"after the revocation", "read after revocation"
    finally:
        consumer.close()
    with pytest.raises(KafkaException):
        AdminClient(_quiet(access.client())).list_topics(timeout=5)
    assert [s["status"] for s in api.get(f"/organizations/{org}/subscriptions").json()] == ["Revoked"]

    # the password is nowhere: not in the event log, the audit topic, the read models, the logs or git
    _nowhere(stack, org, password)


def _nowhere(stack, org: str, password: str) -> None:
    secret = password.encode()
    reader = Consumer(stack.kafka.client(**{"group.id": f"scan-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                                            "enable.partition.eof": True, "enable.auto.commit": False}))
    for topic in ("dbaas.events", "dbaas.commands", f"dbaas.audit.{org}"):
        parts = AdminClient(stack.kafka.client()).list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, 0) for p in parts])
        eof: set[int] = set()
        while len(eof) < len(parts):
            for msg in reader.consume(500, timeout=1.0):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition())
                        continue
                    raise KafkaException(msg.error())
                assert secret not in (msg.value() or b"") + b"".join(v or b"" for _, v in (msg.headers() or [])), topic
    reader.close()
    with psycopg.connect(stack.postgres_dsn) as conn:
        for table in ("subscriptions", "operations", "organizations", "members"):
            dump = conn.execute(f"select coalesce(string_agg(t::text, ''), '') from {table} t").fetchone()[0]
            assert password not in dump, table
    for log in (stack.home / "logs").glob("*.log"):
        assert secret not in log.read_bytes(), log
    history = subprocess.run(["git", "--git-dir", str(stack.home / "gitops.git"), "log", "-p", "--all"],
                             capture_output=True, check=True).stdout
    assert secret not in history
    repo = subprocess.run(["git", "grep", "-I", "--fixed-strings", password], capture_output=True, text=True, check=False)
    assert repo.returncode == 1, repo.stdout  # nothing in the project's own files either


def test_a_password_sealed_for_another_subscription_is_refused(stack, api, org):
    """A sealed password copied into another subscription's command does not open there: the grant
    fails with the reason and nothing is created on the broker."""
    first = api.post(f"/organizations/{org}/subscriptions", json={"name": "first"}).json()
    operation(api, first["operation_id"], lambda o: o["state"] == "Succeeded", "the first grant")
    events = _subscription_requested(stack, org)
    sealed = events[first["subscription_id"]]
    # a publisher with the gateway's key, replaying the sealed value under a new subscription id
    pub = stack.publisher()
    command_id, new_id = str(uuid.uuid4()), str(uuid.uuid4())
    pub.publish(CommandEnvelope(command_id, org, Actor(stack.principal("alice"), ("org-owner",)),
                                datetime.now(UTC), str(uuid.uuid4()),
                                CreateSubscription(new_id, "copied", sealed)))
    pub.close()
    failed = operation(api, operation_id(org, command_id), lambda o: o["state"] in ("Succeeded", "Failed"),
                       "the copied grant")
    assert failed["state"] == "Failed" and "does not open" in failed["message"], failed
    status = {s["name"]: s["status"] for s in api.get(f"/organizations/{org}/subscriptions").json()}
    assert status == {"first": "Active", "copied": "Failed"}
    admin = AdminClient(stack.kafka.client())  # kept alive until it answers
    described = admin.describe_user_scram_credentials(request_timeout=30).result()
    assert f"sub.{org}.copied" not in described and f"sub.{org}.first" in described


def _subscription_requested(stack, org: str) -> dict[str, str]:
    """subscription id -> its sealed password, from the event log."""
    parts = len(AdminClient(stack.kafka.client()).list_topics("dbaas.events", timeout=10).topics["dbaas.events"]
                .partitions)
    return {e.payload.subscription_id: e.payload.sealed_password for e in read_events(stack, "dbaas.events", parts)
            if e.tenant_id == org and isinstance(e.payload, SubscriptionRequested)}


def test_the_cli_prints_a_configuration_a_plain_client_connects_with(stack, org):
    created = stack.dbaas("subscription", "create", "dashboards", "--org", org)
    assert created.returncode == 0, created.stderr
    conf = dict(line.split("=", 1) for line in created.stdout.splitlines() if line and not line.startswith("#"))
    assert conf["sasl.username"] == f"sub.{org}.dashboards" and conf["group.id"].startswith(f"sub.{org}.dashboards.")
    assert f"dbaas.audit.{org}" in created.stdout and f"dbaas.cdc.vitess.{org}.*" in created.stdout
    wait_for(lambda: f"dbaas.audit.{org}" in AdminClient(stack.kafka.client()).list_topics(timeout=10).topics,
             what="the organization's audit topic")
    consumer = Consumer({**conf, "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 0})
    consumer.subscribe([f"dbaas.audit.{org}"])
    try:
        _read(consumer, {f"dbaas.audit.{org}": 1})
    finally:
        consumer.close()
    listed = stack.dbaas("subscription", "list", "--org", org)
    assert "dashboards" in listed.stdout and "Active" in listed.stdout and conf["sasl.password"] not in listed.stdout
    revoked = stack.dbaas("subscription", "revoke", "dashboards", "--org", org)
    assert revoked.returncode == 0 and "Succeeded" in revoked.stdout, revoked.stdout + revoked.stderr
    with pytest.raises(KafkaException):
        AdminClient(_quiet({k: v for k, v in conf.items() if k != "group.id"})).list_topics(timeout=5)
