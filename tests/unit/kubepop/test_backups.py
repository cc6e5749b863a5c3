"""How the PoP operator judges a backup in a Kubernetes PoP (operators.kubepop.backups): YugabyteDB's
Backup status (as YBA's operator writes it) maps to Completed / Progressing / Failed, engines without
a one-shot backup fail at once with reason Unsupported, and the records and reports are the local
PoP's (operators.localpop.backupplan) — same shape, same idempotent report ids."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from operators.kubepop import backups as bk
from operators.localpop import backupplan
from operators.localpop.plan import report_id

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _yb(message=None, uuid=None):
    obj = {"apiVersion": "operator.yugabyte.io/v1alpha1", "kind": "Backup",
           "metadata": {"name": "orders-1a2b3c4d-9f8e7d6c", "namespace": "tenant-acme"}}
    status = {k: v for k, v in (("message", message), ("resourceUUID", uuid)) if v is not None}
    if status:
        obj["status"] = status
    return obj


YUGABYTE = [
    # Backup resource, state, reason, why
    (None, "Progressing", "EngineBackupMissing", "the sync has not applied it yet"),
    (_yb(), "Progressing", "BackupInProgress", "YBA has not picked it up"),
    (_yb("Backup State: InProgress"), "Progressing", "BackupInProgress", "running"),
    (_yb("Backup State: Stopping"), "Progressing", "BackupInProgress", "being stopped, not yet stopped"),
    (_yb("Backup State: Completed", "u-1"), "Completed", "BackupCompleted", "done"),
    (_yb("Backup State: Failed"), "Failed", "BackupFailed", "YBA's task failed"),
    (_yb("Backup State: Stopped"), "Failed", "BackupStopped", "stopped: nothing restorable"),
    (_yb("Backup State: Skipped"), "Failed", "BackupSkipped", "skipped: nothing taken"),
    (_yb("Backup State: DeleteInProgress"), "Progressing", "BackupInProgress", "not an outcome of taking it"),
    (_yb("Backup task submitted"), "Progressing", "BackupInProgress", "a message that is not a state"),
]


@pytest.mark.parametrize("obj, state, reason, why", YUGABYTE, ids=[c[3] for c in YUGABYTE])
def test_yugabyte_backup_status_maps_to_an_outcome(obj, state, reason, why):
    verdict = bk.assess("yugabyte", obj)
    assert (verdict.state, verdict.reason) == (state, reason), why


@pytest.mark.parametrize("engine", ["vitess", "scylla", "dragonfly", "aerospike", "mongodb"])
def test_engines_without_a_one_shot_backup_fail_at_once_as_unsupported(engine):
    verdict = bk.assess(engine, None)
    assert (verdict.state, verdict.reason) == ("Failed", "Unsupported")
    assert engine in verdict.message


def _database_backup(pop="frankfurt", encryption=None):
    spec = {"tenant": "acme", "backupId": "bk-1", "engine": "yugabyte", "pitr": False,
            "destination": {"bucket": "dbaas-backups", "prefix": "/tenants/acme/backups/bk-1/"}}
    if encryption:
        spec["encryption"] = encryption
    return {"metadata": {"name": "orders-1a2b3c4d-9f8e7d6c", "namespace": "tenant-acme", "generation": 1,
                         "labels": {"dbaas.io/service-id": "svc-1", "dbaas.io/pop": pop},
                         "annotations": {"dbaas.io/operation-id": "op-1"}}, "spec": spec}


def test_a_completed_backup_is_reported_as_the_local_pop_reports_one():
    obj = _database_backup()
    want = bk.wanted(obj, "op-1", "frankfurt")
    assert want.problem is None and want.key == "acme/backup/bk-1" and want.service_id == "svc-1"
    record = backupplan.taken(want, bk.details(obj, _yb("Backup State: Completed", "u-1"), NOW), NOW)
    report = backupplan.report(record, "frankfurt")
    assert report["report_id"] == report_id("op-1", "Completed")  # idempotent: the same id when re-sent
    assert (report["phase"], report["backup_id"], report["service_id"], report["tenant_id"]) == (
        "Completed", "bk-1", "svc-1", "acme")
    details = json.loads(report["details"])
    assert details["location"] == "s3://dbaas-backups/tenants/acme/backups/bk-1"
    assert datetime.fromisoformat(details["taken_at"]) == NOW and details["size_bytes"] == 0
    assert details["consistency"]["engine_backup_uuid"] == "u-1"
    assert {"dek_id", "kek_id", "tables"} <= details.keys()


def test_a_failed_backup_is_reported_with_its_reason_and_no_details():
    want = bk.wanted(_database_backup(), "op-1", "frankfurt")
    verdict = bk.assess("scylla", None)
    record = backupplan.take_failed(want, f"{verdict.reason}: {verdict.message}", NOW)
    report = backupplan.report(record, "frankfurt")
    assert report["phase"] == "Failed" and report["reason"].startswith("Unsupported: scylla")
    assert report["details"] is None and report["report_id"] == report_id("op-1", "Failed")


def test_a_database_backup_for_another_pop_is_refused():
    assert "PoP 'lagos'" in bk.wanted(_database_backup(pop="lagos"), "op-1", "frankfurt").problem


def test_the_database_backup_status_follows_the_verdict():
    running = bk.status(bk.assess("yugabyte", _yb("Backup State: InProgress")), 1, NOW.isoformat(), "s3://b")
    assert running["phase"] == "Running" and running["conditions"][0]["status"] == "False"
    assert "completedAt" not in running and "location" not in running
    done = bk.status(bk.assess("yugabyte", _yb("Backup State: Completed")), 1, NOW.isoformat(), "s3://b")
    assert done["phase"] == "Completed" and done["location"] == "s3://b" and done["completedAt"] == NOW.isoformat()
    assert done["conditions"] == [{"type": "Ready", "status": "True", "reason": "BackupCompleted",
                                   "message": "YugabyteDB Anywhere completed the backup", "observedGeneration": 1}]
    failed = bk.status(bk.assess("mongodb", None), None, NOW.isoformat(), None)
    assert failed["phase"] == "Failed" and failed["conditions"][0]["reason"] == "Unsupported"


class _Reporter:
    """Kafka as the ledger sees it: what was sent, and which sends it acknowledged."""

    def __init__(self, ack: bool = True):
        self.sent: list[dict] = []
        self.ack = ack
        self._pending: set[str] = set()

    def send(self, tenant, record):
        self.sent.append(record)
        self._pending.add(record["report_id"])

    def flush(self, _timeout):
        acked, self._pending = (self._pending if self.ack else set()), set()
        return acked


def _ledger(tmp_path, reporter):
    from types import SimpleNamespace

    from cryptography.fernet import Fernet

    from operators.kubepop.operator import Ledger

    settings = SimpleNamespace(state_dir=tmp_path, pop="frankfurt", credentials_key=Fernet.generate_key().decode(),
                               flush_timeout=0.1)
    return Ledger(settings, reporter, clock=lambda: NOW)


def test_a_backup_report_is_resent_until_acknowledged_and_never_after_a_restart(tmp_path):
    want = bk.wanted(_database_backup(), "op-1", "frankfurt")
    lost = _Reporter(ack=False)
    ledger = _ledger(tmp_path, lost)
    ledger.store_backup(backupplan.taken(want, bk.details(_database_backup(), None, NOW), NOW))
    ledger.report_round()
    ledger.report_round()
    assert [r["phase"] for r in lost.sent] == ["Completed", "Completed"]  # not acknowledged: sent again
    assert len({r["report_id"] for r in lost.sent}) == 1  # the same report each time

    restarted = _Reporter()
    ledger = _ledger(tmp_path, restarted)  # a restart before Kafka acknowledged: it is still pending
    ledger.report_round()
    assert [r["phase"] for r in restarted.sent] == ["Completed"]
    again = _Reporter()
    ledger = _ledger(tmp_path, again)  # acknowledged, then restarted: nothing twice
    ledger.report_round()
    assert again.sent == [] and ledger.backup(want.key).reported
