"""Kafka plumbing every process shares: who a client is on the platform's broker (`KafkaAccess`,
the one place SASL settings come from), the client presets, and reading partitions up to their
end as it is now (state rebuilds, deadline scans, time travel, audit reads)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = structlog.get_logger("kafka")

SASL_MECHANISM = "SCRAM-SHA-512"
SECURITY_PROTOCOL = "SASL_PLAINTEXT"  # loopback only; see docs/security.md for TLS in production


@dataclass(frozen=True)
class KafkaAccess:
    """Where the broker is and who a client is there: a SASL/SCRAM-SHA-512 principal, or nobody
    (`username` None: an unauthenticated client, which the platform's broker refuses). Every Kafka
    client of the project, whatever its library, takes its connection settings from here."""

    bootstrap: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    mechanism: str = SASL_MECHANISM

    def __str__(self) -> str:  # what logs and messages show: never the password
        return f"{self.username or 'anonymous'}@{self.bootstrap}"

    def as_user(self, username: str, password: str) -> KafkaAccess:
        return KafkaAccess(self.bootstrap, username, password, self.mechanism)

    def client(self, **extra: object) -> dict[str, object]:
        """librdkafka (confluent-kafka) settings: bootstrap and, for a principal, SASL."""
        conf: dict[str, object] = {"bootstrap.servers": self.bootstrap}
        if self.username is not None:
            conf |= {"security.protocol": SECURITY_PROTOCOL, "sasl.mechanism": self.mechanism,
                     "sasl.username": self.username, "sasl.password": self.password or ""}
        return {**conf, **extra}

    def aiokafka(self) -> dict[str, object]:
        """aiokafka's (and so Faust's) keyword arguments for the same principal."""
        if self.username is None:
            return {"bootstrap_servers": self.bootstrap}
        return {"bootstrap_servers": self.bootstrap, "security_protocol": SECURITY_PROTOCOL,
                "sasl_mechanism": self.mechanism, "sasl_plain_username": self.username,
                "sasl_plain_password": self.password or ""}

    def java(self, prefix: str = "") -> str:
        """Java client properties (Kafka Connect's worker: `prefix` "", "producer.", "consumer.",
        "admin."), one per line."""
        lines = [f"{prefix}bootstrap.servers={self.bootstrap}"]
        if self.username is not None:
            jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                    f'username="{self.username}" password="{self.password}";')
            lines += [f"{prefix}security.protocol={SECURITY_PROTOCOL}", f"{prefix}sasl.mechanism={self.mechanism}",
                      f"{prefix}sasl.jaas.config={jaas}"]
        return "\n".join(lines) + "\n"


def faust_credentials(access: KafkaAccess):
    """`access`'s principal as a Faust application's `broker_credentials` (None: no principal).
    Faust is imported here only, when a Faust application asks."""
    if access.username is None:
        return None
    import faust

    return faust.SASLCredentials(username=access.username, password=access.password, mechanism=access.mechanism)


def access_from_env(environ: Mapping[str, str]) -> KafkaAccess | None:
    """`DBAAS_KAFKA_BOOTSTRAP`, and the process's principal `DBAAS_KAFKA_USERNAME` with its
    `DBAAS_KAFKA_PASSWORD` (both or neither); None when no bootstrap is set. For settings fields:
    `kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)`."""
    bootstrap = (environ.get("DBAAS_KAFKA_BOOTSTRAP") or "").strip()
    if not bootstrap:
        return None
    username = (environ.get("DBAAS_KAFKA_USERNAME") or "").strip() or None
    password = environ.get("DBAAS_KAFKA_PASSWORD") or None
    if (username is None) != (password is None):
        raise ValueError("DBAAS_KAFKA_USERNAME and DBAAS_KAFKA_PASSWORD go together: set both (the "
                         "process's Kafka principal) or neither")
    return KafkaAccess(bootstrap, username, password)


def client_config(kafka: KafkaAccess | str, **extra: object) -> dict[str, object]:
    """A client's settings for `kafka` (a bare bootstrap string: no principal)."""
    return (kafka if isinstance(kafka, KafkaAccess) else KafkaAccess(kafka)).client(**extra)


# Presets: every platform client starts from one of these and adds only what is its own.
def consumer_config(kafka: KafkaAccess | str, group: str, **extra: object) -> dict[str, object]:
    """A consumer of committed data only (read_committed), committing its offsets itself (or in a
    transaction), starting from the beginning of what it has never read. A member of a group that
    dies (SIGKILL, a lost host) is taken out of it after `SESSION_TIMEOUT_MS` (librdkafka's
    background thread heartbeats, however busy the process): its partitions move to the others."""
    return client_config(kafka, **{"group.id": group, "isolation.level": "read_committed",
                                   "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                   "session.timeout.ms": SESSION_TIMEOUT_MS, **extra})


SESSION_TIMEOUT_MS = 10_000  # librdkafka's default is 45 s: a dead member's partitions would wait that long


def producer_config(kafka: KafkaAccess | str, **extra: object) -> dict[str, object]:
    """An idempotent producer waiting for every in-sync replica (`acks=all`)."""
    return client_config(kafka, **{"enable.idempotence": True, "acks": "all", **extra})


def admin_config(kafka: KafkaAccess | str, **extra: object) -> dict[str, object]:
    """An admin client (topics, metadata, offsets by time)."""
    return client_config(kafka, **extra)


def transactional_config(kafka: KafkaAccess | str, transactional_id: str, **extra: object) -> dict[str, object]:
    """A transactional producer: events and consumer offsets committed together (exactly once). The
    id is stable per instance, so a restarted instance fences its predecessor's open transaction.

    It lingers `TRANSACTION_LINGER_MS`: what a transaction writes is visible to read_committed
    readers only once it commits, and committing flushes at once whatever lingers, so a batch's
    messages go out in a few large requests instead of one every few milliseconds — no later for
    any reader, fewer requests for the broker and fewer wake-ups of the client's thread."""
    return producer_config(kafka, **{"transactional.id": transactional_id, "linger.ms": TRANSACTION_LINGER_MS,
                                     **extra})


TRANSACTION_LINGER_MS = 100


def instance_transactional_id(variable: str, prefix: str) -> Callable[[Mapping[str, str]], str]:
    """A settings `compose=` for a transactional id: `variable` when set, else `prefix` and the
    instance's number (`DBAAS_INSTANCE`, 0 when unset): `dbaas-command-processor-0`, `-1`, ...

    One id per instance, stable across its restarts: two instances sharing the partitions of a
    group never share an id (each would fence the other's transactions), and an instance restarted
    under its number fences its predecessor's open transaction at once instead of waiting for the
    transaction timeout."""

    def compose(environ: Mapping[str, str]) -> str:
        given = (environ.get(variable) or "").strip()
        if given:
            return given
        instance = (environ.get("DBAAS_INSTANCE") or "0").strip()
        if not instance.isdigit():
            raise ValueError(f"DBAAS_INSTANCE must be an instance number (0, 1, ...), not {instance!r}")
        return f"{prefix}-{int(instance)}"

    return compose


def reader(kafka: KafkaAccess | str, group: str, *, follow: bool = False) -> Consumer:
    """A consumer for `read_to_end`: read_committed, end-of-partition events, no offset commits; an
    offset below the log's start (retention removed it) reads from the start.

    The broker answers a fetch at the end of a partition after at most 10 ms instead of its 500 ms
    default: reading a short tail to its end (a snapshot's, a partition folded at assignment) is
    over in milliseconds, not half a second. `follow`: the consumer goes on reading new messages
    after `read_to_end` (the broker's default wait: an idle follower does not fetch 100 times a
    second)."""
    wait = {} if follow else {"fetch.wait.max.ms": READ_TO_END_FETCH_WAIT_MS}
    return Consumer(consumer_config(kafka, group, **{"enable.partition.eof": True, **wait}))


READ_TO_END_FETCH_WAIT_MS = 10


def whole_topic(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    """Every partition of `topic`, from its start."""
    return [TopicPartition(topic, p, 0) for p in consumer.list_topics(topic, timeout=timeout).topics[topic].partitions]


def read_to_end(consumer: Consumer, starts: list[TopicPartition], timeout: float = 30.0,
                stops: Mapping[tuple[str, int], int] | None = None) -> Iterator[Message]:
    """Every committed message from `starts` (offsets >= 0) up to each partition's end as it was
    when called (or its offset in `stops`, (topic, partition) -> offset, when that comes first),
    partition by partition in offset order. `consumer` comes from `reader`."""
    ends: dict[tuple[str, int], int] = {}
    for tp in starts:
        _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
        high = min(high, (stops or {}).get((tp.topic, tp.partition), high))
        if tp.offset >= 0 and high > tp.offset:
            ends[(tp.topic, tp.partition)] = high
    consumer.assign([tp for tp in starts if (tp.topic, tp.partition) in ends])
    while ends:
        # consume() waits out its whole timeout unless the batch fills: short waits end a short
        # tail as soon as its end-of-partition event is in
        for msg in consumer.consume(1000, timeout=0.02):
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
