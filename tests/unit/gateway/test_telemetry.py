"""The metrics and alerts routes over an in-memory read port: who may read them (any role in the
organization; 404 for strangers), the downsampled answer, the range and step checks (422), the
alert list and its filter; and the CLI's chart of the answer."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from cli.telemetry import alert_line, bar, chart, sparkline
from gateway.access import read_model
from gateway.app import GatewaySettings, create_app
from gateway.auth import Authenticator, Identity, current_identity
from projections.reads import AlertReading, ServiceBackupFacts
from projections.series import Sample
from tests.unit.gateway.fake_reads import FakeReadModel
from tests.unit.gateway.test_access import ISS, FakePublisher, as_, who

ORDERS = "6c2c7b4a-1e7f-4b54-8c5a-4d9c1d2e3b21"
LEDGER = "9f3c2d1e-7a6b-4c5d-8e9f-0a1b2c3d4e5f"
MIB = 2**20


def samples(now: datetime) -> list[Sample]:
    """Every 15 s for the last 10 minutes: storage growing by 1 MiB a sample, 3 connections."""
    start = now - timedelta(minutes=10)
    return [Sample(start + i * timedelta(seconds=15), 3, 20, 2.0 * i, None, (8 + i) * MIB, 32 * MIB)
            for i in range(40)]


def alert(alert_id: str, tenant: str, state: str, raised: datetime, kind: str = "storage_high") -> AlertReading:
    return AlertReading(alert_id, tenant, ORDERS, kind, "warning", state, f"{kind} of orders", raised,
                        raised + timedelta(minutes=5) if state == "resolved" else None, "alerts", raised)


def _identity(request: Request) -> Identity:
    return Identity(request.headers["x-who"], ISS, {})


@pytest.fixture
def reads() -> FakeReadModel:
    now = datetime.now(UTC)
    return FakeReadModel(
        roles={("acme", who("vera")): "service-viewer", ("globex", who("gus")): "org-owner"},
        services={ORDERS: ("acme", None), LEDGER: ("globex", None)},
        facts={ORDERS: ServiceBackupFacts(ORDERS, "acme", "orders", "yugabyte", "Ready", None, None, None)},
        samples={ORDERS: samples(now)},
        alert_rows=[alert("a1", "acme", "resolved", now - timedelta(hours=2)),
                    alert("a2", "acme", "raised", now - timedelta(minutes=1), "connections_high"),
                    alert("g1", "globex", "raised", now)])


@pytest.fixture
def api(reads, monkeypatch):
    monkeypatch.delenv("DBAAS_RATE_LIMITS", raising=False)
    app = create_app(GatewaySettings("127.0.0.1:9", "http://127.0.0.1:9", "postgresql://x@127.0.0.1:9/x"),
                     Authenticator([]))
    app.state.publisher = FakePublisher()
    app.dependency_overrides[current_identity] = _identity
    app.dependency_overrides[read_model] = lambda: reads
    return TestClient(app)


def test_a_viewer_reads_the_metrics_downsampled_by_the_step(api):
    r = api.get(f"/api/v1/services/{ORDERS}/metrics", params={"since": "11m", "step": "1m"}, headers=as_("vera"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["name"], doc["engine"], doc["step_seconds"]) == ("orders", "yugabyte", 60)
    assert 10 <= len(doc["points"]) <= 12 and sum(p["samples"] for p in doc["points"]) == 40
    full = [p for p in doc["points"] if p["samples"] == 4]
    assert full and all(p["storage_bytes"]["max"] > p["storage_bytes"]["avg"] for p in full)
    assert all(p["connections"] == {"avg": 3.0, "max": 3.0} for p in doc["points"])
    assert doc["latest"]["storage_bytes"] == 47 * MIB and doc["latest"]["storage_used"] == pytest.approx(47 / 32)
    default = api.get(f"/api/v1/services/{ORDERS}/metrics", headers=as_("vera")).json()
    assert default["step_seconds"] == 30  # an hour in at most 120 points


@pytest.mark.parametrize("caller, status", [("gus", 404), ("vera", 200)])
def test_only_members_of_the_organization_see_a_service_s_metrics(api, caller, status):
    r = api.get(f"/api/v1/services/{ORDERS}/metrics", headers=as_(caller))
    assert r.status_code == status
    if status == 404:
        assert f"no service {ORDERS}" in r.text


@pytest.mark.parametrize("params, field", [({"since": "yesterday"}, "since"), ({"step": "0"}, "step"),
                                           ({"step": "fast"}, "step"), ({"since": "2d", "step": "1s"}, "step"),
                                           ({"since": "1h", "until": "2h"}, "until")])
def test_bad_ranges_and_steps_are_422_naming_the_field(api, params, field):
    r = api.get(f"/api/v1/services/{ORDERS}/metrics", params=params, headers=as_("vera"))
    assert r.status_code == 422 and field in r.text


def test_the_alerts_of_an_organization_newest_first_and_the_open_ones(api):
    every = api.get("/api/v1/organizations/acme/alerts", headers=as_("vera")).json()["items"]
    assert [a["alert_id"] for a in every] == ["a2", "a1"]
    open_ = api.get("/api/v1/organizations/acme/alerts", params={"state": "open"}, headers=as_("vera")).json()
    assert [a["alert_id"] for a in open_["items"]] == ["a2"]
    assert api.get("/api/v1/organizations/acme/alerts", headers=as_("gus")).status_code == 404


def test_the_cli_draws_the_answer(api):
    doc = api.get(f"/api/v1/services/{ORDERS}/metrics", params={"since": "10m", "step": "1m"},
                  headers=as_("vera")).json()
    text = chart(doc)
    assert "service orders (yugabyte)" in text
    assert "47 MiB of 32 MiB  147%" in text and "█" * 30 in text  # over its size: the bar is full
    assert "3 now, 3 at most, of 20" in text and "tx/s" in text and "ops/s" not in text
    assert sparkline([0, 5, 10, None]) == "▁▅█ " and sparkline([1, 2], top=4) == "▃▅"
    assert bar(0.5, 10) == "█████░░░░░"
    line = alert_line({"state": "raised", "raised_at": "2026-05-01T12:00:00+00:00", "severity": "warning",
                       "kind": "storage_high", "message": "full", "resolved_at": None})
    assert line.startswith("RAISED   2026-05-01T12:00:00Z  warning  storage_high")
