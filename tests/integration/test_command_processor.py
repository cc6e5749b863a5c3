"""The command processor on a real broker and registry: commands become events in Kafka
transactions; idempotency, rejections and dead-lettering."""
from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer

from commands import Actor, CreateOrganization, CreateService, DeleteService, ScaleService
from events import CommandRejected, OperationAccepted, OrganizationCreated, ServiceRequested
from processors.command_processor import CommandProcessor
from tests.conftest import wait_for
from tests.integration.kafka_support import (
    RunningProcessor,
    Topics,
    by_command,
    command,
    events_until,
    publisher,
)


def test_commands_become_events_with_gap_free_sequences(lane):
    stack, topics, pub = lane
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    org = command(tenant, CreateOrganization(tenant, "Acme"))
    sid = str(uuid.uuid4())
    svc = command(tenant, CreateService(sid, "orders", "yugabyte", "frankfurt", "medium"))
    scale = command(tenant, ScaleService(sid, replicas=5))
    for c in (org, svc, scale):
        pub.publish(c)
    evs = events_until(stack, topics, lambda e: len(by_command(e, scale.command_id)) >= 2, "scale events")
    mine = [e for e in evs if e.tenant_id == tenant]
    kinds = [type(e.payload).__name__ for e in mine]
    # The scale queues behind the create (no PoP reports here), so it starts no operation yet.
    assert kinds == ["OrganizationCreated", "OperationAccepted", "ServiceRequested", "OperationAccepted",
                     "OperationStarted", "ServiceScaleRequested", "OperationAccepted"], kinds
    service_events = [e for e in mine if e.aggregate_type == "service"]
    assert [e.sequence for e in service_events] == [1, 2, 3]
    requested = next(e.payload for e in mine if isinstance(e.payload, ServiceRequested))
    assert (requested.resources.cpu, requested.resources.replicas) == (2, 3)
    assert all(e.actor_subject == "alice" and e.correlation_id for e in mine)
    assert len({e.event_id for e in mine}) == len(mine)


def test_repeated_command_id_is_judged_once_and_reuse_with_other_payload_is_a_conflict(lane):
    stack, topics, pub = lane
    tenant = f"idem-{uuid.uuid4().hex[:6]}"
    org = command(tenant, CreateOrganization(tenant, "Idem"))
    pub.publish(org)
    pub.publish(org)  # same id, same payload
    clash = command(tenant, CreateOrganization(tenant, "Another name"), command_id=org.command_id)
    pub.publish(clash)
    marker = command(tenant, DeleteService(str(uuid.uuid4())))  # not_found, but proves ordering
    pub.publish(marker)
    evs = events_until(stack, topics, lambda e: by_command(e, marker.command_id), "the marker's rejection")
    for_org = by_command(evs, org.command_id)
    created = [e for e in for_org if isinstance(e.payload, OrganizationCreated)]
    conflicts = [e for e in for_org if isinstance(e.payload, CommandRejected)]
    assert len(created) == 1
    assert len(conflicts) == 1 and conflicts[0].payload.reason_code == "conflict"
    assert "different payload" in conflicts[0].payload.message or "already" in conflicts[0].payload.message


@pytest.mark.parametrize("payload, actor, reason, field", [
    (CreateService(str(uuid.uuid4()), "Bad_Name", "yugabyte", "frankfurt", "small"), None, "invalid", "name"),
    (CreateService(str(uuid.uuid4()), "db", "mysql", "frankfurt", "small"), None, "invalid", "engine"),
    (CreateService(str(uuid.uuid4()), "db", "scylla", "local", "small"), None, "unsupported", "pop"),
    (CreateService(str(uuid.uuid4()), "db", "yugabyte", "frankfurt", "small"),
     Actor("mallory", ("org-member",)), "forbidden", None),
], ids=["dns-name", "unknown-engine", "engine-not-in-pop", "member-cannot-create"])
def test_bad_commands_are_rejected_with_an_actionable_reason(lane, payload, actor, reason, field):
    stack, topics, pub = lane
    tenant = f"rej-{uuid.uuid4().hex[:6]}"
    pub.publish(command(tenant, CreateOrganization(tenant, "Rej")))
    bad = command(tenant, payload, actor=actor or Actor("alice", ("org-owner",)))
    pub.publish(bad)
    evs = events_until(stack, topics, lambda e: by_command(e, bad.command_id), "the rejection")
    (rejection,) = [e.payload for e in by_command(evs, bad.command_id)]
    assert isinstance(rejection, CommandRejected)
    assert rejection.reason_code == reason and rejection.field == field
    assert rejection.message and "Traceback" not in rejection.message
    if reason == "invalid" and field == "engine":
        assert "choose one of: yugabyte, vitess" in rejection.message


def test_poison_messages_are_dead_lettered_and_processing_goes_on(lane):
    stack, topics, pub = lane
    tenant = f"dlq-{uuid.uuid4().hex[:6]}"
    raw = Producer(stack.kafka.client())
    # a schema id no registry hands out (ids count up from 1; a long-lived registry may well know 7)
    unknown_id = b"\x00\x7f\xff\xff\xffgarbage"
    raw.produce(topics.commands, key=tenant.encode(), value=unknown_id)
    raw.produce(topics.commands, key=tenant.encode(), value=b"not avro at all")
    raw.flush(10)
    good = command(tenant, CreateOrganization(tenant, "After poison"))
    pub.publish(good)
    events_until(stack, topics, lambda e: by_command(e, good.command_id), "the good command's events")
    consumer = Consumer({**stack.kafka.client(), "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topics.dlq])
    dead = []
    wait_for(lambda: (dead.extend(m for m in [consumer.poll(0.5)] if m and not m.error()), len(dead) >= 2)[1],
             timeout=30, interval=0, what="two dead letters")
    consumer.close()
    reasons = sorted(dict(m.headers())["dbaas-error-reason"].decode() for m in dead)
    assert any("unknown schema id" in r for r in reasons), reasons
    assert any("magic byte" in r for r in reasons), reasons
    assert all(dict(m.headers())["dbaas-source-topic"].decode() == topics.commands for m in dead)
    assert {m.value() for m in dead} == {unknown_id, b"not avro at all"}


def test_state_is_rebuilt_from_the_log_after_a_restart(stack):
    topics = Topics.create(stack.kafka)
    tenant = f"restart-{uuid.uuid4().hex[:6]}"
    pub = publisher(stack, topics)
    first = RunningProcessor(CommandProcessor(topics.settings(stack))).start()
    pub.publish(command(tenant, CreateOrganization(tenant, "R")))
    sid = str(uuid.uuid4())
    create = command(tenant, CreateService(sid, "db", "vitess", "lagos", "small"))
    pub.publish(create)
    events_until(stack, topics, lambda e: by_command(e, create.command_id), "the create")
    first.close()
    second = RunningProcessor(CommandProcessor(topics.settings(stack))).start()
    try:
        dup = command(tenant, CreateService(str(uuid.uuid4()), "db", "vitess", "lagos", "small"))
        pub.publish(create)  # judged before the restart: no new events
        pub.publish(dup)     # a second live "db": the rebuilt state knows the first
        evs = events_until(stack, topics, lambda e: by_command(e, dup.command_id), "the duplicate's rejection")
        assert [type(e.payload) for e in by_command(evs, create.command_id)].count(OperationAccepted) == 1
        (rej,) = [e.payload for e in by_command(evs, dup.command_id)]
        assert isinstance(rej, CommandRejected) and rej.reason_code == "conflict" and rej.field == "name"
    finally:
        pub.close()
        second.close()


def test_malformed_oversized_and_wrongly_typed_commands_are_dead_lettered_without_disturbing_others(lane):
    stack, topics, pub = lane
    victim, bystander = f"dlq-{uuid.uuid4().hex[:6]}", f"calm-{uuid.uuid4().hex[:6]}"
    from schemas.registry import EVENTS_SUBJECT, Registry, Serde
    from tests.integration.kafka_support import event_record

    bystander_cmds = [command(bystander, CreateOrganization(bystander, "Calm"))] + [
        command(bystander, CreateService(str(uuid.uuid4()), f"db-{i}", "vitess", "lagos", "small")) for i in range(5)]
    raw = Producer(stack.kafka.client())
    huge = command(victim, CreateOrganization(victim, "x" * (80 * 1024)))
    wrong_type = Serde(Registry(stack.registry), EVENTS_SUBJECT).encode(event_record(victim))
    poison = [b"\x00\x00\x00\x00", wrong_type]
    for i, c in enumerate(bystander_cmds):
        pub.publish(c)
        if i < len(poison):
            raw.produce(topics.commands, key=victim.encode(), value=poison[i])
            raw.flush(10)
    pub.publish(huge)
    after = command(victim, CreateOrganization(victim, "After the poison"))
    pub.publish(after)

    evs = events_until(stack, topics, lambda e: by_command(e, after.command_id)
                        and all(by_command(e, c.command_id) for c in bystander_cmds), "every good command judged")
    for c in bystander_cmds:
        assert any(isinstance(e.payload, OperationAccepted) for e in by_command(evs, c.command_id))
    assert not by_command(evs, huge.command_id)
    consumer = Consumer({**stack.kafka.client(), "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topics.dlq])
    dead = []
    wait_for(lambda: (dead.extend(m for m in [consumer.poll(0.5)] if m and not m.error()), len(dead) >= 3)[1],
             timeout=30, interval=0, what="three dead letters")
    consumer.close()
    reasons = [dict(m.headers())["dbaas-error-reason"].decode() for m in dead]
    assert any("at most 65536 are accepted" in r for r in reasons), reasons
    assert len(reasons) == 3 and all(r for r in reasons)
    assert {m.key() for m in dead} == {victim.encode()}
