"""The gateway while tracing is on: a span per request, continuing the caller's `traceparent`;
the command it publishes is sent inside it (the publisher puts it in the command's headers); the
span names the route, the operation, the tenant and the step; probes make no span."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime import tracing
from tests.unit.gateway.test_access import SERVICE_BODY, api, as_, reads  # noqa: F401 (fixtures)

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure("gateway", {}, exporter=exporter, roots=1.0)
    yield exporter
    tracing.shutdown()


@pytest.fixture
def publishing(api):  # noqa: F811
    """The trace context current when the gateway hands each command to the publisher."""
    seen = []
    publish = api.publisher.publish_async
    api.publisher.publish_async = lambda envelope: seen.append(tracing.current_traceparent()) or publish(envelope)
    return seen


def test_a_write_continues_the_callers_trace_and_publishes_inside_its_span(api, spans, publishing):  # noqa: F811
    answer = api.post("/api/v1/services", json=SERVICE_BODY, headers={**as_("eve", "acme=org-admin"),
                                                                       "traceparent": TP})
    assert answer.status_code == 202, answer.text
    [span] = spans.get_finished_spans()
    assert span.name == "POST /api/v1/services"
    assert f"{span.context.trace_id:032x}" == TP[3:35] and f"{span.parent.span_id:016x}" == TP[36:52]
    attrs = dict(span.attributes)
    assert attrs["dbaas.operation_id"] == answer.json()["operation_id"] and attrs["dbaas.tenant"] == "acme"
    assert attrs["dbaas.step"] == "request" and attrs["dbaas.command_type"] == "CreateService"
    assert attrs["http.route"] == "/api/v1/services" and attrs["http.response.status_code"] == 202
    assert publishing == [f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"]


def test_a_request_without_a_traceparent_starts_a_trace(api, spans, publishing):  # noqa: F811
    api.post("/api/v1/services", json=SERVICE_BODY, headers=as_("eve", "acme=org-admin"))
    [span] = spans.get_finished_spans()
    assert span.parent is None and tracing.trace_id(publishing[0]) == f"{span.context.trace_id:032x}"


def test_probes_and_scrapes_make_no_span(api, spans):  # noqa: F811
    assert api.get("/healthz").status_code == 200
    api.get("/metrics/")
    assert spans.get_finished_spans() == ()


def test_refused_requests_are_traced_with_their_status(api, spans):  # noqa: F811
    answer = api.post("/api/v1/services", json=SERVICE_BODY, headers=as_("mia"))
    [span] = spans.get_finished_spans()
    assert dict(span.attributes)["http.response.status_code"] == answer.status_code >= 400
