"""The backup routes over an in-memory read port and a fake publisher: who may back up, delete,
set a policy and restore (roles, 404 for strangers), the commands they publish, validation (422),
reads of backups and policies, and the recovery window's answer."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from commands import BackupService, DeleteBackup, RestoreService, SetBackupPolicy
from gateway.access import read_model
from gateway.app import GatewaySettings, create_app
from gateway.auth import Authenticator, Identity, current_identity
from projections.reads import BackupPolicyReading, BackupReading, ServiceBackupFacts
from tests.unit.gateway.fake_reads import FakeReadModel
from tests.unit.gateway.test_access import ISS, FakePublisher, as_, who

CACHE = "5b1b6a39-0d6e-4a43-9b4f-3c8b0c1f2a10"  # dragonfly, acme
ORDERS = "6c2c7b4a-1e7f-4b54-8c5a-4d9c1d2e3b21"  # yugabyte, acme
LEDGER = "9f3c2d1e-7a6b-4c5d-8e9f-0a1b2c3d4e5f"  # vitess, globex
BK1, BK2, BK3, BK4 = (str(uuid.UUID(int=i)) for i in range(1, 5))
T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
H = timedelta(hours=1)


def backup(backup_id: str, service_id: str, status: str, requested_at: datetime, *, tenant: str = "acme",
           taken_at: datetime | None = None, pitr_from: datetime | None = None, slot: str | None = None,
           reason: str | None = None) -> BackupReading:
    return BackupReading(backup_id, tenant, service_id, "orders", "yugabyte", "local", status, slot,
                         pitr_from is not None, "op-" + backup_id[-4:], None, requested_at, taken_at, pitr_from,
                         4096 if taken_at else None, "s3://b" if taken_at else None, None, None, None, None,
                         reason, None, requested_at, requested_at)


@pytest.fixture
def reads() -> FakeReadModel:
    policy = BackupPolicyReading("0 3 * * *", 7, 0, True, T0 - 24 * H)
    return FakeReadModel(
        roles={("acme", who("olivia")): "org-owner", ("acme", who("sam")): "service-admin",
               ("acme", who("vera")): "service-viewer", ("globex", who("gus")): "org-owner"},
        services={CACHE: ("acme", None), ORDERS: ("acme", None), LEDGER: ("globex", None)},
        facts={CACHE: ServiceBackupFacts(CACHE, "acme", "cache", "dragonfly", "Ready", None, None, None),
               ORDERS: ServiceBackupFacts(ORDERS, "acme", "orders", "yugabyte", "Ready", policy, None, None),
               LEDGER: ServiceBackupFacts(LEDGER, "globex", "ledger", "vitess", "Ready", None, None, None)},
        backup_rows={b.backup_id: b for b in (
            backup(BK1, ORDERS, "Completed", T0, taken_at=T0 + timedelta(minutes=1), pitr_from=T0),
            backup(BK2, ORDERS, "Failed", T0 + H, slot=(T0 + H).isoformat(), reason="disk full"),
            backup(BK3, ORDERS, "Deleted", T0 - H, taken_at=T0 - H),
            backup(BK4, LEDGER, "Completed", T0, tenant="globex", taken_at=T0))},
    )


@pytest.fixture
def api(reads, monkeypatch):
    monkeypatch.delenv("DBAAS_RATE_LIMITS", raising=False)
    app = create_app(GatewaySettings("127.0.0.1:9", "http://127.0.0.1:9", "postgresql://x@127.0.0.1:9/x"),
                     Authenticator([]))
    publisher = app.state.publisher = FakePublisher()

    def identity(request: Request) -> Identity:
        return Identity(request.headers["x-who"], ISS, {})

    app.dependency_overrides[current_identity] = identity
    app.dependency_overrides[read_model] = lambda: reads
    client = TestClient(app)
    client.publisher = publisher  # type: ignore[attr-defined]
    return client


ACCESS = [
    # (reason, caller, method, path, body, status, text)
    ("a service-admin backs a service up", "sam", "POST", f"/services/{ORDERS}/backups", {}, 202, "backup_id"),
    ("without a body too", "sam", "POST", f"/services/{ORDERS}/backups", None, 202, "backup_id"),
    ("a service-viewer may not", "vera", "POST", f"/services/{ORDERS}/backups", {}, 403,
     "BackupService needs one of the roles org-owner, org-admin, service-admin"),
    ("another organization's service does not exist for the caller", "gus", "POST",
     f"/services/{ORDERS}/backups", {}, 404, f"no service {ORDERS}"),
    ("a service-viewer lists backups", "vera", "GET", f"/services/{ORDERS}/backups", None, 200, BK1),
    ("a stranger does not", "gus", "GET", f"/services/{ORDERS}/backups", None, 404, f"no service {ORDERS}"),
    ("an unknown service", "olivia", "GET", f"/services/{uuid.uuid4()}/backups", None, 404, "no service"),
    ("a viewer reads one backup", "vera", "GET", f"/backups/{BK1}", None, 200, '"status":"Completed"'),
    ("another organization's backup is not found", "olivia", "GET", f"/backups/{BK4}", None, 404,
     f"no backup {BK4}"),
    ("a viewer may not delete a backup", "vera", "DELETE", f"/backups/{BK1}", None, 403,
     "DeleteBackup needs one of the roles"),
    ("a stranger's backup cannot be deleted", "olivia", "DELETE", f"/backups/{BK4}", None, 404,
     f"no backup {BK4}"),
    ("an org-owner deletes a backup", "olivia", "DELETE", f"/backups/{BK1}", None, 202, BK1),
    ("a viewer reads the policy", "vera", "GET", f"/services/{ORDERS}/backup-policy", None, 200, '"pitr":true'),
    ("a viewer may not set it", "vera", "PUT", f"/services/{ORDERS}/backup-policy", {"pitr": False}, 403,
     "SetBackupPolicy needs one of the roles"),
    ("a viewer reads the recovery window", "vera", "GET", f"/services/{ORDERS}/recovery-window", None, 200,
     '"pitr":true'),
    ("a stranger does not", "gus", "GET", f"/services/{ORDERS}/recovery-window", None, 404, "no service"),
    ("a viewer may not restore", "vera", "POST", f"/services/{ORDERS}/restore",
     {"name": "copy", "backup_id": BK1}, 403, "RestoreService needs one of the roles"),
    ("a stranger may not restore another organization's service", "gus", "POST", f"/services/{ORDERS}/restore",
     {"name": "copy", "backup_id": BK1}, 404, f"no service {ORDERS}"),
]


@pytest.mark.parametrize(("reason", "caller", "method", "path", "body", "status", "text"), ACCESS,
                         ids=[a[0] for a in ACCESS])
def test_backup_routes_are_decided_by_roles_and_hide_other_organizations(api, reason, caller, method, path,
                                                                         body, status, text):
    answer = api.request(method, f"/api/v1{path}", headers=as_(caller), json=body)
    assert answer.status_code == status, (reason, answer.text)
    assert text in answer.text, reason
    if status != 202:
        assert api.publisher.published == [], reason


def test_backing_up_publishes_backup_service_and_answers_the_operation_and_the_backup(api):
    key = str(uuid.uuid4())
    first = api.post(f"/api/v1/services/{ORDERS}/backups", headers={**as_("sam"), "Idempotency-Key": key})
    again = api.post(f"/api/v1/services/{ORDERS}/backups", headers={**as_("sam"), "Idempotency-Key": key}, json={})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()  # the same request: the same backup id, the same operation
    body = first.json()
    assert first.headers["Location"] == body["status_url"] == f"/api/v1/operations/{body['operation_id']}"
    [sent, resent] = api.publisher.published
    assert sent.payload == resent.payload == BackupService(ORDERS, body["backup_id"])
    assert (sent.tenant_id, sent.command_id, body["service_id"]) == ("acme", key, ORDERS)
    other = api.post(f"/api/v1/services/{ORDERS}/backups", headers=as_("sam")).json()
    assert other["backup_id"] != body["backup_id"]


def test_deleting_a_backup_publishes_delete_backup(api):
    answer = api.delete(f"/api/v1/backups/{BK1}", headers=as_("sam"))
    assert answer.json()["backup_id"] == BK1 and answer.json()["service_id"] == ORDERS
    assert api.publisher.published[-1].payload == DeleteBackup(BK1)


def test_setting_a_policy_publishes_it_and_bad_values_are_422_with_the_field(api):
    body = {"schedule": "0 */6 * * *", "retain_count": 10, "retain_days": 14, "pitr": True}
    assert api.put(f"/api/v1/services/{ORDERS}/backup-policy", headers=as_("sam"), json=body).status_code == 202
    assert api.publisher.published[-1].payload == SetBackupPolicy(ORDERS, "0 */6 * * *", 10, 14, True)
    for bad, field in (({"schedule": "every day"}, "schedule"), ({"retain_count": -1}, "retain_count"),
                       ({"retain_days": 100000}, "retain_days")):
        answer = api.put(f"/api/v1/services/{ORDERS}/backup-policy", headers=as_("sam"), json=bad)
        assert answer.status_code == 422, bad
        assert answer.json()["detail"][0]["loc"] == ["body", field]
    assert len(api.publisher.published) == 1


def test_the_policy_of_a_service_without_one_is_the_empty_policy(api):
    cache = api.get(f"/api/v1/services/{CACHE}/backup-policy", headers=as_("vera")).json()
    assert cache == {"service_id": CACHE, "engine": "dragonfly", "schedule": None, "retain_count": 0,
                     "retain_days": 0, "pitr": False, "pitr_supported": False, "set_at": None}
    orders = api.get(f"/api/v1/services/{ORDERS}/backup-policy", headers=as_("vera")).json()
    assert (orders["schedule"], orders["retain_count"], orders["pitr"], orders["pitr_supported"]) == (
        "0 3 * * *", 7, True, True)


def test_backups_are_listed_newest_first_without_deleted_ones_unless_asked(api):
    listed = api.get(f"/api/v1/services/{ORDERS}/backups", headers=as_("vera")).json()["items"]
    assert [b["backup_id"] for b in listed] == [BK2, BK1]
    assert listed[0]["reason"] == "disk full" and listed[1]["taken_at"] is not None
    deleted = api.get(f"/api/v1/services/{ORDERS}/backups", params={"status": "Deleted"}, headers=as_("vera"))
    assert [b["backup_id"] for b in deleted.json()["items"]] == [BK3]
    assert api.get(f"/api/v1/services/{ORDERS}/backups", params={"status": "Lost"},
                   headers=as_("vera")).status_code == 422


def test_the_recovery_window_has_instants_a_span_and_the_schedules_gaps(api):
    window = api.get(f"/api/v1/services/{ORDERS}/recovery-window", headers=as_("vera")).json()
    assert window["pitr"] is True and window["reason"] is None
    assert datetime.fromisoformat(window["earliest"]) == T0
    assert datetime.fromisoformat(window["latest"]) == datetime.fromisoformat(window["as_of"])
    assert [i["backup_id"] for i in window["instants"]] == [BK1]
    assert window["gaps"] == [{"backup_id": BK2, "slot": (T0 + H).isoformat(), "reason": "disk full"}]


def test_an_engine_without_a_log_restores_instants_only_and_says_so(api):
    window = api.get(f"/api/v1/services/{CACHE}/recovery-window", headers=as_("vera")).json()
    assert (window["pitr"], window["earliest"], window["latest"], window["instants"], window["gaps"]) == (
        False, None, None, [], [])
    assert "restores backup instants only" in window["reason"]


def test_restoring_publishes_a_new_service_and_answers_its_id(api):
    key = str(uuid.uuid4())
    to_time = "2026-05-01T03:30:00Z"
    answer = api.post(f"/api/v1/services/{ORDERS}/restore", headers={**as_("sam"), "Idempotency-Key": key},
                      json={"name": "orders-copy", "to_time": to_time, "size": "medium", "labels": {"a": "b"}})
    assert answer.status_code == 202, answer.text
    new = answer.json()["service_id"]
    assert new != ORDERS
    sent = api.publisher.published[-1].payload
    assert sent == RestoreService(new, "orders-copy", ORDERS, None, datetime(2026, 5, 1, 3, 30, tzinfo=UTC), None,
                                  "medium", False, {"a": "b"})
    again = api.post(f"/api/v1/services/{ORDERS}/restore", headers={**as_("sam"), "Idempotency-Key": key},
                     json={"name": "orders-copy", "to_time": to_time, "size": "medium", "labels": {"a": "b"}})
    assert again.json()["service_id"] == new


@pytest.mark.parametrize(("body", "field", "text"), [
    ({"name": "copy", "backup_id": BK1, "to_time": "2026-05-01T03:30:00Z"}, "backup_id", "exactly one of"),
    ({"name": "copy"}, "backup_id", "exactly one of"),
    ({"name": "copy", "to_time": "2026-05-01T03:30:00"}, "to_time", "time zone"),
    ({"name": "Not A Name!", "backup_id": BK1}, "name", "name"),
    ({"name": "copy", "backup_id": "not-a-uuid"}, "backup_id", "UUID"),
    ({"name": "copy", "backup_id": BK1, "pop": "mars"}, "pop", "not offered"),
], ids=["both", "neither", "naive-time", "bad-name", "bad-backup-id", "unknown-pop"])
def test_a_malformed_restore_is_422_and_publishes_nothing(api, body, field, text):
    answer = api.post(f"/api/v1/services/{ORDERS}/restore", headers=as_("sam"), json=body)
    assert answer.status_code == 422, answer.text
    assert any(d["loc"][-1] == field and text.lower() in d["msg"].lower() for d in answer.json()["detail"]), \
        answer.json()
    assert api.publisher.published == []


def test_the_openapi_document_names_every_backup_route(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/v1/services/{service_id}/backups", "/api/v1/backups/{backup_id}",
            "/api/v1/services/{service_id}/backup-policy", "/api/v1/services/{service_id}/recovery-window",
            "/api/v1/services/{service_id}/restore"} <= set(paths)
    assert set(paths["/api/v1/backups/{backup_id}"]) == {"get", "delete"}
