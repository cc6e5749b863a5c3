"""The common start of a long-running platform process: JSON logs under its name, settings from
the environment (a missing or invalid one ends the process with exit code 2 and one log line
saying which), the garbage collector set for a process holding a long-lived state when it is one
(`runtime.heap`), SIGTERM/SIGINT as a stop event, the Prometheus endpoint, tracing under its name
(`runtime.tracing`, on when `DBAAS_OTLP_ENDPOINT` is set), then its loop until stopped; the spans
still queued are exported before it exits."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from runtime import heap, logs, metrics, signals, tracing


class _Settings(Protocol):
    metrics_port: int


S = TypeVar("S", bound=_Settings)


def main(name: str, from_env: Callable[[], S], run: Callable[[S, threading.Event], None],
         config_errors: tuple[type[Exception], ...] = (), serve_metrics: bool = True,
         service: str | None = None, holds_state: bool = False) -> int:
    """Start process `name`. `serve_metrics=False` for a process that serves its own registry;
    a `config_errors` exception raised by `run` before its loop ends it with exit code 2 too.
    `service`: its name in traces, when not `name`. `holds_state`: the process keeps a large,
    long-lived state (the command processor's tenants): its collector runs rarely (`runtime.heap`)."""
    log = logs.configure(name)
    try:
        settings = from_env()
        if holds_state:
            heap.hold_state()
    except KeyError as exc:
        log.error("cannot start", error=f"{exc.args[0]} is not set")
        return 2
    except (ValueError, *config_errors) as exc:
        log.error("cannot start", error=str(exc))
        return 2
    stop = signals.stop_event()
    if serve_metrics:
        metrics.serve(settings.metrics_port)
    try:
        tracing.configure(service or name)
    except ValueError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    try:
        run(settings, stop)
    except config_errors as exc:
        log.error("cannot start", error=str(exc))
        return 2
    finally:
        tracing.shutdown()  # flushes what is queued: a stop (SIGTERM) loses no span
    return 0
