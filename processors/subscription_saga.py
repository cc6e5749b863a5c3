"""The subscription saga process (`python -m processors.subscription_saga`): the composition root
that builds the real ports — a reader of `dbaas.events`, the registry decoder, the Kafka Admin API
(`processors.subscription_access`), the opener of sealed passwords (its own X25519 key,
`runtime.sealing`), the signed command publisher — and runs the policy
(`processors.sagas.subscription`) with its runner (`processors.sagas.subscription_runner`).

It runs as its own Kafka principal, the only platform process allowed to change credentials and
ACLs (ALTER on the cluster), and holds the only key that opens subscription passwords.

May import: what it needs to talk to Kafka and the registry; the decisions stay in the policy.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

import events
from events import Envelope
from processors.sagas.subscription_runner import SubscriptionRunner
from processors.subscription_access import AccessError, KafkaTenantAccess
from runtime import kafka, sealing
from runtime.kafka import KafkaAccess, access_from_env
from runtime.publisher import Publisher
from runtime.settings import env, read
from runtime.signing import Signer
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

log = structlog.get_logger("subscriptions")


@dataclass(frozen=True)
class SubscriptionSettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    signer: Signer = env("DBAAS_SIGNING_KEY", compose=Signer.from_env, hint="the platform's key", repr=False)
    seal_key: str = env("DBAAS_SUBSCRIPTION_SEAL_KEY", repr=False, hint="the saga's X25519 private key")
    events_topic: str = env("DBAAS_EVENTS_TOPIC", "dbaas.events")
    commands_topic: str = env("DBAAS_COMMANDS_TOPIC", "dbaas.commands")
    group_id: str = env("DBAAS_SUBSCRIPTIONS_GROUP", "dbaas-subscriptions")  # names its readers; nothing committed
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)

    @classmethod
    def from_env(cls) -> SubscriptionSettings:
        return read(cls)


class EventLog:
    """The whole log at start, then what follows (assigned partitions, no group membership)."""

    def __init__(self, settings: SubscriptionSettings):
        self.settings = settings
        self.consumer: Consumer | None = None

    def replay(self) -> Iterator[Message]:
        reader = kafka.reader(self.settings.kafka, f"{self.settings.group_id}-replay")
        try:
            starts = kafka.whole_topic(reader, self.settings.events_topic)
            ends = {tp.partition: reader.get_watermark_offsets(tp, timeout=30)[1] for tp in starts}
            yield from kafka.read_to_end(reader, starts)
        finally:
            reader.close()
        self.consumer = Consumer(kafka.consumer_config(self.settings.kafka, f"{self.settings.group_id}-follow"))
        self.consumer.assign([TopicPartition(self.settings.events_topic, p, off) for p, off in ends.items()])

    def poll(self, timeout: float) -> list[Message]:
        assert self.consumer is not None, "replay first"
        return kafka.messages(self.consumer.consume(100, timeout=timeout))

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


class SerdeDecoder:
    def __init__(self, registry_url: str):
        self.events = Serde(Registry(registry_url), EVENTS_SUBJECT)

    def event(self, value: bytes | None) -> Envelope:
        return events.decode(self.events.decode, value)


class Opener:
    def __init__(self, private_key: str):
        self.private_key = private_key

    def open(self, sealed: str, context: bytes) -> bytes:
        return sealing.open_sealed(self.private_key, sealed, context)  # SealError is a ValueError


class PublishedCommands:
    def __init__(self, publisher: Publisher):
        self.publisher = publisher

    def send(self, command) -> None:
        self.publisher.publish(command)


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def transient(exc: BaseException) -> bool:
    """Broker calls worth trying again: timeouts and retriable errors (the broker restarting)."""
    cause = exc.__cause__ if isinstance(exc, AccessError) else exc
    if isinstance(cause, KafkaException) and cause.args:
        err = cause.args[0]
        return bool(getattr(err, "retriable", lambda: False)()) or "timed out" in str(err).lower()
    return False


def run(settings: SubscriptionSettings, stop: threading.Event) -> None:
    publisher = Publisher(settings.kafka, settings.registry_url, settings.commands_topic, signer=settings.signer)
    log_ = EventLog(settings)
    runner = SubscriptionRunner(events=log_, decoder=SerdeDecoder(settings.registry_url),
                                access=KafkaTenantAccess(AdminClient(kafka.admin_config(settings.kafka))),
                                opener=Opener(settings.seal_key), commands=PublishedCommands(publisher),
                                clock=WallClock(), is_transient=transient, sleep=lambda s: stop.wait(s) and None)
    try:
        runner.replay()
        log.info("started", pending=len(runner.state.pending))
        runner.loop(stop)
    finally:
        log_.close()
        publisher.close()
        log.info("stopped")


def main() -> int:
    from runtime import process

    return process.main("subscriptions", SubscriptionSettings.from_env, run)


if __name__ == "__main__":
    raise SystemExit(main())
