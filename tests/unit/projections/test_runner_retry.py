"""The runner retries a batch after a transient failure, and gives up cleanly when asked to stop."""
from __future__ import annotations

import threading

from projections.batch import Outcome
from projections.errors import TransientError
from projections.metrics import Metrics
from projections.runner import Projector
from projections.settings import Settings


class FakeMessage:
    def __init__(self, partition: int, offset: int):
        self._p, self._o = partition, offset

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def error(self):
        return None


class FakeConsumer:
    def __init__(self, batches):
        self.batches = list(batches)

    def consume(self, _n, _timeout):
        return self.batches.pop(0) if self.batches else []

    def get_watermark_offsets(self, tp, cached=False):
        return (0, 10)


def projector(consumer, commit, stop=None) -> Projector:
    p = Projector(Settings("k", "r", "postgresql://h/d", events_topic="t"), None, None, None, consumer,  # type: ignore[arg-type]
                  None, Metrics(), stop or threading.Event(), {0: 0})  # type: ignore[arg-type]
    p._commit = commit  # type: ignore[method-assign]
    return p


def test_a_transient_failure_retries_the_same_batch_then_records_it():
    attempts: list = []

    def commit(records, _ends):
        attempts.append([m.offset() for m in records])
        if len(attempts) == 1:
            raise TransientError("database restarting")
        return Outcome()

    p = projector(FakeConsumer([[FakeMessage(0, 3), FakeMessage(0, 4)]]), commit)
    p.stop.wait = lambda _delay: False  # type: ignore[method-assign]  # no real backoff in a unit test
    p.step()
    assert attempts == [[3, 4], [3, 4]]
    assert p.next_offsets == {0: 5}
    assert p.metrics.registry.get_sample_value("dbaas_projection_retries_total", {"error": "TransientError"}) == 1
    assert p.metrics.registry.get_sample_value("dbaas_projection_consumer_lag", {"topic": "t", "partition": "0"}) == 5


def test_stopping_during_a_retry_leaves_the_batch_uncommitted():
    stop = threading.Event()
    stop.set()

    def commit(_records, _ends):
        raise TransientError("database down")

    p = projector(FakeConsumer([[FakeMessage(0, 3)]]), commit, stop)
    p.step()
    assert p.next_offsets == {0: 0}


def test_unfinished_operations_are_gauged_per_phase_and_zero_when_none():
    metrics = Metrics()
    value = metrics.registry.get_sample_value
    assert {value("dbaas_operations_open", {"phase": p}) for p in ("accepted", "running", "compensating")} == {0}
    metrics.operations({"running": (2, 90.5), "compensating": (1, 12.0)})
    assert value("dbaas_operations_open", {"phase": "running"}) == 2
    assert value("dbaas_operations_oldest_open_seconds", {"phase": "running"}) == 90.5
    assert value("dbaas_operations_oldest_open_seconds", {"phase": "compensating"}) == 12
    metrics.operations({})
    assert value("dbaas_operations_open", {"phase": "running"}) == 0
    assert value("dbaas_operations_oldest_open_seconds", {"phase": "running"}) == 0
    assert value("process_start_time_seconds") > 0  # as in the other processes' registries
