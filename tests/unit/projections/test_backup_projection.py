"""The backups read model and the backup columns of the services and operations read models, fed
with the events `decide` itself produces: a backup through its operation (Requested, Running,
Completed), a failed one, a deletion that fails (the backup stays Completed) and one that
succeeds; a policy, a restore and a deletion on the service; and the recovery window read from
those rows, which must agree with the window `decide` judges restores by."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from commands import (
    BackupService,
    CreateOrganization,
    CreateService,
    DeleteBackup,
    DeleteService,
    RecordBackupStepFailed,
    RestoreService,
    SetBackupPolicy,
)
from commands.decide import recovery_window
from events.backups import Restorable
from projections.projectors import PROJECTIONS
from projections.queries import backup_status
from projections.reads import BackupPolicyReading, ScheduleGap, ServiceBackupFacts, recovery
from projections.tables import build_tables
from projections.timetravel import replay
from tests.unit.domain.domain_builders import (
    DB1,
    DB2,
    SYSTEM,
    T0,
    backup_details,
    backup_saga,
    cmd,
    op,
    run,
    saga,
)

BK1 = "9c2d7e4f-1a3b-4c5d-8e6f-7a8b9c0d1e2f"
BK2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
DB3 = "2f1d0c6a-7b9e-4e3a-9f4c-3d5e7f9a1b23"
M = timedelta(minutes=1)


def at(minutes: int, command):
    return replace(command, issued_at=T0 + minutes * M)


ORG = cmd(CreateOrganization("acme", "Acme"))
CREATE = cmd(CreateService(DB1, "orders", "yugabyte", "local", "small"))
READY = [ORG, CREATE, *saga(DB1, op(CREATE), pop="local")]
POLICY = at(1, cmd(SetBackupPolicy(DB1, "0 3 * * *", 7, 30, True)))
BACKUP = at(2, cmd(BackupService(DB1, BK1)))
RENDERED, COMMITTED, COMPLETED = (at(3, c) for c in backup_saga(
    BK1, op(BACKUP), details=backup_details(T0 + 3 * M, pitr_from=T0 + 3 * M)))
TAKEN = [*READY, POLICY, BACKUP, RENDERED, COMMITTED, COMPLETED]
FORGET = at(5, cmd(DeleteBackup(BK1)))
FAILED_DELETION = [FORGET, *(at(6, c) for c in backup_saga(BK1, op(FORGET), "Failed", reason="store down"))]
FORGET_AGAIN = at(7, cmd(DeleteBackup(BK1), command_id="7d8e9f00-1111-4222-8333-944455556666"))
DELETED = [FORGET_AGAIN, *(at(8, c) for c in backup_saga(BK1, op(FORGET_AGAIN), "Deleted"))]


def rows(steps) -> dict[str, dict[str, dict]]:
    """The read models the events of `steps` make, as the projectors write them."""
    _state, produced = run(steps)
    return replay(produced, T0 + timedelta(days=365))


def backup_row(steps, backup_id: str = BK1) -> dict:
    row = rows(steps)["backups"][backup_id]
    return {**row, "status": backup_status(row["status"], row["step"])}


@pytest.mark.parametrize(("steps", "status"), [
    ([*READY, POLICY, BACKUP], "Requested"),
    ([*READY, POLICY, BACKUP, RENDERED], "Running"),
    ([*READY, POLICY, BACKUP, RENDERED, COMMITTED], "Running"),
    (TAKEN, "Completed"),
    ([*TAKEN, FORGET], "Deleting"),
    ([*TAKEN, FORGET, *FAILED_DELETION[1:2]], "Deleting"),  # a deletion's render is not a backup running
    ([*TAKEN, *FAILED_DELETION], "Completed"),
    ([*TAKEN, *FAILED_DELETION, *DELETED], "Deleted"),
], ids=["requested", "rendered", "committed", "completed", "deleting", "deletion-rendered",
        "deletion-failed", "deleted"])
def test_a_backups_status_follows_its_events(steps, status):
    assert backup_row(steps)["status"] == status


def test_a_completed_backup_row_holds_the_manifest_and_where_it_came_from():
    row = backup_row(TAKEN)
    assert {k: row[k] for k in ("tenant_id", "service_id", "service_name", "engine", "pop", "slot", "pitr",
                                "operation_id", "size_bytes", "dek_id", "kek_id", "reason")} == {
        "tenant_id": "acme", "service_id": DB1, "service_name": "orders", "engine": "yugabyte", "pop": "local",
        "slot": None, "pitr": True, "operation_id": op(BACKUP), "size_bytes": 4096, "dek_id": "dek1",
        "kek_id": "kek1", "reason": None}
    assert (row["requested_at"], row["taken_at"], row["pitr_from"]) == (T0 + 2 * M, T0 + 3 * M, T0 + 3 * M)
    assert row["consistency"] == {"lsn": "0/3000060"}
    assert row["tables"] == {"orders": {"rows": 2, "checksum": "x"}}
    assert row["location"].startswith("s3://")


def test_a_failed_deletion_leaves_the_backup_completed_with_the_reason_and_a_new_one_clears_it():
    failed = backup_row([*TAKEN, *FAILED_DELETION])
    assert (failed["deletion_operation_id"], failed["deletion_reason"]) == (op(FORGET), "requested")
    assert "store down" in failed["reason"] and failed["taken_at"] == T0 + 3 * M
    again = backup_row([*TAKEN, *FAILED_DELETION, FORGET_AGAIN])
    assert (again["status"], again["reason"], again["deletion_operation_id"]) == (
        "Deleting", None, op(FORGET_AGAIN))


def test_backup_operations_have_the_three_steps_of_a_service_operation():
    ops = rows([*TAKEN, *FAILED_DELETION, *DELETED])["operations"]
    backup = ops[op(BACKUP)]
    assert (backup["type"], backup["aggregate_id"], backup["state"], backup["done_steps"], backup["total_steps"]) == (
        "BackupService", BK1, "Succeeded", 3, 3)
    assert backup["render_step"]["state"] == backup["commit_step"]["state"] == backup["report_step"]["state"] == "Done"
    assert backup["commit_step"]["ref"] == "c0ffee" and backup["report_step"]["ref"].startswith("s3://")
    failed = ops[op(FORGET)]
    assert (failed["type"], failed["state"], failed["done_steps"], failed["reason_code"]) == (
        "DeleteBackup", "Failed", 2, "pop_failed")
    assert failed["report_step"]["state"] == "Failed" and "store down" in failed["message"]
    assert failed["compensation"]["state"] == "Pending"  # its commit (the file's removal) is reverted
    deleted = ops[op(FORGET_AGAIN)]
    assert (deleted["state"], deleted["done_steps"], deleted["report_step"]["state"]) == ("Succeeded", 3, "Done")
    assert rows([*READY, POLICY, BACKUP])["operations"][op(BACKUP)]["state"] == "Accepted"
    assert rows([*READY, POLICY, BACKUP, RENDERED])["operations"][op(BACKUP)]["state"] == "Running"


def test_a_backup_failing_before_its_commit_fails_its_step_without_compensation():
    late = at(4, cmd(RecordBackupStepFailed(BK1, op(BACKUP), "render", "no render in 120 s", "timed_out"),
                     actor=SYSTEM))
    made = rows([*READY, BACKUP, late])
    backup, operation = made["backups"][BK1], made["operations"][op(BACKUP)]
    assert (backup["status"], backup["reason"]) == ("Failed", "no render in 120 s")
    assert (operation["state"], operation["reason_code"], operation["render_step"]["state"],
            operation["compensation"]) == ("Failed", "timed_out", "Failed", None)


def test_the_service_keeps_its_policy_its_restore_source_and_its_deletion_time():
    restore = at(9, cmd(RestoreService(DB2, "orders-copy", DB1, backup_id=BK1)))
    delete = at(10, cmd(DeleteService(DB1)))
    made = rows([*TAKEN, restore, *saga(DB2, op(restore), pop="local"), delete,
                 *(at(11, c) for c in saga(DB1, op(delete), "Deleted", pop="local"))])
    source, copy = made["services"][DB1], made["services"][DB2]
    assert source["backup_policy"] == {"schedule": "0 3 * * *", "retain_count": 7, "retain_days": 30, "pitr": True,
                                       "set_at": (T0 + M).isoformat()}
    assert source["last_operation_id"] == op(delete) and source["deleted_at"] == T0 + 11 * M
    assert copy["restore"] == {"source_service_id": DB1, "source_engine": "yugabyte", "backup_id": BK1,
                               "to_time": None}
    assert (copy["status"], copy["deleted_at"], copy["backup_policy"]) == ("Ready", None, None)
    creation = made["operations"][op(restore)]  # a restore is a creation: the service's own steps
    assert (creation["type"], creation["aggregate_id"], creation["state"], creation["done_steps"]) == (
        "RestoreService", DB2, "Succeeded", 3)


def test_every_backup_change_is_a_whole_row_or_some_of_its_columns():
    """`projections.fold` relies on it: a change that `creates` carries every column."""
    _state, produced = run([*TAKEN, *FAILED_DELETION, *DELETED])
    tables = build_tables()
    columns = {c.name for c in tables.backups.columns} - {"id", "version"}
    kinds = set()
    for envelope in produced:
        change = PROJECTIONS["backups"].change(envelope)
        if change is None:
            continue
        kinds.add(type(envelope.payload).__name__)
        assert change.version == envelope.sequence and envelope.aggregate_type == "backup"
        if change.creates:
            assert set(change.values) == columns
        else:
            assert change.values and set(change.values) < columns
    assert kinds == {"BackupRequested", "BackupClaimRendered", "BackupClaimCommitted", "BackupCompleted",
                     "BackupFailed", "BackupDeletionRequested", "BackupDeleted"}


# -- the recovery window ------------------------------------------------------------------------
def facts(engine: str = "yugabyte", *, pitr: bool | None = True, set_at=T0, deleted_at=None) -> ServiceBackupFacts:
    policy = None if pitr is None else BackupPolicyReading("0 3 * * *", 0, 0, pitr, set_at)
    return ServiceBackupFacts(DB1, "acme", "orders", engine, "Ready", policy, deleted_at, None)


def test_a_service_without_backups_has_an_empty_window():
    reading = recovery(facts(), [], [], T0 + 60 * M)
    assert (reading.window.pitr, reading.window.instants, reading.gaps) == (False, (), ())


def test_with_the_log_archived_the_window_runs_from_the_oldest_base_to_now():
    done = [Restorable(BK2, T0 + 20 * M, T0 + 20 * M), Restorable(BK1, T0 + 10 * M, T0 + 10 * M)]
    reading = recovery(facts(), done, [], T0 + 60 * M)
    assert reading.window.pitr and (reading.window.earliest, reading.window.latest) == (T0 + 10 * M, T0 + 60 * M)
    assert [i.backup_id for i in reading.window.instants] == [BK1, BK2]


@pytest.mark.parametrize(("service", "latest"), [
    (facts(pitr=False, set_at=T0 + 30 * M), T0 + 30 * M),
    (facts(deleted_at=T0 + 40 * M), T0 + 40 * M),
], ids=["pitr-turned-off", "service-deleted"])
def test_the_window_ends_when_pitr_was_turned_off_or_the_service_deleted(service, latest):
    reading = recovery(service, [Restorable(BK1, T0 + 10 * M, T0 + 10 * M)], [], T0 + 60 * M)
    assert (reading.window.earliest, reading.window.latest) == (T0 + 10 * M, latest)


def test_backups_without_a_log_are_instants_only_and_gaps_are_failed_slots_since_the_oldest():
    old_gap = ScheduleGap("g1", (T0 + 5 * M).isoformat(), "disk full", T0 + 5 * M)
    new_gap = ScheduleGap("g2", (T0 + 15 * M).isoformat(), "timed out", T0 + 15 * M)
    reading = recovery(facts("dragonfly", pitr=None), [Restorable(BK1, T0 + 10 * M, None)], [new_gap, old_gap],
                       T0 + 60 * M)
    assert not reading.window.pitr and [i.backup_id for i in reading.window.instants] == [BK1]
    assert reading.gaps == (new_gap,)


def test_the_read_side_window_is_the_one_decide_judges_restores_by():
    second = at(20, cmd(BackupService(DB1, BK2)))
    steps = [*TAKEN, second, *(at(21, c) for c in backup_saga(
        BK2, op(second), details=backup_details(T0 + 21 * M, pitr_from=T0 + 21 * M))),
        *FAILED_DELETION, at(30, cmd(SetBackupPolicy(DB1, None, 0, 0, False)))]
    state, produced = run(steps)
    made = replay(produced, T0 + timedelta(days=1))
    service = made["services"][DB1]
    policy = service["backup_policy"]
    read_facts = ServiceBackupFacts(DB1, "acme", "orders", "yugabyte", service["status"], BackupPolicyReading(
        policy["schedule"], policy["retain_count"], policy["retain_days"], policy["pitr"],
        datetime.fromisoformat(policy["set_at"])), service["deleted_at"], service["restore"])
    done = [Restorable(b["id"], b["taken_at"], b["pitr_from"]) for b in made["backups"].values()
            if b["status"] == "Completed"]
    now = T0 + 90 * M
    assert recovery(read_facts, done, [], now).window == recovery_window(state, state.services[DB1], now)
    assert recovery(read_facts, done, [], now).window.latest == T0 + 30 * M

