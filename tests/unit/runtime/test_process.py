"""The common process start: settings errors end it with exit code 2 and a line naming the
setting; otherwise the loop runs with the stop event SIGTERM sets."""
from __future__ import annotations

import gc
import io
import json
import os
import signal
import threading
from dataclasses import dataclass

import pytest

from runtime import logs, process


@dataclass
class _Settings:
    metrics_port: int = 0


@pytest.fixture(autouse=True)
def _collector_as_it_was():
    """`process.main` sets the collector's thresholds for the process: the test run's stay as they were."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.fixture
def log_lines(monkeypatch):
    buffer = io.StringIO()
    configure = logs.configure
    monkeypatch.setattr(logs, "configure", lambda name: configure(name, stream=buffer))
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_missing_setting_ends_the_process_with_its_name(log_lines):
    def from_env():
        return {}["DBAAS_KAFKA_BOOTSTRAP"]
    assert process.main("p", from_env, lambda s, stop: pytest.fail("ran without settings")) == 2
    assert [(line["event"], line["error"]) for line in log_lines()] == [
        ("cannot start", "DBAAS_KAFKA_BOOTSTRAP is not set")]


def test_an_invalid_setting_ends_the_process_with_the_reason(log_lines):
    class Invalid(Exception):
        pass

    def from_env():
        raise Invalid("DBAAS_SAGA_STEP_TIMEOUTS: 'render=x' is not a number of seconds")
    assert process.main("p", from_env, lambda s, stop: pytest.fail("ran"), (Invalid,)) == 2
    assert log_lines()[0]["error"].startswith("DBAAS_SAGA_STEP_TIMEOUTS")


def test_sigterm_sets_the_stop_event_the_loop_watches(log_lines):
    seen: list[bool] = []

    def run(settings, stop: threading.Event):
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append(stop.wait(10))
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert process.main("p", _Settings, run) == 0
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert seen == [True]


@pytest.fixture
def own_collector(monkeypatch):
    """What `process.main(..., holds_state=True)` sets is for the whole process: the test runner
    gets its thresholds and `heap`'s flag back (else later tests would collect rarely and freeze)."""
    from runtime import heap

    monkeypatch.setattr(heap, "_holding", False)
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_a_process_holding_state_collects_rarely_and_a_bad_threshold_stops_it(log_lines, monkeypatch,
                                                                              own_collector):
    seen: list[int] = []

    def start(**kw):
        return process.main("p", _Settings, lambda s, stop: seen.append(gc.get_threshold()[0]),
                            serve_metrics=False, **kw)
    gc.set_threshold(700, *gc.get_threshold()[1:])
    monkeypatch.setenv("DBAAS_GC_YOUNG", "1234")
    assert start() == 0  # a process holding no state keeps Python's thresholds
    assert start(holds_state=True) == 0
    monkeypatch.delenv("DBAAS_GC_YOUNG")
    assert start(holds_state=True) == 0
    monkeypatch.setenv("DBAAS_GC_YOUNG", "lots")
    assert process.main("p", _Settings, lambda s, stop: pytest.fail("ran"), serve_metrics=False,
                        holds_state=True) == 2
    assert seen == [700, 1234, 50_000]
    assert log_lines()[-1]["error"].startswith("DBAAS_GC_YOUNG='lots': give a whole number")


def test_only_a_process_holding_state_freezes_what_it_rebuilt(own_collector):
    from runtime import heap

    frozen = gc.get_freeze_count()
    heap.settle()
    assert gc.get_freeze_count() == frozen
    heap.hold_state(700)
    kept = [[i] for i in range(100)]  # containers alive now, tracked by the collector
    try:
        heap.settle()
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()
