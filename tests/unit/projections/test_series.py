"""Downsampling of service metric samples (`projections.series`): buckets aligned on multiples of
the step, average and maximum per bucket, measures a bucket has no value of left empty; and the
telemetry read model's choice among records of one alert (a resolution is never undone)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projections.series import Sample, Stat, bucket_start, default_step, downsample
from projections.telemetry import latest_alerts

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=15)
M = timedelta(minutes=1)


def sample(at: datetime, connections: int = 1, tps: float | None = None, storage: int = 100,
           limit: int | None = 1000) -> Sample:
    return Sample(at, connections, 20, tps, None, storage, limit)


def test_buckets_are_aligned_on_the_step():
    assert bucket_start(T0 + 59 * timedelta(seconds=1), M) == T0
    assert bucket_start(T0 + M, M) == T0 + M
    assert bucket_start(T0 + timedelta(minutes=7), timedelta(minutes=5)) == T0 + timedelta(minutes=5)


def test_average_and_maximum_per_bucket():
    samples = [sample(T0, 2, 10.0, 100), sample(T0 + S, 4, None, 300), sample(T0 + 2 * S, 6, 20.0, 200),
               sample(T0 + 4 * S, 1, None, 500, limit=2000)]  # the next minute
    first, second = downsample(reversed(samples), M)  # any order in
    assert (first.start, first.samples) == (T0, 3)
    assert first.connections == Stat(4.0, 6.0)
    assert first.transactions_per_s == Stat(15.0, 20.0)  # the samples without a rate left out
    assert first.storage_bytes == Stat(200.0, 300.0)
    assert first.ops_per_s == Stat(None, None)
    assert (second.start, second.samples, second.storage_limit_bytes) == (T0 + M, 1, 2000)
    assert second.transactions_per_s == Stat(None, None)


def test_empty_buckets_are_left_out_and_the_step_must_be_positive():
    buckets = downsample([sample(T0), sample(T0 + 10 * M)], M)
    assert [b.start for b in buckets] == [T0, T0 + 10 * M]
    assert downsample([], M) == []
    with pytest.raises(ValueError):
        downsample([sample(T0)], timedelta(0))


@pytest.mark.parametrize("span, step", [(timedelta(minutes=10), 15), (timedelta(hours=1), 30),
                                        (timedelta(hours=6), 300), (timedelta(days=3), 3600)])
def test_default_steps_show_a_span_in_at_most_120_points(span, step):
    assert default_step(span) == timedelta(seconds=step)


def test_one_row_per_alert_a_resolution_winning():
    rows = [{"alert_id": "a", "state": "raised", "n": 1}, {"alert_id": "a", "state": "resolved", "n": 2},
            {"alert_id": "a", "state": "raised", "n": 3}, {"alert_id": "b", "state": "raised", "n": 4},
            {"alert_id": "b", "state": "raised", "n": 5}]
    assert sorted((r["alert_id"], r["n"]) for r in latest_alerts(rows)) == [("a", 2), ("b", 5)]
