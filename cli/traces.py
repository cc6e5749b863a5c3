"""`dbaas operation trace ID`: an operation's trace, read back from Jaeger's HTTP API, printed as a
tree of spans with their timings.

The trace is the one the operations read model recorded for the operation (`trace.trace_id` of
`GET /api/v1/operations/{id}`); for an operation without one (projected before, or tracing was
off then) the spans tagged with its `dbaas.operation_id` are looked up (`/api/traces?service=…&
tags=…`). Jaeger's address: `--tracing-url`, else `$DBAAS_TRACING_URL`, else the UI the operation
links to, else the local platform's.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cli.client import ApiError
from deploy.stack import config as stack_config

# Where an operation's spans are looked up by tag when no trace id is recorded.
SEARCHED_SERVICES = ("gateway", "command-processor", "saga", "localpop-agent", "projector")


def tracing_url(explicit: str | None = None, linked: str | None = None, home: str | None = None) -> str:
    """`explicit`, else $DBAAS_TRACING_URL, else the UI of the operation's link, else the local
    platform's at `home` (default: $DBAAS_STACK_HOME or .data/stack)."""
    if explicit or os.environ.get("DBAAS_TRACING_URL"):
        return (explicit or os.environ["DBAAS_TRACING_URL"]).rstrip("/")
    if linked and "/trace/" in linked:
        return linked.rsplit("/trace/", 1)[0].rstrip("/")
    state = (Path(home).resolve() if home else stack_config.default_home()) / "stack.json"
    ports = json.loads(state.read_text())["ports"] if state.exists() else {}
    return f"http://{stack_config.HOST}:{ports.get('tracing', stack_config.DEFAULT_PORTS['tracing'])}"


@dataclass
class Span:
    span_id: str
    parent_id: str | None
    service: str
    name: str
    start_us: int
    duration_us: int
    tags: dict[str, Any]
    error: bool = False
    children: list[Span] = field(default_factory=list)


@dataclass
class Trace:
    trace_id: str
    roots: list[Span]
    spans: list[Span]

    @property
    def services(self) -> list[str]:
        return sorted({s.service for s in self.spans})

    @property
    def start_us(self) -> int:
        return min((s.start_us for s in self.spans), default=0)

    @property
    def end_us(self) -> int:
        return max((s.start_us + s.duration_us for s in self.spans), default=0)

    def walk(self) -> list[tuple[int, Span]]:
        """(depth, span) in tree order, children by start time."""
        out: list[tuple[int, Span]] = []

        def visit(span: Span, depth: int) -> None:
            out.append((depth, span))
            for child in sorted(span.children, key=lambda s: (s.start_us, s.name)):
                visit(child, depth + 1)

        for root in sorted(self.roots, key=lambda s: (s.start_us, s.name)):
            visit(root, 0)
        return out


def from_jaeger(data: dict[str, Any]) -> Trace:
    """A trace of Jaeger's JSON (`/api/traces/{id}`'s `data[0]`): spans linked to their parents;
    a span whose parent is not in the trace is a root."""
    processes = {pid: p.get("serviceName", "?") for pid, p in (data.get("processes") or {}).items()}
    spans: dict[str, Span] = {}
    for raw in data.get("spans") or []:
        parent = next((r["spanID"] for r in raw.get("references") or [] if r.get("refType") == "CHILD_OF"), None)
        tags = {t["key"]: t.get("value") for t in raw.get("tags") or []}
        spans[raw["spanID"]] = Span(raw["spanID"], parent, processes.get(raw.get("processID"), "?"),
                                    raw.get("operationName", "?"), int(raw.get("startTime", 0)),
                                    int(raw.get("duration", 0)), tags,
                                    error=tags.get("error") in (True, "true") or tags.get("otel.status_code") == "ERROR")
    roots = []
    for span in spans.values():
        parent = spans.get(span.parent_id) if span.parent_id else None
        (parent.children if parent is not None else roots).append(span)
    return Trace(data.get("traceID", ""), roots, list(spans.values()))


def render(trace: Trace, url: str | None = None) -> str:
    """The tree: offset from the trace's start, indentation by depth, service, span, duration."""
    total_ms = (trace.end_us - trace.start_us) / 1000
    head = (f"trace {trace.trace_id}: {len(trace.spans)} spans, {len(trace.services)} services "
            f"({', '.join(trace.services)}), {total_ms:,.1f} ms" + (f"\n{url}" if url else ""))
    lines = [head, f"{'start':>10}  {'took':>9}  span"]
    for depth, span in trace.walk():
        step = span.tags.get("dbaas.step")
        extra = f"  [{step}]" if step and step not in span.name else ""
        mark = "  ERROR" if span.error else ""
        lines.append(f"{(span.start_us - trace.start_us) / 1000:>8.1f}ms  {span.duration_us / 1000:>7.1f}ms  "
                     f"{'  ' * depth}{span.service}: {span.name}{extra}{mark}")
    return "\n".join(lines)


class Jaeger:
    """Jaeger's HTTP API (the one its UI uses)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        try:
            resp = self.http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ApiError(f"Jaeger at {self.url} is not answering ({exc}); is tracing on? (`dbaas stack status`, "
                           "or pass --tracing-url)") from None
        if resp.status_code == 404:
            return {}
        if resp.status_code >= 400:
            raise ApiError(f"Jaeger at {self.url} answered HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        data = self._get(f"/api/traces/{trace_id}").get("data") or []
        return data[0] if data else None

    def find(self, operation_id: str, lookback: str = "2d") -> str | None:
        """The trace id of the spans tagged with `dbaas.operation_id` = `operation_id` (the one with
        the most spans when several)."""
        best: tuple[int, str] | None = None
        for service in SEARCHED_SERVICES:
            found = self._get("/api/traces", service=service, lookback=lookback, limit=20,
                              tags=json.dumps({"dbaas.operation_id": operation_id})).get("data") or []
            for data in found:
                candidate = (len(data.get("spans") or []), data["traceID"])
                best = max(best, candidate) if best else candidate
            if best:
                return best[1]
        return None

    def close(self) -> None:
        self.http.close()


def operation_trace(operation: dict[str, Any], explicit_url: str | None = None) -> tuple[Trace, str]:
    """The trace of `operation` (as the API answers it) and its UI URL."""
    link = operation.get("trace") or {}
    jaeger = Jaeger(tracing_url(explicit_url, link.get("url")))
    try:
        trace_id = link.get("trace_id") or jaeger.find(operation["id"])
        if not trace_id:
            raise ApiError(f"operation {operation['id']} has no trace: tracing was off when it ran, or Jaeger "
                           f"({jaeger.url}) no longer holds it (it keeps recent traces in memory only)")
        data = jaeger.trace(trace_id)
        if data is None:
            raise ApiError(f"trace {trace_id} of operation {operation['id']} is not in Jaeger at {jaeger.url} "
                           "(not exported yet, or dropped: Jaeger keeps recent traces in memory only)")
        return from_jaeger(data), f"{jaeger.url}/trace/{trace_id}"
    finally:
        jaeger.close()


def as_json(trace: Trace, url: str) -> dict[str, Any]:
    return {"trace_id": trace.trace_id, "url": url, "services": trace.services,
            "duration_ms": (trace.end_us - trace.start_us) / 1000,
            "spans": [{"depth": depth, "span_id": s.span_id, "parent_id": s.parent_id, "service": s.service,
                       "name": s.name, "start_ms": (s.start_us - trace.start_us) / 1000,
                       "duration_ms": s.duration_us / 1000, "error": s.error,
                       "attributes": {k: v for k, v in s.tags.items() if k.startswith("dbaas.")}}
                      for depth, s in trace.walk()]}
