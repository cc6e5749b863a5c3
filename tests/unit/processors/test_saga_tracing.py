"""The saga runner while tracing is on: the spans of an event's effects continue the trace of the
span that wrote the event (its `traceparent` header), the commit's trailer names the commit span,
a relayed PoP report continues the PoP's span, and inputs that lead to nothing make no span."""
from __future__ import annotations

import pickle

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime import tracing
from tests.unit.processors.test_service_saga_policy import (
    OP,
    POP_KEY,
    STOP,
    SVC,
    FakeGit,
    FakeMessage,
    Result,
    env,
    event_msg,
    runner,
    started,
)

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure("saga", {}, exporter=exporter, roots=1.0)
    yield exporter
    tracing.shutdown()


class TracedGit(FakeGit):
    """Keeps the `trace` each commit was made with (the `Trace-Id:` trailer)."""

    def __init__(self):
        super().__init__()
        self.traces: list[str | None] = []

    def apply(self, changes, message, *, operation_id, correlation_id, trace=None):
        self.traces.append(trace)
        return super().apply(changes, message, operation_id=operation_id, correlation_id=correlation_id)

    def apply_group(self, group, **kwargs):
        self.traces += [change.trace for change in group]
        return super().apply_group(group, **kwargs)


class TracedSink(list):
    """The command publisher's view: the trace context current when each command is sent."""

    def send(self, command):
        self.append((command, tracing.current_traceparent()))

    def flush(self):
        pass


def traced(msg: FakeMessage, traceparent: str = TP) -> FakeMessage:
    msg.headers_ = [("correlation-id", b"corr-1"), ("traceparent", traceparent.encode())]
    return msg


def span_id(span) -> str:
    return f"{span.context.span_id:016x}"


def test_an_operations_render_commit_and_records_continue_the_events_trace(spans):
    git = TracedGit()
    r = runner(git)
    r.commands = TracedSink()
    r.handle(traced(event_msg(started())), STOP)
    got = {s.name: s for s in spans.get_finished_spans()}
    assert set(got) == {"render", "commit", "send RecordServiceClaimRendered", "send RecordServiceClaimCommitted"}
    assert {f"{s.context.trace_id:032x}" for s in got.values()} == {TRACE}
    assert {f"{s.parent.span_id:016x}" for s in got.values()} == {PARENT}  # children of the event's writer
    assert git.traces == [f"00-{TRACE}-{span_id(got['commit'])}-01"]  # the trailer names the commit span
    sent = {c.payload.__class__.__name__: tp for c, tp in r.commands}
    assert sent["RecordServiceClaimRendered"] == f"00-{TRACE}-{span_id(got['send RecordServiceClaimRendered'])}-01"
    for name, step in (("render", "render"), ("commit", "commit"), ("send RecordServiceClaimCommitted", "commit")):
        attrs = dict(got[name].attributes)
        assert (attrs["dbaas.operation_id"], attrs["dbaas.tenant"], attrs["dbaas.step"]) == (OP, "acme", step)


def test_a_relayed_report_continues_the_pops_span(spans):
    r = runner()
    r.commands = TracedSink()
    report = {"tenant_id": "acme", "service_id": SVC, "operation_id": OP, "pop": "frankfurt", "phase": "Ready",
              "endpoint": "db:5432", "reason": None, "credentials": None, "report_id": "rep-1"}
    value = pickle.dumps(report)
    msg = FakeMessage("dbaas.pop.status", value, headers_=POP_KEY.headers("dbaas.pop.status", b"acme", value))
    msg.headers_.append(("traceparent", TP.encode()))
    r.handle(msg, STOP)
    [span] = spans.get_finished_spans()
    assert span.name == "send RecordPopReport" and f"{span.parent.span_id:016x}" == PARENT
    assert dict(span.attributes)["dbaas.step"] == "relay"
    [(_command, traceparent)] = r.commands
    assert traceparent == f"00-{TRACE}-{span_id(span)}-01"


def test_inputs_that_lead_to_nothing_make_no_span_and_untraced_inputs_no_trace(spans):
    from events import ServiceReady

    r = runner()
    r.handle(traced(FakeMessage("dbaas.events", pickle.dumps(env(ServiceReady(SVC, OP, "db:5432", None))))), STOP)
    assert spans.get_finished_spans() == ()
    git = TracedGit()
    r = runner(git)
    r.handle(event_msg(started()), STOP)  # written while tracing was off: no traceparent
    assert spans.get_finished_spans() == () and git.traces == [None]


def test_tracing_off_leaves_the_ports_calls_as_they_were():
    r = runner()  # FakeGit.apply takes no `trace`: it is not passed while tracing is off
    r.handle(traced(event_msg(started())), STOP)
    assert r.git.commits[-1][1] == OP and isinstance(r.git.apply({}, "m", operation_id="x", correlation_id="y"),
                                                     Result)


def test_operations_committed_together_each_continue_their_own_trace(spans):
    other_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    git = TracedGit()
    r = runner(git)
    r.commands = TracedSink()
    first = traced(event_msg(started()))
    second = traced(event_msg(started(op="op-2", name="users", service="svc-2"), offset=1), other_trace)
    r.handle_batch([first, second], STOP)
    assert git.groups == [[OP, "op-2"]]
    commits = sorted((s for s in spans.get_finished_spans() if s.name == "commit"),
                     key=lambda s: dict(s.attributes)["dbaas.operation_id"])
    assert [f"{s.context.trace_id:032x}" for s in commits] == [TRACE, "0af7651916cd43dd8448eb211c80319c"]
    assert git.traces == [f"00-{TRACE}-{span_id(commits[0])}-01",
                          f"00-0af7651916cd43dd8448eb211c80319c-{span_id(commits[1])}-01"]
    recorded = {c.payload.operation_id: tp for c, tp in r.commands
                if c.payload.__class__.__name__ == "RecordServiceClaimCommitted"}
    assert recorded[OP].split("-")[1] == TRACE and recorded["op-2"].split("-")[1] == other_trace.split("-")[1]


def test_tracing_off_a_group_commit_of_traced_inputs_has_no_trailer():
    git = TracedGit()
    r = runner(git)
    first = traced(event_msg(started()))
    second = traced(event_msg(started(op="op-2", name="users", service="svc-2"), offset=1))
    r.handle_batch([first, second], STOP)
    assert git.groups == [[OP, "op-2"]] and git.traces == [None, None]
