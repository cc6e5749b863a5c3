"""Trace context across the platform's carriers: Kafka-style headers (commands, events, PoP
reports), the GitOps commit's `Trace-Id:` trailer and HTTP; what each process makes of it (the
saga's effects, the projector's batches, the PoP's reports); and tracing off costing nothing."""
from __future__ import annotations

import contextlib
import pickle
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gitops.committer import TRACE_TRAILER, compose_message
from operators.localpop import plan as core
from operators.localpop.agent import Reporter
from operators.localpop.claims import (
    COMMIT_START,
    MESSAGE_END,
    CommitRef,
    History,
    parse_history,
    parse_trace,
)
from projections.batch import traced
from projections.projectors import Change
from runtime import tracing
from runtime.signing import Keyring, Signer, TrustedKey

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture
def spans():
    """Tracing on, spans kept in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", {}, exporter=exporter, roots=1.0)
    yield exporter
    tracing.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict:
    return {s.name: s for s in exporter.get_finished_spans()}


def ids(span) -> tuple[str, str]:
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_of(span) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


# -- off -----------------------------------------------------------------------------------------
def test_without_an_endpoint_tracing_is_off_and_every_helper_is_a_no_op():
    assert tracing.configure("test", {}) is False and not tracing.enabled()
    assert isinstance(tracing.span("x"), contextlib.nullcontext)
    assert isinstance(tracing.continued("x", TP), contextlib.nullcontext)
    assert isinstance(tracing.within(TP), contextlib.nullcontext)
    headers = [("correlation-id", b"c")]
    assert tracing.inject(headers) == [("correlation-id", b"c")]
    assert tracing.from_headers([("traceparent", TP.encode())]) is None
    assert tracing.current_traceparent() is None and tracing.start("x", TP) is None
    tracing.end(None)
    tracing.annotate({"a": 1})  # nothing to annotate, nothing raised


def test_the_endpoint_variable_turns_it_on():
    try:
        assert tracing.configure("test", {"DBAAS_OTLP_ENDPOINT": "http://127.0.0.1:1"}) is True
        assert tracing.enabled()
    finally:
        tracing.shutdown()  # nothing was recorded: nothing to export
    assert not tracing.enabled()


# -- the traceparent ---------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (TP, (TRACE, PARENT, True)),
    (TP.encode(), (TRACE, PARENT, True)),
    (TP[:-2] + "00", (TRACE, PARENT, False)),
    (f"  {TP} ", (TRACE, PARENT, True)),
    (None, None), ("", None), (b"\xff", None), ("garbage", None),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # unknown version
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # no trace id
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),  # no span id
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", None),  # upper case is not W3C
])
def test_a_traceparent_is_read_strictly(value, expected):
    assert tracing.parse(value) == expected
    assert tracing.trace_id(value) == (expected[0] if expected else None)


# -- Kafka headers -------------------------------------------------------------------------------
def test_a_span_continued_from_a_header_is_a_child_in_the_same_trace(spans):
    with tracing.continued("gateway", TP):  # an HTTP request carrying a traceparent
        headers = tracing.inject([("correlation-id", b"c")])
    assert headers[0] == ("correlation-id", b"c") and headers[1][0] == "traceparent"
    with tracing.continued("judge", tracing.from_headers(headers)):  # the consumer of that message
        events = tracing.inject([])
    with tracing.continued("project", tracing.from_headers(events)):
        pass
    got = by_name(spans)
    assert {ids(s)[0] for s in got.values()} == {TRACE}
    assert parent_of(got["gateway"]) == PARENT
    assert parent_of(got["judge"]) == ids(got["gateway"])[1]
    assert parent_of(got["project"]) == ids(got["judge"])[1]
    assert headers[1][1].decode() == f"00-{TRACE}-{ids(got['gateway'])[1]}-01"


def test_a_message_without_a_traceparent_starts_a_trace_of_its_own(spans):
    assert tracing.from_headers([("correlation-id", b"c")]) is None and tracing.from_headers(None) is None
    with tracing.continued("judge", None):
        inner = tracing.current_traceparent()
    span = by_name(spans)["judge"]
    assert span.parent is None and tracing.trace_id(inner) == ids(span)[0] != TRACE


def test_within_makes_a_remote_span_current_without_a_span_of_its_own(spans):
    with tracing.within(TP):
        assert tracing.in_trace() and tracing.current_traceparent() == TP
        with tracing.span("render", tracing.attributes("op-1", "acme", "render")):
            pass
    assert not tracing.in_trace()
    [render] = spans.get_finished_spans()
    assert ids(render)[0] == TRACE and parent_of(render) == PARENT
    assert dict(render.attributes) == {"dbaas.operation_id": "op-1", "dbaas.tenant": "acme", "dbaas.step": "render"}
    with tracing.within("not a traceparent"):
        assert not tracing.in_trace()


def test_the_traceparent_header_is_outside_the_signature(spans):
    """Commands stay verifiable with a traceparent added, changed or removed: it is not signed."""
    signer = Signer.generate("gateway")
    keyring = Keyring(None, [TrustedKey.from_dict({"key_id": "gateway", "kind": "gateway",
                                                   "public_key": signer.public_text()})])
    key, value = b"acme", b"\x00\x00\x00\x00\x01payload"
    with tracing.continued("gateway", TP):
        headers = tracing.inject([("correlation-id", b"c"), *signer.headers("dbaas.commands", key, value)])
    assert keyring.verify("dbaas.commands", key, value, headers).key_id == "gateway"
    other = [(k, v) if k != "traceparent" else (k, TP.encode()) for k, v in headers]
    assert keyring.verify("dbaas.commands", key, value, other).key_id == "gateway"
    assert keyring.verify("dbaas.commands", key, value, [h for h in headers if h[0] != "traceparent"])


def test_a_failed_span_says_why(spans):
    span = tracing.start("report", TP, tracing.attributes(step="report"))
    tracing.end(span, RuntimeError("broker gone"))
    with pytest.raises(ValueError), tracing.span("commit"):
        raise ValueError("refused")
    got = by_name(spans)
    assert got["report"].status.status_code.name == "ERROR" and "broker gone" in got["report"].status.description
    assert got["commit"].status.status_code.name == "ERROR"


# -- the GitOps trailer --------------------------------------------------------------------------
def log_of(sha: str, message: str, *files: str) -> str:
    """`git log --name-status` output in the agent's format (`claims.LOG_FORMAT`)."""
    return f"{COMMIT_START}{sha}\n{message}{MESSAGE_END}\n" + "".join(f"A\t{f}\n" for f in files)


def test_the_commit_trailer_carries_the_traceparent_to_the_pop(spans):
    with tracing.within(TP), tracing.span("commit"):
        made_by = tracing.current_traceparent()
        message = compose_message("Provision acme/orders", "op-1", "corr-1", made_by)
    assert message.endswith(f"Operation-Id: op-1\nCorrelation-Id: corr-1\n{TRACE_TRAILER}: {made_by}\n")
    assert parse_trace(message) == made_by
    history = parse_history(log_of("c1", message, "tenants/acme/local/orders.yaml"))
    ref = history.last["tenants/acme/local/orders.yaml"]
    assert ref == CommitRef("c1", "op-1", "corr-1", "A", made_by)
    with tracing.continued("provision", ref.trace):  # the PoP agent applying the commit
        pass
    got = by_name(spans)
    assert ids(got["provision"])[0] == TRACE and parent_of(got["provision"]) == ids(got["commit"])[1]


def test_commits_without_a_trace_read_as_before():
    message = compose_message("Provision acme/orders", "op-1", "corr-1")
    assert TRACE_TRAILER not in message and parse_trace(message) is None
    assert compose_message("x", "op-1", "corr-1", "bad value\nInjected: 1") == message.replace(
        "Provision acme/orders", "x")  # an unusable context is left out, never fails the commit


def test_the_pop_keeps_the_commits_trace_for_its_report():
    claim_path = "tenants/acme/local/orders.yaml"
    desired = core.Desired(claim_path, "acme", "svc-1", "orders", "dragonfly", "op-1", "corr-1", "c1", trace=TP)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    ready = core.ready(desired, "127.0.0.1:6379", now)
    assert ready.trace == TP
    assert core.Record.from_json(ready.to_json()) == ready  # kept in the state file
    assert core.Record.from_json({k: v for k, v in ready.to_json().items() if k != "trace"}).trace is None
    gone = core.deleted(ready, CommitRef("c2", "op-2", "corr-2", "D", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"), now)
    assert tracing.trace_id(gone.trace) == "1" * 32
    assert core.removal(ready, History({}, {}), "tip").trace is None


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, key, value, headers, on_delivery):
        self.sent.append(headers)

    def poll(self, timeout):
        return 0


class FakeSerde:
    def encode(self, record):
        return pickle.dumps(record)


def reporter(signer: Signer | None = None) -> Reporter:
    settings = type("S", (), {"pop_status_topic": "dbaas.pop.status", "signer": signer, "registry_url": "",
                              "kafka": "127.0.0.1:1", "message_timeout_ms": 1000, "pop": "local"})()
    r = Reporter(settings)
    r._producer, r._serde = FakeProducer(), FakeSerde()
    return r


def report(op: str = "op-1") -> dict:
    return {"report_id": f"r-{op}", "pop": "local", "tenant_id": "acme", "service_id": "svc-1",
            "operation_id": op, "phase": "Ready"}


def test_a_report_continues_the_trace_it_belongs_to_in_its_traceparent_header(spans):
    r = reporter(Signer.generate("pop-local"))
    r.send("acme", report("op-1"), TP)
    r.send("acme", report("op-2"))  # no trace: no span, no header
    r.send("acme", report("op-1"), TP)  # in flight: not sent again, no second span
    with_trace, without = r._producer.sent
    [span] = spans.get_finished_spans()
    assert span.name == "report Ready" and ids(span)[0] == TRACE and parent_of(span) == PARENT
    assert dict(span.attributes)["dbaas.step"] == "report" and dict(span.attributes)["dbaas.operation_id"] == "op-1"
    assert dict(with_trace)["traceparent"].decode() == f"00-{TRACE}-{ids(span)[1]}-01"
    assert "dbaas-signature" in dict(with_trace) and "traceparent" not in dict(without)


def test_reports_carry_no_header_while_tracing_is_off():
    r = reporter()
    r.send("acme", report(), TP)
    assert r._producer.sent == [[]]


# -- the read model ------------------------------------------------------------------------------
def test_the_operation_row_records_the_trace_of_the_event_that_created_it():
    row = Change("op-1", 1, {"state": "Accepted", "trace_id": None}, creates=True)
    assert traced(row, TP.encode()).values == {"state": "Accepted", "trace_id": TRACE}
    assert traced(row, b"garbage") is row
    other = Change("svc-1", 1, {"status": "Requested"}, creates=True)  # a read model with no trace column
    assert traced(other, TP) is other


def test_the_projector_makes_one_span_per_writing_span_around_its_transaction(spans):
    from events import Envelope, OperationAccepted
    from projections.runner import traced as projected
    from projections.stream import Item

    def item(offset, trace):
        payload = OperationAccepted("op-1", "CreateService", "svc-1", 3, "fp")
        env = Envelope(f"ev-{offset}", "acme", "service", "svc-1", offset, datetime(2026, 3, 1, tzinfo=UTC),
                       "cmd-1", "corr-1", None, payload)
        return Item(0, offset, env, None, None, trace)  # type: ignore[arg-type]

    other = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
    with projected([item(0, TP.encode()), item(1, TP.encode()), item(2, other), item(3, None)]):
        assert len(spans.get_finished_spans()) == 0  # open while the batch is written
    got = spans.get_finished_spans()
    assert sorted((ids(s)[0], parent_of(s), dict(s.attributes)["dbaas.events"]) for s in got) == [
        (TRACE, PARENT, 2), ("a" * 32, "b" * 16, 1)]
    assert {dict(s.attributes)["dbaas.operation_id"] for s in got} == {"op-1"}
    assert {dict(s.attributes)["dbaas.step"] for s in got} == {"project"}


# -- sampling ------------------------------------------------------------------------------------
UNSAMPLED = TP[:-2] + "00"


@pytest.mark.parametrize("raw, ratio", [("", 0.1), ("0", 0.0), ("1", 1.0), (" 0.25 ", 0.25)])
def test_the_root_ratio_comes_from_the_environment(raw, ratio):
    assert tracing.root_ratio({"DBAAS_TRACE_ROOT_RATIO": raw}) == ratio


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "often", "nan"])
def test_a_root_ratio_that_is_no_ratio_is_refused_by_name(raw):
    with pytest.raises(ValueError, match="DBAAS_TRACE_ROOT_RATIO"):
        tracing.root_ratio({"DBAAS_TRACE_ROOT_RATIO": raw})


def test_process_main_ends_with_exit_code_2_for_a_bad_ratio(monkeypatch):
    from runtime import process

    monkeypatch.setenv("DBAAS_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("DBAAS_TRACE_ROOT_RATIO", "2")
    settings = type("S", (), {"metrics_port": 0})()
    monkeypatch.setattr(process.signals, "stop_event", lambda: None)
    assert process.main("test", lambda: settings, lambda s, stop: pytest.fail("ran")) == 2
    assert not tracing.enabled()


@pytest.fixture
def sampled_roots_never():
    exporter = InMemorySpanExporter()
    tracing.configure("consumer", {}, exporter=exporter, roots=0.0)
    yield exporter
    tracing.shutdown()


def test_a_trace_started_here_and_not_drawn_costs_no_span_and_hands_on_no_header(sampled_roots_never):
    with tracing.continued("judge", None):  # a command without context, not drawn to be recorded
        assert not tracing.recording() and not tracing.in_trace()
        assert tracing.current_traceparent() is None and tracing.inject([]) == []
    with tracing.span("render"):  # nothing current: a new trace, not drawn either
        assert not tracing.recording()
    assert tracing.start("report", None) is None
    with tracing.continued("project", UNSAMPLED):  # an unrecorded trace is followed: no span
        assert tracing.current_traceparent() is None
    assert tracing.start("project", UNSAMPLED) is None
    assert sampled_roots_never.get_finished_spans() == ()


def test_traces_started_here_are_recorded_with_the_root_ratio():
    exporter = InMemorySpanExporter()
    tracing.configure("consumer", {}, exporter=exporter, roots=0.25)
    tracing._draw.seed(7)
    try:
        for _ in range(2000):
            with tracing.continued("judge", None):
                if tracing.recording():  # a recorded root hands its context on, sampled
                    assert tracing.sampled(tracing.inject([])[0][1])
    finally:
        tracing.shutdown()
    recorded = exporter.get_finished_spans()
    assert 400 <= len(recorded) <= 600, len(recorded)  # 2000 x 0.25, binomial sd ~19
    assert all(s.parent is None for s in recorded)


def test_a_recorded_parent_is_followed_whatever_the_root_ratio(sampled_roots_never):
    with tracing.continued("judge", TP):
        assert tracing.recording() and tracing.in_trace()
    with tracing.within(UNSAMPLED):
        assert not tracing.in_trace()  # the saga makes no spans for an unrecorded trace
    [span] = sampled_roots_never.get_finished_spans()
    assert f"{span.parent.span_id:016x}" == PARENT


def test_unrecorded_traces_are_neither_projected_nor_linked(spans):
    from projections.runner import traced as projected

    row = Change("op-1", 1, {"trace_id": None}, creates=True)
    assert traced(row, UNSAMPLED) is row  # no link to a trace Jaeger never got

    with projected([_accepted_item(0, UNSAMPLED.encode())]):
        pass
    assert spans.get_finished_spans() == ()


def _accepted_item(offset, trace):
    from events import Envelope, OperationAccepted
    from projections.stream import Item

    payload = OperationAccepted("op-1", "CreateService", "svc-1", 3, "fp")
    env = Envelope(f"ev-{offset}", "acme", "service", "svc-1", offset, datetime(2026, 3, 1, tzinfo=UTC),
                   "cmd-1", "corr-1", None, payload)
    return Item(0, offset, env, None, None, trace)  # type: ignore[arg-type]
