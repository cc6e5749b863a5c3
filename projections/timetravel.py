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

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from confluent_kafka import TopicPartition

import events
from events import Envelope
from projections.fold import apply_in_memory
from projections.projectors import PROJECTIONS
from projections.snapshots import Snapshot
from runtime import kafka as kafka_reader
from schemas.registry import Serde

Rows = dict[str, dict[str, dict[str, Any]]]  # read model -> row id -> row


def tenant_events(kafka: kafka_reader.KafkaAccess | str, serde: Serde, tenant: str, topic: str = "dbaas.events",
                  timeout: float = 60.0, after: Snapshot | None = None) -> list[Envelope]:
    """Every committed event of `tenant`, in log order (up to the end of the log now), or only those
    after snapshot `after` (from its offset in its partition); `serde` reads the events subject."""
    consumer = kafka_reader.reader(kafka, "dbaas-time-travel")
    key = tenant.encode()
    try:
        starts = (kafka_reader.whole_topic(consumer, topic, timeout) if after is None
                  else [TopicPartition(topic, after.partition, after.next_offset)])
        return [events.from_avro(serde.decode(msg.value()))
                for msg in kafka_reader.read_to_end(consumer, starts) if msg.key() == key]
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
