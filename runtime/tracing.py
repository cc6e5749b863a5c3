"""Distributed tracing: one causal trace from an HTTP request to the PoP and back (OpenTelemetry).

Every platform process calls `configure(<its name>)` at start (`runtime.process.main` does, the
gateway too). With `DBAAS_OTLP_ENDPOINT` set (the base URL of an OTLP/HTTP receiver, e.g.
`http://127.0.0.1:14318`), spans are batched in the background and exported to
`<endpoint>/v1/traces` with `service.name` = the process's name; `shutdown()` flushes them (the
process's SIGTERM path calls it). Which traces are recorded is decided where they start (see
`configure`: every API request; one in ten, `DBAAS_TRACE_ROOT_RATIO`, of the traces a consumer
starts) and followed by every process after. Unset, tracing is off: every helper below returns at its first
line (no span, no header, no context object), so a process without an endpoint pays one global
check per call.

The context travels as a W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<flags>`):

- in Kafka headers (`traceparent`) of commands, events and PoP reports: `inject(headers)` adds the
  current span's, `from_headers(headers)` reads it back;
- in the GitOps commit a saga makes, as the `Trace-Id:` trailer (see `gitops.committer`);
- in HTTP requests, as the `traceparent` header (the gateway continues an incoming one).

A consumer starts its span with `continued(name, traceparent, …)`: a child of the remote span, or
a new trace when there is none. Spans carry `dbaas.operation_id`, `dbaas.tenant` and `dbaas.step`
(`attributes(...)` builds them).

This module knows nothing of the domain: it moves an opaque context between carriers.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

ENDPOINT_VARIABLE = "DBAAS_OTLP_ENDPOINT"
ROOT_RATIO_VARIABLE = "DBAAS_TRACE_ROOT_RATIO"
# Traces started by a consumer (commands published without a context) are recorded one in ten by
# default: each recorded span costs its process about 50-60 µs of CPU (the SDK's span, then its
# OTLP encoding), which at every command would slow the command processor by more than a tenth.
DEFAULT_ROOT_RATIO = 0.1
TRACEPARENT = "traceparent"  # the Kafka and HTTP header
EXPORT_DELAY_MS = 1000  # a span reaches the collector at most about this long after it ended
EXPORT_TIMEOUT_S = 5.0  # per export request; a collector that is down costs a flush at most this

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_NOOP = contextlib.nullcontext()  # reusable: what every helper hands out while tracing is off

_provider: Any = None  # the SDK's TracerProvider while tracing is on
_tracer: trace.Tracer | None = None
_roots = 0.0  # the share of the traces this process starts that are recorded
_draw = random.Random()  # the root decisions' own generator (a process's other randomness untouched)


# -- set-up ------------------------------------------------------------------------------------
def root_ratio(environ: Mapping[str, str]) -> float:
    """`DBAAS_TRACE_ROOT_RATIO`: the share of the traces a process starts itself that are recorded
    (default `DEFAULT_ROOT_RATIO`); a `ValueError` names the variable when it is no ratio."""
    raw = (environ.get(ROOT_RATIO_VARIABLE) or "").strip()
    if not raw:
        return DEFAULT_ROOT_RATIO
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{ROOT_RATIO_VARIABLE}={raw!r} is not a ratio between 0 and 1 (e.g. 0.1: one trace in ten)")
    return ratio


def configure(service: str, environ: Mapping[str, str] | None = None, *, exporter: Any = None,
              roots: float | None = None) -> bool:
    """Turn tracing on for this process as `service` when `DBAAS_OTLP_ENDPOINT` is set (or an
    `exporter` is given: tests pass an in-memory one). Returns whether tracing is on.

    Sampling is decided where a trace starts and followed everywhere after (the `traceparent`'s
    sampled flag): a trace this process starts itself — a command published with no trace context,
    a commit with no `Trace-Id` — is recorded with probability `roots` (default: the environment's
    `root_ratio`); a continued one is recorded exactly when its parent was. The gateway passes 1:
    every API request is recorded.

    What is not recorded costs next to nothing: the helpers decide before the SDK is involved
    (`_recorded_root`, an unsampled `traceparent`) and start no span at all — no ids drawn, no
    context attached, no `traceparent` header handed on (downstream, no header and an unrecorded
    one mean the same: nothing to record)."""
    global _provider, _tracer, _roots
    environ = os.environ if environ is None else environ
    endpoint = (environ.get(ENDPOINT_VARIABLE) or "").strip().rstrip("/")
    if exporter is None and not endpoint:
        return False
    ratio = root_ratio(environ) if roots is None else roots
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    shutdown()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": "dbaas"}),
                              sampler=ParentBased(ALWAYS_ON))  # roots: decided here, `_recorded_root`
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=EXPORT_TIMEOUT_S)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS,
                                                       export_timeout_millis=EXPORT_TIMEOUT_S * 1000))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider, _tracer, _roots = provider, provider.get_tracer("dbaas"), ratio
    return True


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Export what is still queued and turn tracing off (on SIGTERM, at the end of `process.main`)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


# -- the traceparent ---------------------------------------------------------------------------
def parse(traceparent: str | bytes | None) -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) of a W3C traceparent; None when it is absent or malformed."""
    if isinstance(traceparent, bytes):
        try:
            traceparent = traceparent.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _TRACEPARENT.match((traceparent or "").strip())
    if match is None or set(match[1]) == {"0"} or set(match[2]) == {"0"}:
        return None
    return match[1], match[2], bool(int(match[3], 16) & 1)


def trace_id(traceparent: str | bytes | None) -> str | None:
    """The 32-hex trace id a traceparent names (None: none or malformed)."""
    parsed = parse(traceparent)
    return parsed[0] if parsed else None


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The traceparent of the current span; None when tracing is off or no span is current."""
    if _tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return format_traceparent(ctx) if ctx.is_valid else None


def _remote(traceparent: str | bytes | None) -> otel_context.Context:
    """A context whose current span is the remote one `traceparent` names (empty when it names none)."""
    parsed = parse(traceparent)
    return otel_context.Context() if parsed is None else _remote_context(*parsed)


def _remote_context(tid: str, sid: str, sampled: bool) -> otel_context.Context:
    remote = SpanContext(int(tid, 16), int(sid, 16), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT))
    return trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())


# -- Kafka headers -----------------------------------------------------------------------------
def from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> bytes | None:
    """The `traceparent` header of a Kafka message (None when tracing is off or it has none)."""
    if _tracer is None or not headers:
        return None
    for key, value in headers:
        if key == TRACEPARENT:
            return value
    return None


def inject(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` with the current span's `traceparent` appended (unchanged when there is none)."""
    if _tracer is not None and (value := current_traceparent()) is not None:
        headers.append((TRACEPARENT, value.encode()))
    return headers


# -- spans -------------------------------------------------------------------------------------
def _recorded_root() -> bool:
    """Whether a trace this process starts now is recorded: drawn with probability `_roots`."""
    return _roots >= 1.0 or (_roots > 0.0 and _draw.random() < _roots)


def _followed(traceparent: str | bytes | None) -> otel_context.Context | None:
    """The context a span continuing `traceparent` starts in — the remote span when it is recorded,
    an empty one for a new trace that is drawn to be recorded — or None: nothing to record."""
    parsed = parse(traceparent)
    if parsed is None:
        return otel_context.Context() if _recorded_root() else None
    if not parsed[2]:
        return None
    return _remote_context(*parsed)


def attributes(operation_id: str | None = None, tenant: str | None = None, step: str | None = None,
               **more: Any) -> dict[str, Any]:
    """Span attributes under `dbaas.`: `dbaas.operation_id`, `dbaas.tenant`, `dbaas.step`, and any
    other given (None values left out)."""
    values = {"operation_id": operation_id, "tenant": tenant, "step": step, **more}
    return {f"dbaas.{k}": v for k, v in values.items() if v is not None}


def span(name: str, attrs: Mapping[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL):
    """A span, child of the current one (a new trace when there is none), current inside the
    `with` block; an exception leaving the block marks it failed. Off, or a new trace not drawn to
    be recorded: a no-op context."""
    if _tracer is None:
        return _NOOP
    if not trace.get_current_span().get_span_context().is_valid and not _recorded_root():
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=attrs, kind=kind)


def continued(name: str, traceparent: str | bytes | None, attrs: Mapping[str, Any] | None = None, *,
              kind: SpanKind = SpanKind.CONSUMER):
    """A span continuing the remote span `traceparent` names (a header, a commit trailer); a new
    trace when it names none (recorded with the root ratio's probability). Current inside the `with`
    block. Off, or nothing to record (an unrecorded `traceparent`, a new trace not drawn): a no-op
    context, and no `traceparent` to hand on."""
    if _tracer is None or (ctx := _followed(traceparent)) is None:
        return _NOOP
    return _tracer.start_as_current_span(name, context=ctx, attributes=attrs, kind=kind)


@contextlib.contextmanager
def _attached(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def within(traceparent: str | bytes | None):
    """Make the remote span `traceparent` names the current one for the `with` block, without a
    span of its own: spans started inside (only those that happen) become its children. Off, or no
    valid traceparent: a no-op context."""
    if _tracer is None or parse(traceparent) is None:
        return _NOOP
    return _attached(_remote(traceparent))


def in_trace() -> bool:
    """Whether the current span (started here or continued from elsewhere) belongs to a recorded
    trace: spans started now are recorded too."""
    if _tracer is None:
        return False
    ctx = trace.get_current_span().get_span_context()
    return ctx.is_valid and ctx.trace_flags.sampled


def recording() -> bool:
    """Whether the current span is recorded (sampled): worth naming and annotating."""
    return _tracer is not None and trace.get_current_span().is_recording()


def sampled(traceparent: str | bytes | None) -> bool:
    """Whether a traceparent names a recorded (sampled) span."""
    parsed = parse(traceparent)
    return parsed is not None and parsed[2]


def start(name: str, traceparent: str | bytes | None, attrs: Mapping[str, Any] | None = None, *,
          kind: SpanKind = SpanKind.CONSUMER) -> Any:
    """A span continuing `traceparent`, not made current; end it with `end`. Off, or nothing to
    record (as `continued`): None."""
    if _tracer is None or (ctx := _followed(traceparent)) is None:
        return None
    return _tracer.start_span(name, context=ctx, attributes=attrs, kind=kind)


def end(span_: Any, error: BaseException | str | None = None) -> None:
    """End a span `start` returned (None: nothing to do), failed with `error` when given."""
    if span_ is None:
        return
    if error is not None:
        fail(error, span_)
    span_.end()


def annotate(attrs: Mapping[str, Any], span_: Any = None) -> None:
    """Add attributes to `span_` (default: the current span)."""
    if _tracer is None:
        return
    target = span_ if span_ is not None else trace.get_current_span()
    target.set_attributes(dict(attrs))


def rename(name: str) -> None:
    """Rename the current span (its name known only once the work is done, e.g. an HTTP route)."""
    if _tracer is not None:
        trace.get_current_span().update_name(name)


def fail(error: BaseException | str, span_: Any = None) -> None:
    """Mark `span_` (default: the current span) failed with `error`."""
    if _tracer is None:
        return
    target = span_ if span_ is not None else trace.get_current_span()
    if isinstance(error, BaseException):
        target.record_exception(error)
    target.set_status(Status(StatusCode.ERROR, str(error)[:500]))


__all__ = ["ENDPOINT_VARIABLE", "ROOT_RATIO_VARIABLE", "TRACEPARENT", "SpanKind", "annotate", "attributes",
           "configure", "continued", "current_traceparent", "enabled", "end", "fail", "format_traceparent",
           "from_headers", "in_trace", "inject", "parse", "recording", "rename", "root_ratio", "sampled",
           "shutdown", "span", "start", "trace_id", "within"]
