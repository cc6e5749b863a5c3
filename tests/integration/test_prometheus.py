"""The platform watched as in production: the test platform's Prometheus scrapes every process that
serves metrics (each one up), has loaded every alerting rule, and every panel of the Grafana
dashboards finds data once the platform has done its usual work — organizations created and
refused, a service provisioned in PoP local, one timed out in PoP singapore and reverted, a request
with a bad token."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine

from deploy.stack import config as stack_config
from deploy.stack.launcher import Launcher
from projections.runner import open_operations
from projections.settings import sqlalchemy_url
from projections.tables import build_tables
from tests.conftest import REPO, SINGAPORE_TIMEOUT, wait_for
from tests.integration.conftest import operation

DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
# Components that serve no Prometheus metrics of their own (an exporter would be one more process).
UNSCRAPED = {"postgres", "kafka", "gitops", "connect", "mariadb", "redis", "s3"}
# What Grafana puts into a query: its rate window is at least four scrape intervals.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "15m"}


@pytest.fixture(scope="module")
def prometheus(stack) -> httpx.Client:
    url = stack.status["endpoints"]["prometheus_url"]
    assert url and url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=url + "/api/v1", timeout=30) as client:
        yield client


def _query(prometheus: httpx.Client, expr: str) -> list[dict]:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    body = prometheus.get("/query", params={"query": expr}).json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def test_every_process_that_serves_metrics_is_scraped_and_up(stack, prometheus):
    launcher = Launcher(stack_config.resolve(stack.home))
    serving = {c.name for c in launcher.components if c.metrics_url(launcher.ctx)}
    assert serving == {c.name for c in launcher.components if c.has_process} - UNSCRAPED
    assert {"command-processor", "projector", "saga", "audit", "api", "localpop-agent", "registry",
            "prometheus"} <= serving

    def targets_up():
        active = prometheus.get("/targets").json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return health if all(health.get(name) == "up" for name in serving) else None

    health = wait_for(targets_up, timeout=90, interval=1, what="every scrape target up")
    assert set(health) == serving
    expected = {name: (name, "1") for name in serving}

    seen: list[dict] = [{}]

    def up_series():
        # only series scraped in the last 30 s: a target removed while Prometheus was stopped (a
        # Kubernetes PoP stopped across a `down`/`up`) gets no staleness marker, and its last `up`
        # stays visible for the query lookback (5 min)
        found = {s["metric"]["job"]: (s["metric"]["instance"], s["value"][1])
                 for s in _query(prometheus, "up and (time() - timestamp(up) < 30)")}
        seen[0] = found
        return found if found == expected else None

    try:
        wait_for(up_series, timeout=60, interval=1, what=f"`up` to be 1 for exactly {sorted(serving)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen[0]}") from None


def test_prometheus_evaluates_every_alerting_rule(prometheus):
    wanted = {rule["alert"] for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}

    def loaded():
        groups = prometheus.get("/rules", params={"type": "alert"}).json()["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = all(not r["lastEvaluation"].startswith("0001") for r in rules.values())  # zero time: not yet
        return rules if set(rules) == wanted and evaluated else None

    rules = wait_for(loaded, timeout=60, interval=1, what="every alerting rule loaded and evaluated")
    assert {name: r["lastError"] for name, r in rules.items() if r["health"] != "ok"} == {}


def _traffic(stack, api, org: str) -> None:
    """The platform's usual work, of every kind a panel shows."""
    # refused: another person cannot take an existing organization's slug
    r = api.post("/organizations", json={"slug": org}, headers=stack.auth("bob"))
    assert r.status_code == 202, r.text
    operation(api, r.json()["operation_id"], lambda o: o["state"] == "Failed", "the refused organization",
              timeout=60)
    # a token no issuer signed
    assert api.get("/organizations", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    # provisioned in PoP local (saga steps, PoP reports, the local PoP's calls) ...
    local = api.post("/services", json={"org": org, "name": f"cache-{uuid.uuid4().hex[:6]}",
                                        "engine": "dragonfly", "pop": "local"})
    # ... and timed out in PoP singapore, where nothing reports, then reverted (compensation)
    lost = api.post("/services", json={"org": org, "name": f"ledger-{uuid.uuid4().hex[:6]}",
                                       "engine": "mongodb", "pop": "singapore"})
    assert local.status_code == lost.status_code == 202, (local.text, lost.text)
    operation(api, local.json()["operation_id"], lambda o: o["state"] == "Succeeded", "the local service",
              timeout=120)
    operation(api, lost.json()["operation_id"], lambda o: (o["compensation"] or {}).get("state") == "Done",
              "the timed-out service reverted", timeout=SINGAPORE_TIMEOUT + 120)


def _panels(path: Path) -> list[dict]:
    return [p for p in json.loads(path.read_text())["panels"] if p["type"] != "row"]


def test_every_dashboard_panel_finds_data(stack, api, org, prometheus):
    _traffic(stack, api, org)
    panels = [(path.name, panel) for path in DASHBOARDS for panel in _panels(path)]
    assert len(panels) > 20

    def empty() -> list[str]:
        return [f"{board}: {panel['title']} ({'; '.join(t['expr'] for t in panel['targets'])})"
                for board, panel in panels
                if not any(_query(prometheus, t["expr"]) for t in panel["targets"])]

    missing: list[str] = []

    def all_found() -> bool:
        missing[:] = empty()
        return not missing

    try:
        wait_for(all_found, timeout=120, interval=5, what="data in every panel")
    except AssertionError:
        pytest.fail("panels without data:\n" + "\n".join(missing))


def test_unfinished_operations_are_counted_by_phase_with_the_oldest_age(stack):
    """What the projector gauges (dbaas_operations_open, dbaas_operations_oldest_open_seconds), on a
    table of its own in the platform's PostgreSQL."""
    table = build_tables(f"__gauge_{uuid.uuid4().hex[:8]}").operations
    engine = create_engine(sqlalchemy_url(stack.postgres_dsn))
    now = datetime.now(UTC)

    def row(state: str, minutes_ago: float, compensation: dict | None = None) -> dict:
        at = now - timedelta(minutes=minutes_ago)
        return {"id": str(uuid.uuid4()), "tenant_id": "acme", "type": "CreateService", "state": state,
                "done_steps": 0, "total_steps": 3, "compensation": compensation, "correlation_id": "c",
                "created_at": at, "updated_at": at, "version": 1}

    reverting = {"state": "Pending", "ref": None, "at": (now - timedelta(minutes=5)).isoformat()}
    table.create(engine)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [
                row("Accepted", 10), row("Running", 20), row("Running", 1),
                row("Failed", 30, reverting), row("Cancelled", 40, {**reverting, "state": "Done"}),
                row("Failed", 50), row("Succeeded", 60)])
        with engine.connect() as conn:
            found = open_operations(conn, table)
    finally:
        table.drop(engine)
        engine.dispose()
    assert {phase: count for phase, (count, _) in found.items()} == {"accepted": 1, "running": 2, "compensating": 1}
    ages = {phase: age for phase, (_, age) in found.items()}
    assert ages["accepted"] == pytest.approx(600, abs=30) and ages["running"] == pytest.approx(1200, abs=30)
    assert ages["compensating"] == pytest.approx(300, abs=30)  # since the compensation began
