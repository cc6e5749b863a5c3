"""Jaeger in the launcher: where the binary is found (the order deploy/scripts/ensure-jaeger.sh
uses), its generated configuration (OTLP receivers, bounded in-memory storage, query API, all on
loopback on the instance's ports), and which processes are told to trace. No server runs here."""
from __future__ import annotations

import stat

import pytest
import yaml

from deploy.stack import config
from deploy.stack.base import Context
from deploy.stack.components import CONTROL_PLANE, INFRASTRUCTURE
from deploy.stack.launcher import Launcher
from deploy.stack.tracing import (
    MAX_TRACES,
    TRACING,
    Jaeger,
    config_text,
    find_jaeger,
    jaeger_version,
    tracing_env,
)

SCRIPT = (config.REPO_ROOT / "deploy" / "scripts" / "ensure-jaeger.sh").read_text()


@pytest.fixture
def jaeger(tmp_path, monkeypatch):
    path = tmp_path / "jaeger"
    path.write_text('#!/bin/sh\necho \'{"gitCommit":"","gitVersion":"v1.75.0","buildDate":""}\'\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("DBAAS_JAEGER", str(path))
    return path


@pytest.fixture
def ctx(tmp_path, monkeypatch, jaeger):
    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    components = INFRASTRUCTURE + CONTROL_PLANE + TRACING
    return Context(config.resolve(tmp_path / "home", port_offset=3000), lambda: None, lambda _m: None,
                   components=components)


def test_the_pinned_version_is_the_wrapper_modules_and_1_75_0():
    assert jaeger_version() == "v1.75.0"
    assert "github.com/jaegertracing/jaeger/cmd/jaeger" in (config.REPO_ROOT / "deploy/tools/jaeger/tools.go").read_text()


def test_the_binary_is_found_as_the_script_finds_it(jaeger, tmp_path, monkeypatch):
    assert find_jaeger() == str(jaeger)
    monkeypatch.delenv("DBAAS_JAEGER")
    monkeypatch.setenv("DBAAS_TOOLS_CACHE", str(tmp_path / "cache"))
    assert find_jaeger() is None  # the launcher then builds it with the script
    cached = tmp_path / "cache" / "jaeger-v1.75.0"
    cached.parent.mkdir()
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)
    assert find_jaeger() == str(cached)
    for part in ("DBAAS_JAEGER", "DBAAS_TOOLS_CACHE", "XDG_CACHE_HOME", "jaeger-${JAEGER_VERSION}", "flock",
                 "deploy/tools/jaeger", "go build"):
        assert part in SCRIPT


def test_the_configuration_listens_on_loopback_on_the_instances_ports_and_bounds_memory(ctx):
    doc = yaml.safe_load(config_text(ctx))
    ports = {n: config.DEFAULT_PORTS[n] + 3000 for n in ("tracing", "tracing_grpc", "otlp_grpc", "otlp_http",
                                                            "tracing_metrics")}
    otlp = doc["receivers"]["otlp"]["protocols"]
    assert otlp == {"grpc": {"endpoint": f"127.0.0.1:{ports['otlp_grpc']}"},
                    "http": {"endpoint": f"127.0.0.1:{ports['otlp_http']}"}}
    query = doc["extensions"]["jaeger_query"]
    assert query["http"] == {"endpoint": f"127.0.0.1:{ports['tracing']}"}
    assert query["grpc"] == {"endpoint": f"127.0.0.1:{ports['tracing_grpc']}"}
    assert query["enable_tracing"] is False
    assert doc["extensions"]["jaeger_storage"]["backends"]["memstore"] == {"memory": {"max_traces": MAX_TRACES}}
    prometheus = doc["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert (prometheus["host"], prometheus["port"]) == ("127.0.0.1", ports["tracing_metrics"])
    jaeger = Jaeger()
    assert jaeger.argv(ctx)[1] == f"--config={ctx.config.home / 'tracing' / 'jaeger.yaml'}"
    assert jaeger.env(ctx) == {"GOMEMLIMIT": "256MiB"}
    assert sorted(jaeger.extra_ports(ctx)) == sorted([ports["tracing_grpc"], ports["otlp_grpc"], ports["otlp_http"],
                                                   ports["tracing_metrics"]])
    assert jaeger.endpoint(ctx) == f"http://127.0.0.1:{ports['tracing']}"
    assert jaeger.metrics_url(ctx) == f"http://127.0.0.1:{ports['tracing_metrics']}/metrics"


def test_the_ports_are_new_and_apart_from_every_other():
    ports = list(config.DEFAULT_PORTS.values())
    assert len(set(ports)) == len(ports)
    assert {16686, 4317, 4318}.isdisjoint(ports)  # Jaeger's usual ones stay free for a developer's own


def test_control_plane_processes_trace_when_the_instance_runs_jaeger(ctx, monkeypatch):
    monkeypatch.delenv("DBAAS_TRACE_ROOT_RATIO", raising=False)
    env = tracing_env(ctx)
    assert env == {"DBAAS_OTLP_ENDPOINT": f"http://127.0.0.1:{config.DEFAULT_PORTS['otlp_http'] + 3000}",
                   "DBAAS_TRACING_URL": f"http://127.0.0.1:{config.DEFAULT_PORTS['tracing'] + 3000}"}
    for process in CONTROL_PLANE:
        assert process.env(ctx)["DBAAS_OTLP_ENDPOINT"] == env["DBAAS_OTLP_ENDPOINT"]
    without = Context(ctx.config, lambda: None, lambda _m: None, components=INFRASTRUCTURE + CONTROL_PLANE)
    assert tracing_env(without) == {} and "DBAAS_OTLP_ENDPOINT" not in CONTROL_PLANE[0].env(without)


def test_the_launcher_runs_it_unless_left_out(tmp_path, monkeypatch):
    monkeypatch.delenv("DBAAS_STACK_WITHOUT", raising=False)
    cfg = config.resolve(tmp_path / "home", port_offset=3000)
    assert "tracing" in [c.name for c in Launcher(cfg, say=lambda _m: None).components]
    monkeypatch.setenv("DBAAS_STACK_WITHOUT", "tracing")
    assert "tracing" not in [c.name for c in Launcher(cfg, say=lambda _m: None).components]


def test_prepare_writes_the_configuration_into_a_new_instance(ctx):
    jaeger = Jaeger()
    jaeger.prepare(ctx)
    assert jaeger.config_file(ctx).read_text() == config_text(ctx)


def test_a_root_ratio_given_to_up_reaches_every_process_and_restarts_them(ctx, monkeypatch):
    monkeypatch.delenv("DBAAS_TRACE_ROOT_RATIO", raising=False)
    before = CONTROL_PLANE[0].settings_fingerprint(ctx)
    monkeypatch.setenv("DBAAS_TRACE_ROOT_RATIO", "1")
    assert tracing_env(ctx)["DBAAS_TRACE_ROOT_RATIO"] == "1"
    assert CONTROL_PLANE[0].env(ctx)["DBAAS_TRACE_ROOT_RATIO"] == "1"
    assert CONTROL_PLANE[0].settings_fingerprint(ctx) != before


def test_rate_limits_given_to_up_reach_the_api_only_and_restart_it(ctx, monkeypatch):
    monkeypatch.delenv("DBAAS_RATE_LIMITS", raising=False)
    api = next(c for c in CONTROL_PLANE if c.name == "api")
    before = api.settings_fingerprint(ctx)
    assert "DBAAS_RATE_LIMITS" not in api.env(ctx)  # the gateway's defaults
    monkeypatch.setenv("DBAAS_RATE_LIMITS", "*=1000/2000")
    assert api.env(ctx)["DBAAS_RATE_LIMITS"] == "*=1000/2000"
    assert api.settings_fingerprint(ctx) != before
    assert all("DBAAS_RATE_LIMITS" not in c.env(ctx) for c in CONTROL_PLANE if c.name != "api")
