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

import events
from events import Envelope
from projections.projectors import PROJECTIONS, Change
from runtime import kafka as kafka_reader
from schemas.registry import Serde

Rows = dict[str, dict[str, dict[str, Any]]]  # read model -> row id -> row


def tenant_events(kafka: kafka_reader.KafkaAccess | str, serde: Serde, tenant: str, topic: str = "dbaas.events",
                  timeout: float = 60.0) -> list[Envelope]:
    """Every committed event of `tenant`, in log order (up to the end of the log now); `serde`
    reads the events subject."""
    consumer = kafka_reader.reader(kafka, "dbaas-time-travel")
    key = tenant.encode()
    try:
        return [events.from_avro(serde.decode(msg.value()))
                for msg in kafka_reader.read_to_end(consumer, kafka_reader.whole_topic(consumer, topic, timeout))
                if msg.key() == key]
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
