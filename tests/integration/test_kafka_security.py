"""The platform's broker is secured for real: SASL/SCRAM-SHA-512 only, the KRaft StandardAuthorizer,
and each platform process a principal allowed what it uses and nothing more."""
from __future__ import annotations

import os
import stat
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from deploy.stack import kafka_security
from tests.conftest import wait_for


def _quiet(conf: dict) -> dict:
    return {**conf, "log_level": 0, "socket.timeout.ms": 5000}


def _produce_error(access, topic: str) -> int | None:
    """The error code of producing one record to `topic` as `access` (None: it was written)."""
    producer = Producer(access.client(**{"acks": "all", "message.timeout.ms": 10000, "log_level": 0}))
    outcome: list = []
    producer.produce(topic, key=b"probe", value=b"probe", on_delivery=lambda err, _m: outcome.append(err))
    producer.flush(20)
    assert outcome, "the producer never reported on the record"
    return outcome[0].code() if outcome[0] is not None else None


def _describe_error(access, topic: str) -> int | None:
    """The error the broker answers `access` about `topic`'s metadata (None: it may see it)."""
    meta = AdminClient(_quiet(access.client())).list_topics(topic, timeout=10).topics[topic]
    return meta.error.code() if meta.error is not None else None


def _group_error(access, group: str, topic: str) -> int | None:
    """The error of reading `group`'s committed offset of `topic` as `access` (None: allowed)."""
    consumer = Consumer(access.client(**{"group.id": group, "log_level": 0, "enable.auto.commit": False}))
    try:
        consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return None
    except KafkaException as exc:
        return exc.args[0].code()
    finally:
        consumer.close()


def test_a_client_without_credentials_is_refused(stack):
    anonymous = AdminClient(_quiet({"bootstrap.servers": stack.kafka.bootstrap}))
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=5)
    wrong = AdminClient(_quiet(stack.kafka.as_user("dbaas-projector", "not-its-password").client()))
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=5)
    # the controller listener answers no client either
    controller = AdminClient(_quiet({"bootstrap.servers": f"127.0.0.1:{stack.status['ports']['controller']}"}))
    with pytest.raises(KafkaException):
        controller.list_topics(timeout=5)
    # the administrator's credentials work (the test suite's own clients use them)
    assert "dbaas.commands" in AdminClient(stack.kafka.client()).list_topics(timeout=10).topics


@pytest.mark.parametrize("process", ["projector", "audit", "localpop-agent", "alerts", "connect", "command-processor"])
def test_only_the_gateway_and_system_principals_write_commands(stack, process):
    assert _produce_error(stack.kafka_as(process), "dbaas.commands") == KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.mark.parametrize("process", ["api", "saga", "projector", "scheduler", "audit", "alerts"])
def test_only_the_command_processor_writes_events(stack, process):
    assert _produce_error(stack.kafka_as(process), "dbaas.events") == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_principals_allowed_do_write(stack):
    # the saga's system commands land on dbaas.commands (an unsigned probe is dead-lettered by the
    # processor, harmlessly); the command processor's principal may write the event log's DLQ twin
    assert _produce_error(stack.kafka_as("saga"), "dbaas.commands.dlq") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _produce_error(stack.kafka_as("command-processor"), "dbaas.commands.dlq") is None


def test_a_process_sees_only_its_own_topics_and_groups(stack):
    tenant_topic = f"dbaas.audit.sec-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(stack.kafka.client())  # kept alive until the topic exists
    admin.create_topics([NewTopic(tenant_topic, 1, 1)])[tenant_topic].result()
    denied = KafkaError.TOPIC_AUTHORIZATION_FAILED
    # the local PoP agent reads no event; the projector no audit topic; the gateway no PoP report
    assert _describe_error(stack.kafka_as("localpop-agent"), "dbaas.events") == denied
    assert _describe_error(stack.kafka_as("projector"), tenant_topic) == denied
    assert _describe_error(stack.kafka_as("api"), "dbaas.pop.status") == denied
    # … while what each reads, it sees
    assert _describe_error(stack.kafka_as("projector"), "dbaas.events") is None
    assert _describe_error(stack.kafka_as("api"), tenant_topic) is None
    # a consumer group is a process's own only under its prefix
    assert _group_error(stack.kafka_as("projector"), "dbaas-projections-probe", "dbaas.events") is None
    # (the broker refuses to find another's group coordinator; librdkafka asks again until it gives up)
    assert _group_error(stack.kafka_as("projector"), "dbaas-command-processor", "dbaas.events") in (
        KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError._TIMED_OUT)


def test_the_broker_holds_the_platform_acls_and_nothing_wider(stack):
    admin = AdminClient(stack.kafka.client())
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    bindings = admin.describe_acls(everything, request_timeout=30).result()
    platform = {kafka_security.principal(p) for p in kafka_security.PLATFORM_ACLS}
    have = {(b.principal, b.restype, b.name, b.resource_pattern_type, b.operation)
            for b in bindings if b.principal.removeprefix("User:") in platform}
    want = {(b.principal, b.restype, b.name, b.resource_pattern_type, b.operation)
            for process, grants in kafka_security.PLATFORM_ACLS.items()
            for b in kafka_security.acl_bindings(kafka_security.principal(process), grants)}
    assert have == want
    assert not [b for b in bindings if b.operation == AclOperation.ALL or b.principal == "User:*"]


def test_instance_secrets_and_broker_files_are_private(stack):
    for path in (stack.home / "secrets.json", stack.home / "kafka" / "server.properties",
                 stack.home / "connect" / "worker.properties"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_broker_formatted_before_it_was_secured_keeps_its_data(tmp_path, stack):
    """An instance whose broker was formatted without SCRAM credentials (before the platform was
    secured): `up` gives it its administrator credential and secures it, and its topics stay."""
    import subprocess

    from deploy.stack import config as stack_config
    from deploy.stack.artifacts import ensure
    from deploy.stack.base import Context
    from deploy.stack.components import Kafka, _java, kafka_access
    from deploy.stack.launcher import Launcher

    offset = stack.kafka.bootstrap.rsplit(":", 1)[1]
    cfg = stack_config.resolve(tmp_path / "old", port_offset=int(offset) - 19092 + 250)
    kafka = Kafka()
    launcher = Launcher(cfg, say=lambda _m: None, components=[kafka])
    ctx: Context = launcher.ctx
    base = cfg.home / "kafka"
    base.mkdir(parents=True)
    (base / "log4j2.properties").write_text("rootLogger.level = WARN\n")
    old = base / "server.properties"
    old.write_text(kafka._properties(ctx, secured=False))  # what the launcher wrote before
    cp = ensure(cfg.cache, lambda _m: None).kafka_classpath
    subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "--standalone", "-t",
                    "q1Sh-9_ISia_zwGINzRvyQ", "-c", str(old)], check=True, capture_output=True)
    broker = subprocess.Popen(_java("384m", "-cp", cp, "kafka.Kafka", str(old)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    plain = f"127.0.0.1:{cfg.port('kafka')}"
    try:
        admin = AdminClient({"bootstrap.servers": plain, "log_level": 0})

        def created() -> bool:
            try:
                admin.create_topics([NewTopic("legacy.topic", 1, 1)])["legacy.topic"].result()
                return True
            except KafkaException:
                return False
        wait_for(created, timeout=120, interval=1, what="the unsecured broker to take a topic")
        producer = Producer({"bootstrap.servers": plain})
        producer.produce("legacy.topic", value=b"kept")
        assert producer.flush(30) == 0
    finally:
        broker.terminate()
        broker.wait(120)
    try:
        launcher.up(timeout=180)
        secured = kafka_access(ctx)
        consumer = Consumer(secured.client(**{"group.id": "legacy", "auto.offset.reset": "earliest"}))
        consumer.assign([TopicPartition("legacy.topic", 0, 0)])
        msg = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        consumer.close()
        assert msg is not None and msg.value() == b"kept"
        with pytest.raises(KafkaException):  # and it is secured now
            AdminClient(_quiet({"bootstrap.servers": plain})).list_topics(timeout=5)
    finally:
        launcher.down()
