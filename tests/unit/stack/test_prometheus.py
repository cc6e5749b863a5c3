"""What Prometheus is given: the configuration the launcher generates (`promtool check config`),
the alerting rules (`promtool check rules`) and their unit tests (`promtool test rules`), and the
Grafana dashboards — every metric they name is one the code exports. promtool comes with Debian's
`prometheus` package, installed by the launcher's own installer when missing."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.stack import config, observability
from deploy.stack.base import Context
from deploy.stack.components import CONTROL_PLANE, INFRASTRUCTURE, ControlPlaneProcess
from deploy.stack.observability import OBSERVABILITY, RULE_TESTS_DIR, RULES_DIR

REPO = config.REPO_ROOT
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
# The packages whose processes export metrics.
SOURCES = ("processors", "projections", "gateway", "operators", "runtime")


@pytest.fixture
def ctx(tmp_path, monkeypatch) -> Context:
    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    return Context(config.resolve(tmp_path / "home", port_offset=5000), lambda: None, lambda _m: None,
                   components=INFRASTRUCTURE + CONTROL_PLANE + OBSERVABILITY)


@pytest.fixture(scope="module")
def promtool(tmp_path_factory) -> Path:
    """Debian's promtool, installed as `dbaas stack up` installs it."""
    probe = Context(config.resolve(tmp_path_factory.mktemp("home"), port_offset=0), lambda: None)
    return observability.ensure_installed(probe)[1]


def _promtool(promtool: Path, *args: str, cwd: Path = REPO) -> None:
    proc = subprocess.run([str(promtool), *args], capture_output=True, text=True, cwd=cwd, check=False)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def test_the_generated_configuration_scrapes_every_process_that_serves_metrics(ctx):
    doc = yaml.safe_load(observability.config_text(ctx))
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(jobs) == {c.name for c in CONTROL_PLANE} | {"registry", "prometheus"}
    assert all(isinstance(c, ControlPlaneProcess) for c in CONTROL_PLANE)
    for name, job in jobs.items():
        [static] = job["static_configs"]
        assert static["labels"] == {"instance": name}  # job and instance: the component's name
        [target] = static["targets"]
        assert target.startswith("127.0.0.1:")
    assert jobs["saga"]["static_configs"][0]["targets"] == ["127.0.0.1:24402"]  # the offset applies
    assert jobs["api"]["static_configs"][0]["targets"] == ["127.0.0.1:23080"]
    assert jobs["api"]["metrics_path"] == "/metrics/"
    assert jobs["registry"]["static_configs"][0]["targets"] == ["127.0.0.1:23082"]  # its management port
    assert jobs["prometheus"]["static_configs"][0]["targets"] == [f"127.0.0.1:{ctx.config.port('prometheus')}"]
    assert doc["rule_files"] == [str(RULES_DIR / "*.yml")]


def test_prometheus_binds_loopback_on_its_port_with_a_short_history(ctx):
    argv = observability.Prometheus().argv(ctx)
    assert f"--web.listen-address=127.0.0.1:{config.DEFAULT_PORTS['prometheus'] + 5000}" in argv
    assert f"--storage.tsdb.path={ctx.config.home / 'prometheus' / 'data'}" in argv
    assert any(a.startswith("--storage.tsdb.retention.time=") for a in argv)


def test_a_changed_rule_or_target_starts_prometheus_anew(ctx, monkeypatch):
    prom = observability.Prometheus()
    before = prom.settings_fingerprint(ctx)
    assert prom.settings_fingerprint(ctx) == before
    fewer = Context(ctx.config, lambda: None, lambda _m: None, components=CONTROL_PLANE[1:] + OBSERVABILITY)
    assert prom.settings_fingerprint(fewer) != before
    monkeypatch.setattr(observability, "RULES_DIR", Path(__file__).parent)  # other rule files
    assert prom.settings_fingerprint(ctx) != before


def test_promtool_accepts_the_generated_configuration_and_its_rules(ctx, promtool, tmp_path):
    path = tmp_path / "prometheus.yml"
    path.write_text(observability.config_text(ctx))
    _promtool(promtool, "check", "config", str(path))


def test_promtool_accepts_the_rules(promtool):
    assert RULE_FILES
    _promtool(promtool, "check", "rules", *map(str, RULE_FILES))


def test_the_rules_unit_tests_pass(promtool):
    tests = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert tests
    _promtool(promtool, "test", "rules", *(t.name for t in tests), cwd=RULE_TESTS_DIR)


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_every_alert_is_tested_firing_and_quiet_and_documented():
    docs = (REPO / "docs" / "architecture.md").read_text()
    fires, quiet = set(), set()
    for path in RULE_TESTS_DIR.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["tests"]:
            for check in group.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts - fires == set(), "alerts never seen firing in a test"
    assert alerts - quiet == set(), "alerts never seen staying quiet in a test"
    assert {a for a in alerts if f"`{a}`" not in docs} == set(), "alerts not described in docs/architecture.md"
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def exported_metrics() -> set[str]:
    """Every series name the platform's processes export (prometheus_client's suffixes included)."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(\w+)\"")
    names = set()
    for package in SOURCES:
        for path in (REPO / package).rglob("*.py"):
            for kind, name in pattern.findall(path.read_text()):
                if kind == "Counter":
                    names |= {name.removesuffix("_total") + "_total"}
                elif kind in ("Histogram", "Summary"):
                    names |= {name + "_bucket", name + "_sum", name + "_count"}
                else:
                    names.add(name)
    return names


def _dbaas_names(expr: str) -> set[str]:
    return set(re.findall(r"\bdbaas_[a-z0-9_]+", expr))


def test_rules_and_dashboards_name_only_metrics_the_code_exports():
    exported = exported_metrics()
    assert {"dbaas_commands_judged_total", "dbaas_saga_lag", "dbaas_operations_oldest_open_seconds",
            "dbaas_projection_latency_seconds_bucket"} <= exported
    used = {name: f"alert {alert}" for alert, rule in _alerts().items() for name in _dbaas_names(rule["expr"])}
    for path in DASHBOARDS:
        for panel in _panels(json.loads(path.read_text())):
            for target in panel["targets"]:
                used |= {name: f"{path.name}: {panel['title']}" for name in _dbaas_names(target["expr"])}
    assert {name: where for name, where in used.items() if name not in exported} == {}


def _panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_dashboard_imports_into_grafana(path):
    board = json.loads(path.read_text())
    assert board["uid"].startswith("dbaas-") and board["title"] and board["schemaVersion"] >= 36
    [variable] = board["templating"]["list"]  # the data source, chosen on import or from the list
    assert (variable["name"], variable["type"], variable["query"]) == ("DS_PROMETHEUS", "datasource", "prometheus")
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {p["type"] for p in board["panels"]} <= {"row", "timeseries", "stat"}
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in _panels(board):
        assert panel["datasource"] == datasource and panel["title"] and panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource and target["expr"].strip() and target["refId"]


def test_dashboards_have_unique_uids_and_the_overview_shows_the_essentials():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)) and "dbaas-overview" in uids
    overview = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "overview.json").read_text())
    exprs = " ".join(t["expr"] for p in _panels(overview) for t in p["targets"])
    for needed in ("dbaas_commands_judged_total", 'outcome="rejected"', "dbaas_command_processor_batch_seconds",
                   "dbaas_saga_steps_total", "dbaas_projection_consumer_lag", "dbaas_projection_latency_seconds",
                   "dbaas_commands_dead_lettered_total", "up"):
        assert needed in exprs, needed
