"""Time travel: one organization's read models as they stood at a moment, rebuilt from the event
log (`dbaas audit replay`, `GET /services/{id}?as_of=`).

The tenant's events are read from `dbaas.events` (read_committed; a tenant's events share one
partition, in order) and folded with the projectors' own handlers into rows held in memory, every
event that occurred at or before the moment — so a replay answers exactly what the live read model
answered then, for the same reasons. With a snapshot of the organization's rows that precedes the
moment (`projections.snapshots`, written by the projector every N events of the organization), only
the events after the snapshot's offset are read and folded onto its rows; without one, the whole
log is. Imports `events`, `schemas`, `runtime` and `projections.projectors`/`.fold`/`.snapshots`.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition

import events
from events import Envelope
from projections.fold import apply_in_memory
from projections.projectors import PROJECTIONS
from projections.snapshots import Snapshot
from runtime import kafka as kafka_reader
from schemas.registry import Serde

Rows = dict[str, dict[str, dict[str, Any]]]  # read model -> row id -> row


class Readers:
    """Consumers for replays, kept between them: connecting and authenticating a consumer costs
    more than reading a snapshot's short tail. One per replay running at the same time."""

    def __init__(self, kafka: kafka_reader.KafkaAccess | str):
        self.kafka = kafka
        self._idle: list[Consumer] = []
        self._lock = threading.Lock()

    @contextmanager
    def reader(self) -> Iterator[Consumer]:
        with self._lock:
            consumer = self._idle.pop() if self._idle else None
        if consumer is None:
            consumer = kafka_reader.reader(self.kafka, "dbaas-time-travel")
        try:
            yield consumer
            consumer.unassign()
        except BaseException:
            consumer.close()  # in an unknown state: not kept
            raise
        with self._lock:
            self._idle.append(consumer)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for consumer in idle:
            consumer.close()


def tenant_events(kafka: kafka_reader.KafkaAccess | str | Readers, serde: Serde, tenant: str,
                  topic: str = "dbaas.events", timeout: float = 60.0, after: Snapshot | None = None) -> list[Envelope]:
    """Every committed event of `tenant`, in log order (up to the end of the log now), or only those
    after snapshot `after`: from its offset in its partition up to its `read_until` (the log's end
    when None); `serde` reads the events subject."""
    stop = None if after is None or after.read_until is None else after.read_until
    if after is not None and stop is not None and stop <= after.next_offset:
        return []  # none of its events after the snapshot occurred by the moment
    readers = kafka if isinstance(kafka, Readers) else None
    with readers.reader() if readers is not None else _one_reader(kafka) as consumer:  # type: ignore[arg-type]
        starts = (kafka_reader.whole_topic(consumer, topic, timeout) if after is None
                  else [TopicPartition(topic, after.partition, after.next_offset)])
        stops = None if after is None or stop is None else {(topic, after.partition): stop}
        key = tenant.encode()
        return [events.from_avro(serde.decode(msg.value()))
                for msg in kafka_reader.read_to_end(consumer, starts, stops=stops)
                if msg.key() == key and (stop is None or msg.offset() < stop)]


@contextmanager
def _one_reader(kafka: kafka_reader.KafkaAccess | str) -> Iterator[Consumer]:
    consumer = kafka_reader.reader(kafka, "dbaas-time-travel")
    try:
        yield consumer
    finally:
        consumer.close()


def replay(envelopes: Iterable[Envelope], until: datetime, start: Rows | None = None,
           only: tuple[str, str] | None = None) -> Rows:
    """The read-model rows the envelopes that occurred at or before `until` make, on top of `start`
    (a snapshot's rows, which this changes); `only`: (read model, row id) — that row alone."""
    rows: Rows = {name: {} for name in PROJECTIONS}
    rows.update(start or {})
    projections = PROJECTIONS if only is None else {only[0]: PROJECTIONS[only[0]]}
    for env in envelopes:
        if env.occurred_at > until:
            continue
        for name, projection in projections.items():
            change = projection.change(env)
            if change is not None and (only is None or change.key == only[1]):
                apply_in_memory(rows[name], change)
    return rows
