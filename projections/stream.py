"""The Kafka side of a projector: client configuration, partition discovery, decoding, dead letters.

Owns how a consumed message becomes an `Item` (an `events.Envelope`, or the reason it is poison:
`Decoder`), how a batch is fetched,
and how poison goes to the dead-letter topic (`runtime.deadletter`'s contract).
A registry that does not answer is transient (`TransientError`): the batch is retried, never
dead-lettered. Imports confluent-kafka, `schemas`, `events` and `projections.errors`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from events import Envelope, decode
from projections.errors import TopicNotFound, TransientError
from projections.settings import Settings
from runtime import deadletter, kafka
from runtime.tracing import TRACEPARENT
from schemas import PoisonMessage
from schemas.registry import RegistryUnavailable, Serde


def consumer_config(settings: Settings, group: str | None = None) -> dict[str, Any]:
    """A consumer whose offsets are never stored in Kafka (positions live in PostgreSQL): the
    projector's joins its group only to be given partitions (cooperative-sticky: a rebalance moves
    only the partitions that change hands); a rebuild's is `assign`ed and never joins."""
    return kafka.consumer_config(settings.kafka_bootstrap, group or settings.consumer_group,
                                 **{"enable.auto.offset.store": False, "enable.partition.eof": True,
                                    "partition.assignment.strategy": "cooperative-sticky"})


def dlq_producer(settings: Settings) -> Producer:
    return Producer(kafka.producer_config(settings.kafka_bootstrap, **{"linger.ms": 5}))


def topic_partitions(bootstrap: kafka.KafkaAccess | str, topic: str, timeout: float = 30.0) -> list[int]:
    try:
        metadata = AdminClient(kafka.admin_config(bootstrap)).list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise TransientError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise TopicNotFound(f"topic {topic!r} does not exist on {bootstrap}; create it (`dbaas topics apply`)")
    return sorted(described.partitions)


class Item(NamedTuple):  # a tuple: one is built per consumed message, and tuples are the cheapest to build
    """One consumed message: its envelope, or why it can never be decoded."""

    partition: int
    offset: int
    envelope: Envelope | None
    poison: str | None
    message: Message
    trace: bytes | None = None  # its `traceparent` header: the trace of the span that wrote it


class Decoder:
    """Turns consumed messages into `Item`s, reading every record as this process's event schema
    (`Serde.decode`: without schema resolution where it would change nothing)."""

    def __init__(self, serde: Serde) -> None:
        self.serde = serde

    def __call__(self, msg: Message) -> Item:
        try:
            envelope = decode(self.serde.decode, msg.value())
        except RegistryUnavailable as exc:
            raise TransientError(str(exc)) from exc
        except PoisonMessage as exc:
            return Item(msg.partition(), msg.offset(), None, exc.reason, msg)
        return Item(msg.partition(), msg.offset(), envelope, None, msg, _traceparent(msg.headers()))


def _traceparent(headers: list[tuple[str, bytes]] | None) -> bytes | None:
    for key, value in headers or ():
        if key == TRACEPARENT:
            return value
    return None


def fetch(consumer: Consumer, size: int, timeout: float) -> list[Message]:
    """A batch: what the consumer holds already, up to `size`, without waiting; when it holds
    nothing, the first message to arrive within `timeout` and whatever came along. So a batch is
    handled as soon as it arrives (latency) and grows with the backlog (throughput)."""
    messages = consumer.consume(size, 0)
    if not messages:
        messages = consumer.consume(1, timeout)
        if messages and size > 1:
            messages += consumer.consume(size - 1, 0)
    return messages


def is_eof(msg: Message) -> bool:
    err = msg.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


def error_of(msg: Message) -> KafkaError | None:
    """The error a consumed message carries, end-of-partition aside. Fatal errors raise; the others
    are informational (librdkafka retries by itself): log them and go on."""
    err = msg.error()
    if err is None or err.code() == KafkaError._PARTITION_EOF:
        return None
    if err.fatal():
        raise KafkaException(err)
    return err


def dead_letter(producer: Producer, dlq_topic: str, items: list[Item], timeout: float = 30.0) -> None:
    """Produce `items` to the dead-letter topic (original key and value, reason in headers) and wait
    for the broker to acknowledge them all: positions are committed only after this returns."""
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    for item in items:
        deadletter.dead_letter(producer, dlq_topic, item.message, item.poison or "", on_delivery=delivered)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise TransientError(f"dead-letter topic {dlq_topic!r} did not take {remaining or len(failures)} "
                             f"record(s): {failures[:1] or 'timed out'}")


def assignment(topic: str, starts: dict[int, int | None]) -> list[TopicPartition]:
    return [TopicPartition(topic, part, OFFSET_BEGINNING if offset is None else offset)
            for part, offset in sorted(starts.items())]
