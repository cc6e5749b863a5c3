"""The saga's part in backups, through `react`: a backup (or a backup's deletion) is rendered,
committed and awaited like a service operation, recorded with the backup's own system commands; a
late PoP times it out; a failed backup whose claim was committed is reverted; the PoP's backup
report is relayed as RecordBackupReport."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.records import (
    RecordBackupCommitted,
    RecordBackupRendered,
    RecordBackupReport,
    RecordBackupReverted,
    RecordBackupStepFailed,
)
from events import BackupClaimCommitted, BackupCompleted, BackupDeletionRequested, BackupFailed, BackupRequested, Envelope
from processors.sagas.service import (
    Commit,
    Committed,
    EventArrived,
    EventReplayed,
    PopReport,
    RenderBackup,
    Rendered,
    Revert,
    Reverted,
    SagaState,
    Send,
    StepRefused,
    Tick,
    react,
    revert_operation_id,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OP, BK, SVC, TENANT = "op-b", "bk-1", "svc-1", "acme"
PATH = "tenants/acme/local/backups/bk-1.yaml"
REQUESTED = BackupRequested(BK, OP, SVC, "orders", "yugabyte", "local", None, True)


def env(payload, at: datetime = T0) -> Envelope:
    return Envelope("ev-1", TENANT, "backup", BK, 1, at, "cmd-1", "corr-1", None, payload)


def fresh() -> SagaState:
    return SagaState.start({"render": 120, "commit": 300, "pop-report": 1800, "backup-report": 600})


def test_a_backup_is_rendered_then_committed_and_both_recorded():
    state, [render] = react(fresh(), EventArrived(env(REQUESTED), T0))
    assert isinstance(render, RenderBackup) and render.request == REQUESTED
    assert render.deadline == T0 + timedelta(seconds=120)
    state, [rendered, commit] = react(state, Rendered(OP, PATH, "kind: DatabaseBackup\n", T0))
    assert isinstance(rendered.command.payload, RecordBackupRendered)
    assert isinstance(commit, Commit) and commit.path == PATH and commit.operation_id == OP
    assert "Back up acme/orders in local" == commit.message
    state, [committed] = react(state, Committed(OP, "c0ffee", True, T0))
    assert committed.command.payload == RecordBackupCommitted(BK, OP, PATH, "c0ffee", True)
    assert not state.in_flight


def test_a_deletion_removes_the_claim_file():
    deletion = BackupDeletionRequested(BK, OP, SVC, "local", "expired")
    state, [render] = react(fresh(), EventArrived(env(deletion), T0))
    state, [_, commit] = react(state, Rendered(OP, PATH, None, T0))
    assert commit.content is None and commit.message.startswith("Delete backup bk-1")


def test_a_kube_pop_deletion_commits_its_deletion_record_with_the_removal():
    deletion = BackupDeletionRequested(BK, OP, SVC, "frankfurt", "requested")
    record = (("tenants/acme/frankfurt/deletions/backups/bk-1.yaml", "kind: ConfigMap\n"),)
    state, _ = react(fresh(), EventArrived(env(deletion), T0))
    state, [_, commit] = react(state, Rendered(OP, PATH, None, T0, record))
    assert commit.content is None and commit.also == record  # one commit: the record, then the prune


def test_a_refused_render_fails_the_backup():
    state, _ = react(fresh(), EventArrived(env(REQUESTED), T0))
    state, [send] = react(state, StepRefused(OP, "render", "the chart refused the values", T0))
    assert send.command.payload == RecordBackupStepFailed(BK, OP, "render", "the chart refused the values", "failed")


def test_a_committed_backup_the_pop_does_not_report_times_out_even_after_a_restart():
    state, _ = react(fresh(), EventReplayed(env(BackupClaimCommitted(BK, OP, PATH, "c0ffee"))))
    assert state.awaiting[OP].backup_id == BK
    assert react(state, Tick(T0 + timedelta(seconds=599)))[1] == []
    state, [send] = react(state, Tick(T0 + timedelta(seconds=600)))
    assert isinstance(send.command.payload, RecordBackupStepFailed)
    assert send.command.payload.code == "timed_out" and send.command.payload.step == "pop-report"
    assert OP not in state.awaiting


def test_a_completed_backup_is_awaited_no_more():
    state, _ = react(fresh(), EventReplayed(env(BackupClaimCommitted(BK, OP, PATH, "c0ffee"))))
    done = BackupCompleted(BK, OP, SVC, T0, 1, "s3://b", "d", "k")
    state, _ = react(state, EventReplayed(env(done)))
    assert OP not in state.awaiting


def test_a_failed_backup_with_a_committed_claim_is_reverted_and_the_revert_recorded():
    failed = BackupFailed(BK, OP, SVC, "disk full", "pop_failed", "pop-report", compensate=True)
    state, [revert] = react(fresh(), EventArrived(env(failed), T0))
    assert isinstance(revert, Revert) and revert.revert_id == revert_operation_id(OP)
    state, [send] = react(state, Reverted(OP, "5ca1ab1e", T0))
    assert send.command.payload == RecordBackupReverted(BK, OP, "5ca1ab1e") and not state.in_flight


def test_a_backup_report_of_the_pops_own_key_is_relayed():
    report = PopReport(TENANT, SVC, OP, "local", "Completed", None, None, None, "r-1", T0, key_id="pop-local",
                       key_kind="pop", key_pop="local", backup_id=BK, details='{"size_bytes": 1}')
    _, [send] = react(fresh(), report)
    assert isinstance(send, Send)
    assert send.command.payload == RecordBackupReport(BK, OP, "local", "Completed", None, '{"size_bytes": 1}')
