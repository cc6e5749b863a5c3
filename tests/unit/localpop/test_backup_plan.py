"""The local PoP's backup plan: take what the GitOps repository asks for once per operation,
re-send until acknowledged, drop what it no longer holds (never what cannot be read), forget once
the drop is acknowledged; and the DatabaseBackup / spec.restore parsing."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from operators.localpop import backupplan as bp
from operators.localpop.claims import (
    BackupClaim,
    CommitRef,
    History,
    InvalidClaim,
    Restore,
    parse_backup_claim,
    parse_claim,
    pop_backup_path,
    pop_claim_path,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PATH = "tenants/acme/local/backups/bk-1.yaml"
CLAIM = BackupClaim("acme", "bk-1", "svc-1", "yugabyte", "local", True)
COMMIT = CommitRef("c1", "op-1", "corr-1", "A")
HISTORY = History({PATH: COMMIT}, {})


def wanted():
    return bp.desired_backups({PATH: CLAIM}, HISTORY, "local", {PATH: "acme"})


def test_a_new_backup_file_is_taken_once_per_operation():
    want, unreadable = wanted()
    [step] = bp.plan_backups(want, {})
    assert isinstance(step, bp.Take) and step.wanted.operation_id == "op-1" and step.wanted.pitr
    record = bp.taken(step.wanted, '{"size_bytes": 1}', NOW)
    [resend] = bp.plan_backups(want, {record.key: record})
    assert isinstance(resend, bp.ResendBackup)
    from dataclasses import replace
    assert bp.plan_backups(want, {record.key: replace(record, reported=True)}) == []


def test_a_removed_file_drops_the_backup_then_forgets_it_once_acknowledged():
    want, _ = wanted()
    record = bp.taken(want[CLAIM.key], "{}", NOW)
    [drop] = bp.plan_backups({}, {record.key: record})
    assert isinstance(drop, bp.Drop)
    gone = bp.dropped(record, CommitRef("c2", "op-2", None, "D"), NOW)
    assert (gone.action, gone.phase, gone.operation_id, gone.stored) == ("drop", "Deleted", "op-2", False)
    [resend] = bp.plan_backups({}, {gone.key: gone})
    assert isinstance(resend, bp.ResendBackup)
    from dataclasses import replace
    [forget] = bp.plan_backups({}, {gone.key: replace(gone, reported=True)})
    assert isinstance(forget, bp.ForgetBackup)


def test_an_unreadable_file_drops_nothing():
    want, _ = wanted()
    record = bp.taken(want[CLAIM.key], "{}", NOW)
    assert bp.plan_backups({}, {record.key: record}, {PATH}) == []


def test_a_report_carries_the_backup_and_its_details_only_when_completed():
    want, _ = wanted()
    report = bp.report(bp.taken(want[CLAIM.key], '{"size_bytes": 1}', NOW), "local")
    assert (report["backup_id"], report["phase"], report["details"]) == ("bk-1", "Completed", '{"size_bytes": 1}')
    failed = bp.report(bp.take_failed(want[CLAIM.key], "disk full", NOW), "local")
    assert (failed["phase"], failed["reason"], failed["details"]) == ("Failed", "disk full", None)


def test_a_claim_in_another_tenants_folder_is_refused():
    want, _ = bp.desired_backups({PATH: CLAIM}, HISTORY, "local", {PATH: "other"})
    assert "folder of tenant" in want[CLAIM.key].problem


BACKUP_FILE = """
apiVersion: dbaas.io/v1alpha1
kind: DatabaseBackup
metadata:
  name: orders-1
  labels: {dbaas.io/service-id: svc-1, dbaas.io/pop: local, dbaas.io/engine: yugabyte}
spec: {tenant: acme, backupId: bk-1, engine: yugabyte, pitr: true, serviceClaimRef: {name: orders-1}}
"""


def test_backup_files_and_restore_specs_are_read():
    assert pop_backup_path(PATH, "local") == ("acme", "bk-1") and pop_claim_path(PATH, "local") is None
    assert parse_backup_claim(BACKUP_FILE, PATH) == CLAIM
    with pytest.raises(InvalidClaim):
        parse_backup_claim(BACKUP_FILE.replace("backupId: bk-1, ", ""), PATH)
    claim = parse_claim("""
apiVersion: dbaas.io/v1alpha1
kind: ServiceClaim
metadata: {name: copy-1}
spec: {tenant: acme, serviceId: svc-2, name: copy, engine: yugabyte, pop: local,
       restore: {sourceTenant: acme, sourceServiceId: svc-1, sourceEngine: yugabyte, targetTime: "2026-03-01T11:00:00Z"}}
""")
    assert claim.restore == Restore("acme", "svc-1", "yugabyte", None, "2026-03-01T11:00:00Z")
