"""Helpers for tests that drive the command processor on topics of their own."""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import events
from commands import Actor, CommandEnvelope
from processors.command_processor import CommandProcessor
from processors.settings import ProcessorSettings
from runtime.kafka import KafkaAccess
from runtime.publisher import Publisher
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

OWNER = Actor("alice", ("org-owner",))


@dataclass
class Topics:
    commands: str
    events: str
    dlq: str
    partitions: int = 3

    @classmethod
    def create(cls, kafka: KafkaAccess, partitions: int = 3) -> "Topics":
        run = uuid.uuid4().hex[:10]
        t = cls(f"test.commands.{run}", f"test.events.{run}", f"test.commands.{run}.dlq", partitions)
        admin = AdminClient(kafka.client())
        for fut in admin.create_topics([NewTopic(n, partitions, 1) for n in (t.commands, t.events, t.dlq)]).values():
            fut.result()
        return t

    def settings(self, stack, **kw) -> ProcessorSettings:
        return ProcessorSettings(kafka=stack.kafka, registry_url=stack.registry, keyring=stack.keyring,
                                 commands_topic=self.commands,
                                 events_topic=self.events, dlq_topic=self.dlq,
                                 group_id=f"group-{self.commands}", transactional_id=f"txn-{self.commands}", **kw)


def command(tenant: str, payload, command_id: str | None = None, actor: Actor = OWNER) -> CommandEnvelope:
    return CommandEnvelope(command_id=command_id or str(uuid.uuid4()), tenant_id=tenant, actor=actor,
                           issued_at=datetime.now(timezone.utc), correlation_id=str(uuid.uuid4()),
                           payload=payload)


@dataclass
class RunningProcessor:
    processor: CommandProcessor
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> "RunningProcessor":
        def target():
            try:
                self.processor.run(self.stop)
            except BaseException as exc:  # surfaced by close()
                self.error = exc
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the processor did not stop"
        if self.error:
            raise self.error


def publisher(stack, topics: Topics, holder: str = "gateway") -> Publisher:
    return stack.publisher(topics.commands, holder)


def read_events(stack, topic: str, partitions: int) -> list[events.Envelope]:
    """Every committed event on ``topic`` (read_committed, from the beginning to the end)."""
    serde = Serde(Registry(stack.registry), EVENTS_SUBJECT)
    consumer = Consumer({**stack.kafka.client(), "group.id": "reader", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, eof = [], set()
    while len(eof) < partitions:
        for msg in consumer.consume(500, timeout=1.0):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                    continue
                raise RuntimeError(msg.error())
            eof.discard(msg.partition())
            out.append(events.from_avro(serde.decode(msg.value())))
    consumer.close()
    return out


def events_until(stack, topics: Topics, predicate, what: str) -> list[events.Envelope]:
    """Every event on `topics.events`, once `predicate` holds for them."""
    from tests.conftest import wait_for

    return wait_for(lambda: (lambda evs: evs if predicate(evs) else None)(
        read_events(stack, topics.events, topics.partitions)), timeout=60, what=what)


def by_command(evs: list[events.Envelope], command_id: str) -> list[events.Envelope]:
    return [e for e in evs if e.command_id == command_id]


def event_record(tenant: str) -> dict:
    """An event envelope record: valid Avro, but an event, not a command."""
    env = events.Envelope(event_id=str(uuid.uuid4()), tenant_id=tenant, aggregate_type="organization",
                          aggregate_id=tenant, sequence=1, occurred_at=datetime.now(timezone.utc),
                          command_id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()), causation_id=None,
                          payload=events.OrganizationCreated(tenant, tenant, "mallory"))
    return events.to_avro(env)
