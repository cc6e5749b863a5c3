"""Backups, policies and restores as `decide` judges them: a backup is an operation of its own
(render, commit, PoP report), a restore is the creation of a new service carrying its source, and
a point in time outside the source's recovery window is refused with the window."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from domain_builders import (
    DB1,
    DB2,
    MEMBER,
    SYSTEM,
    T0,
    TENANT,
    backup_details,
    backup_saga,
    cmd,
    op,
    run,
    saga,
    trusted,
)

from commands import (
    BackupService,
    CreateOrganization,
    CreateService,
    DeleteBackup,
    DeleteService,
    RecordBackupStepFailed,
    RestoreService,
    SetBackupPolicy,
    decide,
    fingerprint_of,
)
from events import (
    BackupCompleted,
    BackupDeletionRequested,
    BackupFailed,
    BackupRequested,
    BackupStatus,
    CommandRejected,
    OperationAccepted,
    OperationStarted,
    RestoreSource,
    ServiceRequested,
)

BK1 = "9c2d7e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f"
BK2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
DB3 = "2f1d0c6a-7b9e-4e3a-9f4c-3d5e7f9a1b23"
ORG = cmd(CreateOrganization(TENANT, "Acme"))
CREATE = cmd(CreateService(DB1, "orders", "yugabyte", "local", "small"))
READY = [ORG, CREATE, *saga(DB1, op(CREATE), pop="local")]
PITR = cmd(SetBackupPolicy(DB1, "*/5 * * * *", 3, 7, True))
BACKUP = cmd(BackupService(DB1, BK1), issued_at=T0 + timedelta(minutes=1))
T1 = T0 + timedelta(minutes=2)
DONE = [*READY, PITR, BACKUP, *backup_saga(BK1, op(BACKUP), details=backup_details(T1, pitr_from=T1))]


def judged(steps, when) -> list:
    state, _ = run(steps)
    return [e.payload for e in decide(state, when, fingerprint_of(when.payload), trusted(when))]


def rejection(steps, when) -> CommandRejected:
    [payload] = judged(steps, when)
    assert isinstance(payload, CommandRejected), payload
    return payload


def test_a_backup_is_an_operation_on_the_backup_with_the_policys_pitr():
    payloads = judged([*READY, PITR], BACKUP)
    [requested] = [p for p in payloads if isinstance(p, BackupRequested)]
    [accepted] = [p for p in payloads if isinstance(p, OperationAccepted)]
    assert requested == BackupRequested(BK1, op(BACKUP), DB1, "orders", "yugabyte", "local", None, True)
    assert (accepted.operation_type, accepted.aggregate_id, accepted.total_steps) == ("BackupService", BK1, 3)


def test_a_completed_backup_keeps_what_the_pop_reported():
    state, produced = run(DONE)
    [completed] = [e.payload for e in produced if isinstance(e.payload, BackupCompleted)]
    assert (completed.taken_at, completed.pitr_from, completed.size_bytes) == (T1, T1, 4096)
    assert state.backups[BK1].status is BackupStatus.COMPLETED


def test_a_service_that_does_not_run_yet_cannot_be_backed_up():
    refused = rejection([ORG, CREATE], BACKUP)
    assert refused.reason_code == "conflict" and "once it runs" in refused.message


def test_one_backup_of_a_service_runs_at_a_time():
    second = cmd(BackupService(DB1, BK2))
    refused = rejection([*READY, BACKUP], second)
    assert refused.reason_code == "conflict" and BK1 in refused.message


def test_a_viewer_cannot_back_up_and_pitr_is_refused_for_an_engine_without_a_log():
    assert rejection(READY, cmd(BackupService(DB1, BK2), actor=MEMBER)).reason_code == "forbidden"
    cache = cmd(CreateService(DB2, "cache", "dragonfly", "local", "small"))
    refused = rejection([*READY, cache], cmd(SetBackupPolicy(DB2, None, 0, 0, True)))
    assert (refused.reason_code, refused.field) == ("unsupported", "pitr")


def test_a_failed_backup_is_compensated_and_never_restorable():
    state, produced = run([*READY, BACKUP, *backup_saga(BK1, op(BACKUP), "Failed", reason="disk full")])
    [failed] = [e.payload for e in produced if isinstance(e.payload, BackupFailed)]
    assert failed.compensate and failed.status == "Failed" and "disk full" in failed.reason
    refused = rejection([*READY, BACKUP, *backup_saga(BK1, op(BACKUP), "Failed", reason="disk full")],
                        cmd(RestoreService(DB2, "copy", DB1, backup_id=BK1)))
    assert refused.reason_code == "conflict"


def test_a_backup_that_times_out_before_its_commit_fails_without_compensation():
    late = cmd(RecordBackupStepFailed(BK1, op(BACKUP), "render", "no render in 120 s", "timed_out"), actor=SYSTEM)
    [failed] = judged([*READY, BACKUP], late)
    assert isinstance(failed, BackupFailed) and not failed.compensate and failed.code == "timed_out"


def test_restoring_a_backup_creates_a_new_service_carrying_its_source():
    restore = cmd(RestoreService(DB2, "orders-copy", DB1, backup_id=BK1, size="medium"))
    payloads = judged(DONE, restore)
    [requested] = [p for p in payloads if isinstance(p, ServiceRequested)]
    [started] = [p for p in payloads if isinstance(p, OperationStarted)]
    source = RestoreSource(DB1, "yugabyte", BK1, None)
    assert requested.restore == source and started.restore == source
    assert (requested.engine, requested.pop, requested.size) == ("yugabyte", "local", "medium")


def test_a_point_in_time_outside_the_window_is_refused_with_the_window():
    too_early = cmd(RestoreService(DB2, "copy", DB1, to_time=T1 - timedelta(seconds=1)), issued_at=T1 + timedelta(hours=1))
    refused = rejection(DONE, too_early)
    assert refused.field == "to_time" and T1.isoformat() in refused.message
    future = cmd(RestoreService(DB2, "copy", DB1, to_time=T1 + timedelta(hours=2)), issued_at=T1 + timedelta(hours=1))
    assert "outside the recovery window" in rejection(DONE, future).message
    inside = cmd(RestoreService(DB2, "copy", DB1, to_time=T1 + timedelta(minutes=30)),
                 issued_at=T1 + timedelta(hours=1))
    assert any(isinstance(p, ServiceRequested) for p in judged(DONE, inside))


def test_a_deleted_services_backups_stay_restorable_up_to_its_deletion():
    delete = cmd(DeleteService(DB1), issued_at=T1 + timedelta(minutes=10))
    gone = [*DONE, delete, *(replace(c, issued_at=T1 + timedelta(minutes=10))
                             for c in saga(DB1, op(delete), "Deleted", pop="local"))]
    state, _ = run(gone)
    assert state.services[DB1].deleted_at == T1 + timedelta(minutes=10)
    later = T1 + timedelta(days=1)
    from_backup = cmd(RestoreService(DB2, "orders", DB1, backup_id=BK1), issued_at=later)
    assert any(isinstance(p, ServiceRequested) for p in judged(gone, from_backup))
    after_deletion = cmd(RestoreService(DB3, "orders", DB1, to_time=T1 + timedelta(minutes=20)), issued_at=later)
    assert "outside the recovery window" in rejection(gone, after_deletion).message


def test_deleting_a_backup_is_an_operation_and_retention_says_expired():
    by_hand = judged(DONE, cmd(DeleteBackup(BK1)))
    assert [p.reason for p in by_hand if isinstance(p, BackupDeletionRequested)] == ["requested"]
    by_retention = judged(DONE, cmd(DeleteBackup(BK1), actor=SYSTEM))
    assert [p.reason for p in by_retention if isinstance(p, BackupDeletionRequested)] == ["expired"]
    forget = cmd(DeleteBackup(BK1))
    state, _ = run([*DONE, forget, *backup_saga(BK1, op(forget), "Deleted")])
    assert state.backups[BK1].status is BackupStatus.DELETED
    assert rejection([*DONE, forget, *backup_saga(BK1, op(forget), "Deleted")],
                     cmd(RestoreService(DB2, "copy", DB1, backup_id=BK1))).reason_code == "conflict"


def test_a_failed_deletion_leaves_the_backup_completed():
    forget = cmd(DeleteBackup(BK1))
    state, produced = run([*DONE, forget, *backup_saga(BK1, op(forget), "Failed", reason="store down")])
    [failed] = [e.payload for e in produced if isinstance(e.payload, BackupFailed)]
    assert failed.status == "Completed" and failed.compensate
    assert state.backups[BK1].status is BackupStatus.COMPLETED


def test_a_report_from_another_pop_is_forbidden():
    from commands import RecordBackupReport

    forged = cmd(RecordBackupReport(BK1, op(BACKUP), "frankfurt", "Completed", None, "{}"), actor=SYSTEM)
    assert rejection([*READY, BACKUP], forged).reason_code == "forbidden"
