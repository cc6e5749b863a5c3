"""Reading Kafka partitions up to their end as it is now: the loop every replay shares (state
rebuilds, deadline scans, time travel, audit reads)."""
from __future__ import annotations

from collections.abc import Iterator

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = structlog.get_logger("kafka")


# Presets: every platform client starts from one of these and adds only what is its own.
def consumer_config(kafka: str, group: str, **extra: object) -> dict[str, object]:
    """A consumer of committed data only (read_committed), committing its offsets itself (or in a
    transaction), starting from the beginning of what it has never read."""
    return {"bootstrap.servers": kafka, "group.id": group, "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", **extra}


def producer_config(kafka: str, **extra: object) -> dict[str, object]:
    """An idempotent producer waiting for every in-sync replica (`acks=all`)."""
    return {"bootstrap.servers": kafka, "enable.idempotence": True, "acks": "all", **extra}


def transactional_config(kafka: str, transactional_id: str, **extra: object) -> dict[str, object]:
    """A transactional producer: events and consumer offsets committed together (exactly once). The
    id is stable per instance, so a restarted instance fences its predecessor's open transaction."""
    return producer_config(kafka, **{"transactional.id": transactional_id, **extra})


def reader(kafka: str, group: str) -> Consumer:
    """A consumer for `read_to_end`: read_committed, end-of-partition events, no offset commits; an
    offset below the log's start (retention removed it) reads from the start."""
    return Consumer(consumer_config(kafka, group, **{"enable.partition.eof": True}))


def whole_topic(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    """Every partition of `topic`, from its start."""
    return [TopicPartition(topic, p, 0) for p in consumer.list_topics(topic, timeout=timeout).topics[topic].partitions]


def read_to_end(consumer: Consumer, starts: list[TopicPartition], timeout: float = 30.0) -> Iterator[Message]:
    """Every committed message from `starts` (offsets >= 0) up to each partition's end as it was
    when called, partition by partition in offset order. `consumer` comes from `reader`."""
    ends: dict[tuple[str, int], int] = {}
    for tp in starts:
        _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
        if tp.offset >= 0 and high > tp.offset:
            ends[(tp.topic, tp.partition)] = high
    consumer.assign([tp for tp in starts if (tp.topic, tp.partition) in ends])
    while ends:
        for msg in consumer.consume(1000, timeout=1.0):
            where = (msg.topic(), msg.partition())
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    ends.pop(where, None)
                    continue
                raise KafkaException(msg.error())
            if msg.offset() + 1 >= ends.get(where, 0):
                ends.pop(where, None)
            yield msg


def messages(batch: list[Message]) -> list[Message]:
    """The messages of a consumed batch: end-of-partition events and retriable errors (the client
    retries by itself; logged) left out; any other error raises."""
    out = []
    for msg in batch:
        err = msg.error()
        if err is None:
            out.append(msg)
        elif err.code() == KafkaError._PARTITION_EOF:
            continue
        elif err.retriable():
            log.warning("consume error, retrying", error=str(err))
        else:
            raise KafkaException(err)
    return out


def rewind(consumer: Consumer, batch: list[Message], timeout: float = 30.0) -> None:
    """Seek the batch's partitions back to their committed offsets: after an aborted transaction,
    the batch is read and processed again."""
    parts = {(m.topic(), m.partition()) for m in batch}
    for tp in consumer.committed([TopicPartition(t, p) for t, p in parts], timeout=timeout):
        consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))


def lag(consumer: Consumer) -> dict[int, int]:
    """Messages not yet consumed per assigned partition (cached watermarks: no broker round trip)."""
    behind = {}
    for tp in consumer.position(consumer.assignment()):
        _, high = consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
        if tp.offset >= 0 and high is not None and high >= 0:
            behind[tp.partition] = max(high - tp.offset, 0)
    return behind


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's default partitioner; librdkafka's `murmur2_random`)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` among `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
