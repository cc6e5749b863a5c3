"""The projector process: folds `dbaas.events` into the read models, positions in the same transaction.

One confluent-kafka consumer in the projectors' group (`consumer_group`, cooperative-sticky): the
group shares the topic's partitions among the running projectors, and each reads the partitions it
is given from the position stored in PostgreSQL (the smallest position of the projections, the
beginning when there is none; `Projector.adopt`); no offset is ever committed to Kafka. Each batch (whatever the consumer holds, up to `batch_size` messages, waiting up to
`batch_timeout` seconds only when it holds nothing: small batches when idle, large ones under load)
is decoded, then in ONE transaction: the batch's position rows are locked
(`projections.positions.lock`), every projection not already past an item applies it (a few
set-based statements per batch, `projections.batch`), the organizations due for a snapshot get one
(`projections.snapshots`), poison is dead-lettered (and acknowledged by the broker) and the
positions advance. Transient failures retry the same batch with backoff;
SIGTERM or SIGINT finishes the batch in hand, commits, closes and exits 0. Logs once per batch at
most, never per event.

Composition root of `python -m projections.runner` (settings from the environment, see
`projections.settings`); `run(settings, stop_event)` runs it in a thread. Imports `events`,
`schemas`, `runtime` and `projections.*`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Table,
    case,
    cast,
    create_engine,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.exc import InterfaceError, OperationalError

from events import Envelope
from projections import positions, snapshots
from projections.batch import Outcome, apply_batch
from projections.errors import ConfigurationError, TransientError
from projections.metrics import Metrics
from projections.projectors import PROJECTIONS
from projections.projectors.operations import ACCEPTED, RUNNING
from projections.settings import Settings
from projections.stream import (
    Decoder,
    Item,
    assignment,
    consumer_config,
    dead_letter,
    dlq_producer,
    error_of,
    fetch,
    is_eof,
    topic_partitions,
)
from projections.tables import Tables, create_all
from projections.telemetry import TelemetryProjector, create_tables
from runtime import tracing
from runtime.signing import Keyring
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

_TRANSIENT = (TransientError, OperationalError, InterfaceError)
_MAX_BACKOFF = 10.0
OPERATIONS_EVERY = 15.0  # seconds between two counts of the unfinished operations


@dataclass
class Projector:
    """One assigned consumer and everything a batch needs; `step` handles one batch."""

    settings: Settings
    engine: Engine
    tables: Tables
    decode: Decoder
    consumer: Consumer
    producer: Producer
    metrics: Metrics
    stop: threading.Event
    next_offsets: dict[int, int]  # per partition: past everything committed or skipped
    log: Any = field(default_factory=lambda: structlog.get_logger("projections.runner"))
    on_commit: Callable[[Outcome], None] | None = None  # a hook for tests and tools
    operations_due: float = 0.0  # monotonic time of the next count of unfinished operations

    @property
    def topic(self) -> str:
        return self.settings.events_topic

    def adopt(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions the group gave this instance: read from their positions in PostgreSQL (the
        smallest of the projections'; the beginning when one has none)."""
        parts = [tp.partition for tp in partitions]
        with self.engine.connect() as conn:
            stored = positions.load(conn, self.tables, self.topic, PROJECTIONS, parts)
        starts = positions.start_offsets(stored, PROJECTIONS, parts)
        consumer.incremental_assign(assignment(self.topic, starts))
        for part, start in starts.items():
            self.next_offsets[part] = start or 0
        self.log.info("partitions assigned", partitions=parts,
                      resumed=sum(1 for start in starts.values() if start is not None))

    def release(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken from this instance (revoked, or lost with its group membership): another
        instance goes on from the positions in PostgreSQL. A batch this instance still commits for
        them afterwards changes nothing there (`apply_batch` applies only what is at or past the
        stored positions, and positions only move forward)."""
        for tp in partitions:
            self.next_offsets.pop(tp.partition, None)
            self.metrics.lag.labels(self.topic, str(tp.partition)).set(0)
        self.log.info("partitions revoked", partitions=[tp.partition for tp in partitions])

    def step(self) -> None:
        messages = fetch(self.consumer, self.settings.batch_size, self.settings.batch_timeout)
        records: list[Message] = []
        ends: dict[int, int] = {}  # partition -> end reached: offsets before it were all delivered
        for msg in messages:
            if (err := error_of(msg)) is not None:
                self.log.warning("consumer error; the client retries", error=str(err))
            elif is_eof(msg):
                ends[msg.partition()] = msg.offset()
            else:
                records.append(msg)
        # Past the last record there may be transaction markers only: store the end as the position
        # too, so that positions equal the end offsets when the projection is caught up.
        skipped = {p: end for p, end in ends.items() if end > self.next_offsets.get(p, 0)}
        if records or skipped:
            self._commit_retrying(records, skipped)
        self._observe_lag()

    def _commit_retrying(self, records: Sequence[Message], ends: dict[int, int]) -> None:
        delay = 0.5
        while True:
            try:
                outcome = self._commit(records, ends)
                break
            except _TRANSIENT as exc:
                self.metrics.retries.labels(type(exc).__name__).inc()
                self.log.warning("batch not committed; retrying", error=str(exc), retry_in=delay,
                                 messages=len(records))
                if self.stop.wait(delay):
                    self.log.warning("stopping with an uncommitted batch; it will be replayed at restart")
                    return
                delay = min(delay * 2, _MAX_BACKOFF)
        reached = [(m.partition(), m.offset() + 1) for m in records] + list(ends.items())
        for part, offset in reached:
            self.next_offsets[part] = max(self.next_offsets.get(part, 0), offset)
        if not records:
            return
        self.metrics.committed(len(records), outcome.applied, outcome.occurred, datetime.now(UTC),
                               len(outcome.dead), self.topic)
        if self.on_commit:
            self.on_commit(outcome)

    def _commit(self, records: Sequence[Message], ends: dict[int, int]) -> Outcome:
        items = [self.decode(m) for m in records]
        with traced(items), self.engine.begin() as conn:
            touched = {i.partition for i in items} | set(ends)
            stored = positions.lock(conn, self.tables, self.topic, PROJECTIONS, touched)
            outcome = apply_batch(conn, self.tables, PROJECTIONS, items, stored)
            snapshots.record(conn, self.tables, self.topic, items, stored, list(PROJECTIONS),
                             self.settings.snapshot_every)
            if outcome.dead:
                self._dead_letter(outcome.dead)
            for name in PROJECTIONS:
                for part, end in ends.items():
                    outcome.positions[(name, part)] = max(outcome.positions.get((name, part), 0), end)
            positions.advance(conn, self.tables, self.topic, outcome.positions)
        self.log.debug("batch committed", messages=len(items), applied=sum(outcome.applied.values()),
                       dead_lettered=len(outcome.dead))
        return outcome

    def _dead_letter(self, dead: list[Item]) -> None:
        for item in dead:
            self.log.warning("message dead-lettered", reason=item.poison, partition=item.partition,
                             offset=item.offset, dlq_topic=self.settings.dead_letter_topic)
        dead_letter(self.producer, self.settings.dead_letter_topic, dead)

    def _observe_lag(self) -> None:
        for part, next_offset in self.next_offsets.items():
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, part), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.lag.labels(self.topic, str(part)).set(max(0, high - next_offset))

    def observe_operations(self) -> None:
        """Count the unfinished operations of the read model, every `OPERATIONS_EVERY` seconds."""
        now = time.monotonic()
        if now < self.operations_due:
            return
        self.operations_due = now + OPERATIONS_EVERY
        try:
            with self.engine.connect() as conn:
                self.metrics.operations(open_operations(conn, self.tables.operations))
        except _TRANSIENT as exc:
            self.log.warning("unfinished operations not counted", error=str(exc))


@dataclass
class Telemetry:
    """The telemetry projector in the projector's loop: a transient failure (PostgreSQL) rewinds its
    batch and waits before the next try, without holding up the event projections."""

    projector: TelemetryProjector
    stop: threading.Event
    log: Any
    retry_at: float = 0.0
    delay: float = 0.5

    def step(self) -> None:
        if time.monotonic() < self.retry_at:
            return
        try:
            self.projector.step()
            self.delay = 0.5
        except _TRANSIENT as exc:
            self.log.warning("telemetry batch not committed; retrying", error=str(exc), retry_in=self.delay)
            self.retry_at = time.monotonic() + self.delay
            self.delay = min(self.delay * 2, _MAX_BACKOFF)


@contextmanager
def traced(items: Sequence[Item]) -> Iterator[None]:
    """While tracing is on, one span per group of the batch's events written by the same recorded span
    (their `traceparent` header: one judged command), continuing it, around the batch's transaction."""
    if not tracing.enabled():
        yield
        return
    groups: dict[bytes, list[Envelope]] = {}
    for item in items:
        if item.trace is not None and item.envelope is not None and tracing.sampled(item.trace):
            groups.setdefault(item.trace, []).append(item.envelope)
    spans = []
    for traceparent, envelopes in groups.items():
        kinds = list(dict.fromkeys(type(e.payload).__name__ for e in envelopes))
        operation = next((op for e in envelopes if (op := getattr(e.payload, "operation_id", None))), None)
        spans.append(tracing.start(f"project {','.join(kinds)}", traceparent, tracing.attributes(
            operation, envelopes[0].tenant_id, "project", events=len(envelopes))))
    try:
        yield
    except BaseException as exc:
        for span in spans:
            tracing.end(span, exc)
        raise
    for span in spans:
        tracing.end(span)


def open_operations(conn: Connection, table: Table) -> dict[str, tuple[int, float]]:
    """Phase (accepted, running, compensating) -> how many operations of `table` are in it and the
    age in seconds of the oldest: since its acceptance, or since its compensation began."""
    active = table.c.state.in_((ACCEPTED, RUNNING))
    phase = case((active, func.lower(table.c.state)), else_=literal("compensating"))
    since = case((active, table.c.created_at),
                 else_=cast(table.c.compensation["at"].astext, DateTime(timezone=True)))
    query = (select(phase, func.count(), func.extract("epoch", func.now() - func.min(since)))
             .where(or_(active, table.c.compensation["state"].astext == "Pending")).group_by(phase))
    return {name: (count, max(0.0, float(age or 0))) for name, count, age in conn.execute(query)}


def run(settings: Settings, stop_event: threading.Event | None = None, *,
        on_commit: Callable[[Outcome], None] | None = None) -> None:
    """Project until `stop_event` is set; returns after committing the batch in hand and closing."""
    stop = stop_event or threading.Event()
    log = structlog.get_logger("projections.runner").bind(topic=settings.events_topic)
    engine = create_engine(settings.sqlalchemy_url, pool_pre_ping=True)
    registry = Registry(settings.registry_url)
    metrics = Metrics()
    metrics.dead_letters.labels(settings.events_topic)  # at zero from the start: a first one is an increase
    consumer: Consumer | None = None
    producer: Producer | None = None
    telemetry: Telemetry | None = None
    server = None
    try:
        tables = create_all(engine)
        if settings.telemetry:
            create_tables(engine)
            telemetry = Telemetry(TelemetryProjector(
                engine, registry, settings.kafka_bootstrap, metrics_registry=metrics.registry,
                keyring=Keyring(settings.keyring) if settings.keyring else None), stop, log)
        decoder = Decoder(Serde(registry, EVENTS_SUBJECT))
        partitions = topic_partitions(settings.kafka_bootstrap, settings.events_topic)
        consumer = Consumer(consumer_config(settings))
        producer = dlq_producer(settings)
        server = metrics.serve(settings.metrics_port)
        projector = Projector(settings, engine, tables, decoder, consumer, producer, metrics, stop, {}, log, on_commit)
        consumer.subscribe([settings.events_topic], on_assign=projector.adopt, on_revoke=projector.release,
                           on_lost=projector.release)
        log.info("projector started", partitions=len(partitions), metrics_port=settings.metrics_port,
                 group=settings.consumer_group)
        while not stop.is_set():
            projector.step()
            if telemetry is not None:
                telemetry.step()
            projector.observe_operations()
        log.info("projector stopped")
    finally:
        if telemetry is not None:
            telemetry.projector.close()
        if consumer is not None:
            consumer.close()
        if producer is not None:
            producer.flush(10)
        if server is not None:
            server.shutdown()
        registry.close()
        engine.dispose()


def main() -> int:
    from runtime import process

    return process.main("projections.runner", Settings.from_env, run, config_errors=(ConfigurationError,),
                        serve_metrics=False,  # the projector serves a registry of its own
                        service="projector")


if __name__ == "__main__":
    sys.exit(main())
