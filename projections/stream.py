"""The Kafka side of a projector: client configuration, partition discovery, decoding, dead letters.

Owns how a consumed message becomes an `Item` (an `events.Envelope`, or the reason it is poison:
`Decoder`, which skips schema resolution where it would change nothing), how a batch is fetched,
and how poison goes to the dead-letter topic with the `dbaas-error-*` / `dbaas-source-*` headers.
A registry that does not answer is transient (`TransientError`): the batch is retried, never
dead-lettered. Imports confluent-kafka, `schemas`, `events` and `projections.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

from events import Envelope, EventError, from_avro
from projections.errors import TopicNotFound, TransientError
from projections.settings import Settings
from schemas import PoisonMessage, codec
from schemas.registry import Registry, RegistryUnavailable, Serde

REASON_HEADER = "dbaas-error-reason"
SOURCE_HEADERS = ("dbaas-source-topic", "dbaas-source-partition", "dbaas-source-offset")


def consumer_config(settings: Settings, group: str | None = None) -> dict[str, Any]:
    """A consumer that is only ever `assign`ed: no group membership, no offsets stored in Kafka."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group or settings.consumer_group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }


def dlq_producer(settings: Settings) -> Producer:
    return Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True,
                     "acks": "all", "linger.ms": 5})


def topic_partitions(bootstrap: str, topic: str, timeout: float = 30.0) -> list[int]:
    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise TransientError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise TopicNotFound(f"topic {topic!r} does not exist on {bootstrap}; create it (`dbaas topics apply`)")
    return sorted(described.partitions)


@dataclass(frozen=True)
class Item:
    """One consumed message: its envelope, or why it can never be decoded."""

    partition: int
    offset: int
    envelope: Envelope | None
    poison: str | None
    message: Message


class Decoder:
    """Turns consumed messages into `Item`s, reading every record as this process's event schema.

    Schema resolution (fastavro reading with the writer's and the reader's schema) costs as much
    again as the decoding itself. It changes nothing when the writer schema reads alike (see
    `reads_alike`): the same schema, or an older one the reader only added records to (the usual
    evolution: a new event type). Records of such writer schemas are decoded with the writer schema
    alone; the answer is cached per schema id.
    """

    def __init__(self, registry: Registry, serde: Serde) -> None:
        self.registry = registry
        self.serde = serde
        self._alike: dict[int, Any] = {}  # schema id -> its parsed writer schema when alike, else None

    def __call__(self, msg: Message) -> Item:
        try:
            envelope = from_avro(self._record(msg.value() or b""))
        except RegistryUnavailable as exc:
            raise TransientError(str(exc)) from exc
        except PoisonMessage as exc:
            return Item(msg.partition(), msg.offset(), None, exc.reason, msg)
        except (EventError, TypeError, ValueError) as exc:  # decodes, but is no event this code knows
            return Item(msg.partition(), msg.offset(), None, f"not an event record: {type(exc).__name__}: {exc}", msg)
        return Item(msg.partition(), msg.offset(), envelope, None, msg)

    def _record(self, data: bytes) -> dict[str, Any]:
        writer = self._writer_alike(int.from_bytes(data[1:5], "big")) if len(data) >= 5 and data[0] == 0 else None
        if writer is None:
            return self.serde.decode(data)  # with resolution; or PoisonMessage, saying why
        return codec.decode(data, lambda _id: writer)

    def _writer_alike(self, schema_id: int) -> Any:
        if schema_id not in self._alike:
            try:
                writer = self.registry.schema(schema_id)
            except LookupError:
                return None  # not cached: the registry may learn it; `serde.decode` says it is poison
            self._alike[schema_id] = writer if writer is not None and reads_alike(writer, self.serde.schema) else None
        return self._alike[schema_id]


def reads_alike(writer: Any, reader: Any) -> bool:
    """Whether records written with the parsed schema `writer` decode, without resolution, to what
    resolving them into the parsed schema `reader` gives: the same primitive and logical types,
    named types with the same names and fields, and every branch of a writer union alike the reader
    branch of its name (resolution picks that one, by name, and reports that name)."""
    return _alike(writer, reader, (writer.get("__named_schemas", {}), reader.get("__named_schemas", {})), set())


def _alike(w: Any, r: Any, named: tuple[dict[str, Any], dict[str, Any]], seen: set[str]) -> bool:
    w = named[0].get(w, w) if isinstance(w, str) else w  # a reference to a named type: its definition
    r = named[1].get(r, r) if isinstance(r, str) else r
    if isinstance(w, list) or isinstance(r, list):  # unions
        return (isinstance(w, list) and isinstance(r, list)
                and all(any(_alike(branch, other, named, seen) for other in r) for branch in w))
    if not (isinstance(w, dict) and isinstance(r, dict)):  # primitives
        return bool(w == r)
    if (w.get("type"), w.get("name"), w.get("logicalType")) != (r.get("type"), r.get("name"), r.get("logicalType")):
        return False
    if w["type"] == "record":
        if w["name"] in seen:  # compared already, or being compared (a recursive type)
            return True
        seen.add(w["name"])
        wf, rf = ({f["name"]: f["type"] for f in s["fields"]} for s in (w, r))
        return wf.keys() == rf.keys() and all(_alike(wf[name], rf[name], named, seen) for name in wf)
    if w["type"] in ("array", "map"):
        part = "items" if w["type"] == "array" else "values"
        return _alike(w[part], r[part], named, seen)
    return _attributes(w) == _attributes(r)  # enums, fixed, logical types: every attribute counts


def _attributes(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("doc", "aliases")}


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
        msg = item.message
        headers = [
            (REASON_HEADER, (item.poison or "").encode()),
            (SOURCE_HEADERS[0], (msg.topic() or "").encode()),
            (SOURCE_HEADERS[1], str(item.partition).encode()),
            (SOURCE_HEADERS[2], str(item.offset).encode()),
        ]
        producer.produce(dlq_topic, key=msg.key(), value=msg.value(), headers=headers, on_delivery=delivered)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise TransientError(f"dead-letter topic {dlq_topic!r} did not take {remaining or len(failures)} "
                             f"record(s): {failures[:1] or 'timed out'}")


def assignment(topic: str, starts: dict[int, int | None]) -> list[TopicPartition]:
    return [TopicPartition(topic, part, OFFSET_BEGINNING if offset is None else offset)
            for part, offset in sorted(starts.items())]
