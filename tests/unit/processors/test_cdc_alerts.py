"""A CDC connector that fails at its PoP raises a critical alert on `dbaas.alerts.{tenant}` (the
scheduler publishes the platform's alerts), once per incident, resolved when the connector runs
again or CDC is disabled; a replay of the log rebuilds the open incident without publishing."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events import CdcConnectorFailed, CdcConnectorRegistered, CdcDisabled, Envelope
from processors.sagas.schedule import Alert, EventArrived, EventReplayed, SchedulerState, react

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SVC, OP, CONNECTOR = "svc-1", "op-1", "cdc-0123"
FAILED = CdcConnectorFailed(SVC, OP, CONNECTOR, "task 0 FAILED: replication slot is active", "connector_failed",
                            "pop-report")


def env(payload, n: int = 1, at: datetime = T0) -> Envelope:
    return Envelope(f"ev-{n}", "acme", "service", SVC, n, at, "cmd-1", "corr-1", None, payload)


def test_a_connector_that_stays_failed_raises_one_critical_alert():
    state, [alert] = react(SchedulerState.start(), EventArrived(env(FAILED), T0))

    assert isinstance(alert, Alert)
    assert (alert.tenant_id, alert.service_id, alert.kind, alert.severity, alert.state) == \
        ("acme", SVC, "cdc_connector_failed", "critical", "raised")
    assert "replication slot is active" in alert.message
    assert react(state, EventArrived(env(FAILED, 2), T0))[1] == []  # the same incident


def test_running_again_resolves_the_same_alert():
    state, [raised] = react(SchedulerState.start(), EventArrived(env(FAILED), T0))
    later = T0 + timedelta(minutes=3)
    _, [resolved] = react(state, EventArrived(env(CdcConnectorRegistered(SVC, OP, CONNECTOR), 2, later), later))

    assert (resolved.alert_id, resolved.state) == (raised.alert_id, "resolved")
    assert resolved.resolved_at == T0 + timedelta(minutes=3)


def test_disabling_resolves_it():
    state, [raised] = react(SchedulerState.start(), EventArrived(env(FAILED), T0))
    _, [resolved] = react(state, EventArrived(env(CdcDisabled(SVC, "op-2", CONNECTOR), 2), T0))

    assert resolved.alert_id == raised.alert_id and "disabled" in resolved.message


def test_a_render_or_commit_failure_is_the_operations_not_an_alert():
    failed = CdcConnectorFailed(SVC, OP, CONNECTOR, "git refused", "commit_failed", "commit")

    assert react(SchedulerState.start(), EventArrived(env(failed), T0))[1] == []


def test_a_replay_rebuilds_the_incident_without_publishing():
    state, effects = react(SchedulerState.start(), EventReplayed(env(FAILED)))

    assert effects == []
    _, [resolved] = react(state, EventArrived(env(CdcConnectorRegistered(SVC, OP, CONNECTOR), 2), T0))
    assert resolved.state == "resolved"
