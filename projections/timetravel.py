"""Time travel: one organization's read models as they stood at a moment, rebuilt from the event
log (`dbaas audit replay`, `GET /services/{id}?as_of=`).

The tenant's events are read from `dbaas.events` (read_committed, from the beginning; a tenant's
events share one partition, in order) and folded with the projectors' own handlers into rows held
in memory, every event that occurred at or before the moment — so a replay answers exactly what
the live read model answered then, for the same reasons. Imports `events`, `schemas` and
`projections.projectors`.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import events
from events import Envelope
from projections.projectors import PROJECTIONS, Change
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

Rows = dict[str, dict[str, dict[str, Any]]]  # read model -> row id -> row


def tenant_events(kafka: str, registry_url: str, tenant: str, topic: str = "dbaas.events",
                  timeout: float = 60.0) -> list[Envelope]:
    """Every committed event of `tenant`, in log order (up to the end of the log now)."""
    serde = Serde(Registry(registry_url), EVENTS_SUBJECT)
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "dbaas-time-travel", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    key = tenant.encode()
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Envelope] = []
        while ends:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        ends.pop(msg.partition(), None)
                        continue
                    raise KafkaException(msg.error())
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
                if msg.key() == key:
                    out.append(events.from_avro(serde.decode(msg.value())))
        return out
    finally:
        consumer.close()


def replay(envelopes: Iterable[Envelope], until: datetime) -> Rows:
    """The read-model rows the envelopes that occurred at or before `until` make."""
    rows: Rows = {name: {} for name in PROJECTIONS}
    for env in envelopes:
        if env.occurred_at > until:
            continue
        for name, projection in PROJECTIONS.items():
            change = projection.change(env)
            if change is not None:
                _apply(rows[name], change)
    return rows


def _apply(table: dict[str, dict[str, Any]], change: Change) -> None:
    """What `projections.projectors.write_one` does to a stored row, in memory."""
    row = table.get(change.key)
    if change.creates:
        if row is None or row["version"] < change.version:
            table[change.key] = {"id": change.key, **change.values, "version": change.version}
    elif row is not None and row["version"] < change.version:
        row.update(change.values, version=change.version)
