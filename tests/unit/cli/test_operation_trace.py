"""`dbaas operation trace`: a trace as Jaeger's HTTP API answers it becomes a tree of spans with
timings; where Jaeger is looked for."""
from __future__ import annotations

import json

from cli import traces


def span(span_id, name, service, start, duration, parent=None, **tags):
    return {"traceID": "t1", "spanID": span_id, "operationName": name, "processID": service,
            "startTime": start, "duration": duration,
            "references": [{"refType": "CHILD_OF", "traceID": "t1", "spanID": parent}] if parent else [],
            "tags": [{"key": k.replace("__", "."), "type": "string", "value": v} for k, v in tags.items()]}


JAEGER = {"traceID": "t1", "processes": {p: {"serviceName": p} for p in (
    "gateway", "command-processor", "saga", "localpop-agent", "projector")}, "spans": [
    span("b", "judge CreateService", "command-processor", 1_002_000, 1_500, "a", dbaas__step="judge"),
    span("a", "POST /api/v1/services", "gateway", 1_000_000, 9_000, dbaas__step="request"),
    span("d", "commit", "saga", 1_040_000, 30_000, "b", dbaas__step="commit"),
    span("c", "render", "saga", 1_010_000, 25_000, "b", dbaas__step="render"),
    span("e", "provision", "localpop-agent", 1_900_000, 120_000, "d", dbaas__step="provision"),
    span("f", "project OperationAccepted", "projector", 1_005_000, 2_000, "b"),
    span("g", "report Failed", "localpop-agent", 2_030_000, 500, "e", otel__status_code="ERROR"),
    span("x", "orphan", "projector", 1_001_000, 100, "missing"),
]}


def test_a_jaeger_trace_becomes_a_tree_in_start_order():
    trace = traces.from_jaeger(JAEGER)
    assert [(depth, s.name) for depth, s in trace.walk()] == [
        (0, "POST /api/v1/services"), (1, "judge CreateService"), (2, "project OperationAccepted"), (2, "render"),
        (2, "commit"), (3, "provision"), (4, "report Failed"), (0, "orphan")]
    assert trace.services == ["command-processor", "gateway", "localpop-agent", "projector", "saga"]
    assert (trace.end_us - trace.start_us) == 1_030_500


def test_the_tree_is_printed_with_offsets_durations_and_indentation():
    text = traces.render(traces.from_jaeger(JAEGER), "http://127.0.0.1:16696/trace/t1")
    lines = text.splitlines()
    assert lines[0] == ("trace t1: 8 spans, 5 services (command-processor, gateway, localpop-agent, projector, "
                        "saga), 1,030.5 ms")
    assert lines[1] == "http://127.0.0.1:16696/trace/t1"
    assert lines[3] == "     0.0ms      9.0ms  gateway: POST /api/v1/services  [request]"
    assert lines[4] == "     2.0ms      1.5ms    command-processor: judge CreateService"
    assert lines[8].endswith("      localpop-agent: provision") and "900.0ms" in lines[8]
    assert lines[9].endswith("        localpop-agent: report Failed  ERROR")


def test_json_output_keeps_the_tree_and_the_dbaas_attributes():
    doc = traces.as_json(traces.from_jaeger(JAEGER), "u")
    assert doc["spans"][1] == {"depth": 1, "span_id": "b", "parent_id": "a", "service": "command-processor",
                               "name": "judge CreateService", "start_ms": 2.0, "duration_ms": 1.5, "error": False,
                               "attributes": {"dbaas.step": "judge"}}
    json.dumps(doc)


def test_where_jaeger_is_looked_for(monkeypatch, tmp_path):
    monkeypatch.delenv("DBAAS_TRACING_URL", raising=False)
    assert traces.tracing_url("http://j:1/") == "http://j:1"
    assert traces.tracing_url(None, "http://ui:9/trace/abc") == "http://ui:9"
    (tmp_path / "stack.json").write_text(json.dumps({"ports": {"tracing": 19696}}))
    assert traces.tracing_url(None, None, str(tmp_path)) == "http://127.0.0.1:19696"
    monkeypatch.setenv("DBAAS_TRACING_URL", "http://env:2")
    assert traces.tracing_url(None, "http://ui:9/trace/abc") == "http://env:2"
