"""Prometheus metrics of the projector process, in a registry of its own (one per `run`).

Names: `dbaas_projection_events_applied_total{projection,event_type}`,
`dbaas_projection_batch_size`, `dbaas_projection_latency_seconds` (event occurred_at -> commit),
`dbaas_projection_consumer_lag{topic,partition}` (high watermark - next offset),
`dbaas_projection_dead_letters_total{topic}`, `dbaas_projection_retries_total{error}`;
what the operations read model shows unfinished: `dbaas_operations_open{phase}` and the age of the
oldest one, `dbaas_operations_oldest_open_seconds{phase}` (phases `OPEN_PHASES`; 0 when none).
Imports prometheus_client only.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
# Unfinished operations: accepted (queued or not started yet), running (rendered, committed, awaiting
# the PoP), compensating (failed or cancelled, the revert of their GitOps change pending).
OPEN_PHASES = ("accepted", "running", "compensating")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:  # a registry of its own: with process_* (start time, memory, CPU) as the default
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = r = registry
        self.applied = Counter("dbaas_projection_events_applied", "Events applied to a read model",
                               ["projection", "event_type"], registry=r)
        self.batch_size = Histogram("dbaas_projection_batch_size", "Messages per committed batch",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.latency = Histogram("dbaas_projection_latency_seconds",
                                 "From an event's occurred_at to the commit of its projection",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("dbaas_projection_consumer_lag", "High watermark minus the next offset to apply",
                         ["topic", "partition"], registry=r)
        self.dead_letters = Counter("dbaas_projection_dead_letters", "Messages sent to the dead-letter topic",
                                    ["topic"], registry=r)
        self.retries = Counter("dbaas_projection_retries", "Batches retried after a transient error",
                               ["error"], registry=r)
        self.open_operations = Gauge("dbaas_operations_open", "Unfinished operations in the read model",
                                     ["phase"], registry=r)
        self.oldest_open = Gauge("dbaas_operations_oldest_open_seconds",
                                 "Age of the oldest unfinished operation (since its acceptance; a "
                                 "compensation since it began); 0 when there is none", ["phase"], registry=r)
        self.operations({})

    def serve(self, port: int) -> Any | None:
        """Start the /metrics endpoint on 127.0.0.1:`port` (0: none); the server to `shutdown()` at exit."""
        if not port:
            return None
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        return server

    def operations(self, open_by_phase: dict[str, tuple[int, float]]) -> None:
        """`open_by_phase`: phase -> (how many, age of the oldest in seconds); missing phases have none."""
        for phase in OPEN_PHASES:
            count, oldest = open_by_phase.get(phase, (0, 0.0))
            self.open_operations.labels(phase).set(count)
            self.oldest_open.labels(phase).set(oldest)

    def committed(self, size: int, applied: Tally[tuple[str, str]], occurred: Iterable[datetime],
                  now: datetime, dead: int, topic: str) -> None:
        self.batch_size.observe(size)
        for (projection, event_type), n in applied.items():
            self.applied.labels(projection, event_type).inc(n)
        for at in occurred:
            self.latency.observe(max(0.0, (now - at).total_seconds()))
        if dead:
            self.dead_letters.labels(topic).inc(dead)
