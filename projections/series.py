"""Service metric samples as a time series: downsampled into buckets of `step` (average and maximum
of each measure per bucket), buckets aligned on multiples of `step` since the Unix epoch so that two
reads with the same step agree on their boundaries.

Pure: no database, no clock. Imports the standard library only.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_POINTS = 2000  # buckets one read may ask for
NICE_STEPS = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)  # seconds


@dataclass(frozen=True)
class Sample:
    """One sample of a service as the `service_metrics` read model holds it."""

    sampled_at: datetime
    connections: int
    max_connections: int | None
    transactions_per_s: float | None
    ops_per_s: float | None
    storage_bytes: int
    storage_limit_bytes: int | None
    storage_estimated: bool = False
    keys: int | None = None


@dataclass(frozen=True)
class Stat:
    """Average and maximum of a measure over a bucket (None: not measured in it)."""

    avg: float | None
    max: float | None


@dataclass(frozen=True)
class Bucket:
    start: datetime
    samples: int
    connections: Stat
    transactions_per_s: Stat
    ops_per_s: Stat
    storage_bytes: Stat
    storage_limit_bytes: int | None  # the last one in the bucket
    max_connections: int | None  # the last one in the bucket


def bucket_start(at: datetime, step: timedelta) -> datetime:
    """The start of the bucket of `step` that holds `at`."""
    seconds = step.total_seconds()
    offset = (at - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=math.floor(offset / seconds) * seconds)


def default_step(span: timedelta, points: int = 120) -> timedelta:
    """The smallest of the usual steps that shows `span` in at most `points` buckets."""
    seconds = span.total_seconds() / points
    for nice in NICE_STEPS:
        if nice >= seconds:
            return timedelta(seconds=nice)
    return timedelta(seconds=math.ceil(seconds / 86400) * 86400)


def _stat(values: list[float]) -> Stat:
    if not values:
        return Stat(None, None)
    return Stat(sum(values) / len(values), max(values))


def downsample(samples: Iterable[Sample], step: timedelta) -> list[Bucket]:
    """The samples in buckets of `step`, oldest first; buckets without samples are left out."""
    if step.total_seconds() <= 0:
        raise ValueError("step must be positive")
    groups: dict[datetime, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.sampled_at):
        groups.setdefault(bucket_start(s.sampled_at, step), []).append(s)
    out = []
    for start, group in sorted(groups.items()):
        last = group[-1]
        out.append(Bucket(
            start=start, samples=len(group),
            connections=_stat([float(s.connections) for s in group]),
            transactions_per_s=_stat([s.transactions_per_s for s in group if s.transactions_per_s is not None]),
            ops_per_s=_stat([s.ops_per_s for s in group if s.ops_per_s is not None]),
            storage_bytes=_stat([float(s.storage_bytes) for s in group]),
            storage_limit_bytes=last.storage_limit_bytes, max_connections=last.max_connections))
    return out
