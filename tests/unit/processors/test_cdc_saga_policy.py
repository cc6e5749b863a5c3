"""The saga's part in change data capture, through `react`: enabling renders the service's
KafkaConnector and commits it, disabling commits its removal, both recorded with the CDC system
commands; a PoP that does not report in time fails the operation (also after a restart); the PoP's
connector reports are relayed as RecordCdcReport only when its own key signed them."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.records import RecordCdcCommitted, RecordCdcRendered, RecordCdcReport, RecordCdcStepFailed
from events import (
    CdcConnectorCommitted,
    CdcConnectorRegistered,
    CdcDisableRequested,
    CdcEnableRequested,
    Envelope,
)
from processors.sagas.service import (
    Commit,
    Committed,
    DeadLetter,
    EventArrived,
    EventReplayed,
    PopReport,
    RenderConnector,
    Rendered,
    SagaState,
    Send,
    StepRefused,
    StepTimedOut,
    Tick,
    react,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OP, SVC, TENANT, CONNECTOR = "op-c", "svc-1", "acme", "cdc-0123"
PATH = "tenants/acme/local/cdc/svc-1.yaml"
ENABLE = CdcEnableRequested(SVC, OP, "orders", "yugabyte", "local", CONNECTOR, ("orders",))
DISABLE = CdcDisableRequested(SVC, OP, "orders", "yugabyte", "local", CONNECTOR, "requested")


def env(payload, at: datetime = T0) -> Envelope:
    return Envelope("ev-1", TENANT, "cdc", SVC, 1, at, "cmd-1", "corr-1", None, payload)


def fresh() -> SagaState:
    return SagaState.start({"render": 120, "commit": 300, "pop-report": 1800, "backup-report": 600,
                            "cdc-report": 90})


def test_enabling_renders_the_connector_then_commits_it_and_records_both():
    state, [render] = react(fresh(), EventArrived(env(ENABLE), T0))
    assert isinstance(render, RenderConnector) and render.request == ENABLE
    assert render.deadline == T0 + timedelta(seconds=120)

    state, [rendered, commit] = react(state, Rendered(OP, PATH, "kind: KafkaConnector\n", T0))
    assert isinstance(rendered.command.payload, RecordCdcRendered)
    assert isinstance(commit, Commit) and (commit.path, commit.operation_id) == (PATH, OP)
    assert commit.message == "Enable CDC of acme/orders in local"

    state, [committed] = react(state, Committed(OP, "c0ffee", True, T0))
    assert committed.command.payload == RecordCdcCommitted(SVC, OP, PATH, "c0ffee", True)
    assert not state.in_flight


def test_disabling_removes_the_file():
    state, _ = react(fresh(), EventArrived(env(DISABLE), T0))
    _, [_, commit] = react(state, Rendered(OP, PATH, None, T0))

    assert commit.content is None and commit.message == "Disable CDC of acme/orders in local"


def test_a_refused_render_fails_the_operation():
    state, _ = react(fresh(), EventArrived(env(ENABLE), T0))
    _, [send] = react(state, StepRefused(OP, "render", "no source connector", T0))

    assert send.command.payload == RecordCdcStepFailed(SVC, OP, "render", "no source connector", "failed")


def test_a_commit_out_of_time_fails_the_operation():
    state, _ = react(fresh(), EventArrived(env(ENABLE), T0))
    state, _ = react(state, Rendered(OP, PATH, "x", T0))
    _, [send] = react(state, StepTimedOut(OP, "commit", T0))

    assert send.command.payload.code == "timed_out" and send.command.payload.step == "commit"


def test_a_committed_connector_the_pop_does_not_report_times_out_even_after_a_restart():
    state, _ = react(fresh(), EventReplayed(env(CdcConnectorCommitted(SVC, OP, PATH, "c0ffee"))))
    assert state.awaiting[OP].cdc

    assert react(state, Tick(T0 + timedelta(seconds=89)))[1] == []
    state, [send] = react(state, Tick(T0 + timedelta(seconds=90)))
    assert send.command.payload == RecordCdcStepFailed(SVC, OP, "pop-report", "the PoP did not report within 90 s",
                                                       "timed_out")
    assert OP not in state.awaiting


def test_the_pop_reporting_it_running_ends_the_wait():
    state, _ = react(fresh(), EventReplayed(env(CdcConnectorCommitted(SVC, OP, PATH, "c0ffee"))))
    state, _ = react(state, EventReplayed(env(CdcConnectorRegistered(SVC, OP, CONNECTOR))))

    assert state.awaiting == {}


def test_a_connector_report_is_relayed_as_a_cdc_report():
    report = PopReport(TENANT, SVC, OP, "local", "Failed", None, "task 0 FAILED", None, "r-1", T0,
                       key_id="pop-local", key_kind="pop", key_pop="local", connector=CONNECTOR)
    _, [send] = react(fresh(), report)

    assert isinstance(send, Send)
    assert send.command.payload == RecordCdcReport(SVC, OP, "local", "Failed", CONNECTOR, "task 0 FAILED")


def test_a_connector_report_no_key_of_its_pop_signed_is_dead_lettered():
    report = PopReport(TENANT, SVC, OP, "local", "Running", None, None, None, "r-1", T0,
                       key_id="pop-lagos", key_kind="pop", key_pop="lagos", connector=CONNECTOR)
    _, [effect] = react(fresh(), report)

    assert isinstance(effect, DeadLetter) and effect.code == "unauthenticated"
