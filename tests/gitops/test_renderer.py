"""The saga's long-lived chart renderer (gitops.helm.Renderer, deploy/tools/renderer) against the
real ``helm template``:

- for every chart the saga renders (dbaas-service, dbaas-backup, dbaas-argocd-apps), over several
  values each, one renderer process prints byte for byte what ``helm template`` prints;
- so does a chart built here to reach what the platform's charts do not: .Capabilities (Helm's
  and Kubernetes' versions), numbers parsed like ``--values`` parses them, hooks, NOTES.txt;
- values the chart's values.schema.json refuses fail with Helm's own message (a RenderError);
- a renderer that dies is started again; one that does not answer in time is stopped
  (HelmTimeoutError, transient); one that dies during a render is a transient RendererUnavailable;
- deploy/scripts/ensure-renderer.sh is idempotent and prints only the path.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops import backups, helm
from gitops.helm import (
    ARGOCD_APPS_CHART,
    BACKUP_CHART,
    SERVICE_CHART,
    HelmNotFoundError,
    HelmTimeoutError,
    Renderer,
    RenderError,
    RendererUnavailable,
)

ENSURE_RENDERER = helm.REPO_ROOT / "deploy" / "scripts" / "ensure-renderer.sh"


def ci_values(chart: Path) -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted((chart / "ci").glob("*.yaml"))]


SERVICE = ci_values(SERVICE_CHART)[-1]
SERVICE_CASES = [
    *ci_values(SERVICE_CHART),
    *({**SERVICE, "engine": engine, "engineVersion": version, "pop": pop}
      for engine, version, pop in (("vitess", "v24.0.0-rc1-mysql80", "frankfurt"), ("scylla", "2026.2.4", "local"),
                                   ("dragonfly", "v1.36.0", "ashburn"), ("aerospike", "8.1.2.0", "singapore"),
                                   ("mongodb", "6.0.5", "johannesburg"))),
    {**SERVICE, "cpu": 0.25, "memoryGi": 1.5, "storageGi": 65536, "replicas": 5, "deletionProtection": True,
     "labels": {"team": "payments", "example.com/cost-center": "cc-42"}},
    {**SERVICE, "operation": {"id": "0d5c2f9e-6a41-4f0e-9d1b-3e2a7c8b9f10"}},
]
BACKUP_CASES = [
    *ci_values(BACKUP_CHART),
    backups.backup_values(tenant="acme", pop="frankfurt", engine="yugabyte", service_id=SERVICE["serviceId"],
                          service_name="orders-db", backup_id="bk-2", pitr=True, encryption_key_id="dek-1",
                          kek_id="kek-1", destination={"bucket": "dbaas-backups", "prefix": "tenants/acme/backups/bk-2"},
                          operation_id="op-1"),
    backups.backup_values(tenant="acme", pop="local", engine="mongodb", service_id=SERVICE["serviceId"],
                          service_name="orders-db", backup_id="bk-3", pitr=False, encryption_key_id=None,
                          kek_id=None, destination={"path": "/var/backups/acme"}),
]
APPS_CASES = [
    *ci_values(ARGOCD_APPS_CHART),
    {"repoURL": "file:///srv/gitops.git", "applications": [{"tenant": "acme", "pop": "lagos"}]},
    {"repoURL": "https://git.example.net/g.git", "applications": [
        {"tenant": f"t{i}", "pop": pop} for i, pop in enumerate(("lagos", "frankfurt", "ashburn", "singapore"))]},
]
CASES = [
    *((SERVICE_CHART, values, values.get("name", "svc"), "tenant-acme") for values in SERVICE_CASES),
    *((BACKUP_CHART, values, "backup", "tenant-acme") for values in BACKUP_CASES),
    *((ARGOCD_APPS_CHART, values, "apps", "argocd") for values in APPS_CASES),
]


@pytest.fixture(scope="module")
def renderer_bin(helm_bin: str, timings: dict[str, float]) -> str:
    result = subprocess.run([str(ENSURE_RENDERER)], capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        pytest.fail(f"{ENSURE_RENDERER} failed (exit {result.returncode}):\n{result.stderr}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def renderer(renderer_bin: str) -> Iterator[Renderer]:
    with Renderer(renderer_bin) as one:
        yield one


def helm_template(helm_bin: str, chart: Path | str, values: dict[str, Any], release: str, namespace: str
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_bin, "template", release, str(chart), "--namespace", namespace, "--values", "-"],
                          input=helm._values_json(values, str(chart)), capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("chart", "values", "release", "namespace"), CASES,
                         ids=[f"{Path(c[0]).name}-{i}" for i, c in enumerate(CASES)])
def test_renders_the_bytes_helm_template_prints(helm_bin: str, renderer: Renderer, chart: Path,
                                                values: dict[str, Any], release: str, namespace: str) -> None:
    expected = helm_template(helm_bin, chart, values, release, namespace)
    assert expected.returncode == 0, expected.stderr
    assert renderer.template(chart, values, release, namespace) == expected.stdout
    assert renderer.render(chart, values, release, namespace) == helm.render(
        chart, values, release, namespace, helm=helm_bin)


def test_one_process_renders_them_all(renderer: Renderer) -> None:
    assert renderer.starts == 1
    assert renderer.version() == "v3.22.0"


PROBE_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-probe
  namespace: {{ .Release.Namespace }}
data:
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  helm: {{ .Capabilities.HelmVersion.Version | quote }}
  big: {{ .Values.big | quote }}
  small: {{ .Values.small | quote }}
  int: {{ .Values.int | quote }}
  list: {{ toJson .Values.list | quote }}
  text: {{ .Values.text | quote }}
  install: {{ .Release.IsInstall | quote }}
  revision: {{ .Release.Revision | quote }}
  apps: {{ .Capabilities.APIVersions.Has "apps/v1" | quote }}
"""


@pytest.fixture(scope="module")
def probe_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart = tmp_path_factory.mktemp("charts") / "probe"
    (chart / "templates" / "tests").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("big: 1\nsmall: 0.5\nint: 3\nlist: []\ntext: ''\n")
    (chart / "values.schema.json").write_text(
        '{"type": "object", "properties": {"int": {"type": "integer", "maximum": 10}}}')
    (chart / "templates" / "probe.yaml").write_text(PROBE_TEMPLATE)
    (chart / "templates" / "NOTES.txt").write_text("notes are not printed\n")
    (chart / "templates" / "tests" / "hook.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata:
          name: {{ .Release.Name }}-test
          annotations: {"helm.sh/hook": test}
        spec: {containers: [{name: t, image: busybox}]}
        """))
    (chart / "templates" / "pre.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: {{ .Release.Name }}-pre
          annotations: {"helm.sh/hook": pre-install}
        """))
    return chart


@pytest.mark.parametrize("values", [
    {},
    {"big": 123456789, "small": 1e-7, "int": 7, "list": [1, "two", 3.5, None, True], "text": "é ✓ \"quoted\"\n"},
    {"big": 10**21, "small": 2.5e300},
])
def test_capabilities_numbers_hooks_as_helm_template(helm_bin: str, renderer: Renderer, probe_chart: Path,
                                                     values: dict[str, Any]) -> None:
    expected = helm_template(helm_bin, probe_chart, values, "probe", "ns")
    assert expected.returncode == 0, expected.stderr
    assert renderer.template(probe_chart, values, "probe", "ns") == expected.stdout


def test_a_changed_chart_is_loaded_again(renderer: Renderer, probe_chart: Path, tmp_path: Path) -> None:
    chart = tmp_path / "probe"
    subprocess.run(["cp", "-r", str(probe_chart), str(chart)], check=True)
    assert "kind: ConfigMap" in renderer.template(chart, {}, "probe", "ns")
    template = chart / "templates" / "probe.yaml"
    template.write_text(template.read_text().replace("kind: ConfigMap", "kind: Secret"))
    os.utime(template, ns=(1, 1))  # a different modification time even on a coarse clock
    assert "kind: Secret" in renderer.template(chart, {}, "probe", "ns")


@pytest.mark.parametrize(("chart", "values", "release", "namespace"), [
    (SERVICE_CHART, {**SERVICE, "cpu": "two"}, "orders-db", "tenant-acme"),
    (SERVICE_CHART, {**SERVICE, "replica": 3}, "orders-db", "tenant-acme"),
    (BACKUP_CHART, {**BACKUP_CASES[0], "destination": {"bucket": "b", "path": "/p"}}, "backup", "tenant-acme"),
    (ARGOCD_APPS_CHART, {"repoURL": "https://git.example.net/g.git", "applications": [{"tenant": "Acme", "pop": "lagos"}]}, "apps", "argocd"),
], ids=["service-type", "service-extra-key", "backup-both-destinations", "apps-bad-tenant"])
def test_refused_values_fail_with_helms_message(helm_bin: str, renderer: Renderer, chart: Path,
                                                values: dict[str, Any], release: str, namespace: str) -> None:
    expected = helm_template(helm_bin, chart, values, release, namespace)
    assert expected.returncode != 0
    with pytest.raises(RenderError) as refused:
        renderer.render(chart, values, release, namespace)
    assert refused.value.stderr.strip() == expected.stderr.strip()
    assert not refused.value.transient


def test_a_missing_chart_is_a_render_error(renderer: Renderer, tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="no such file or directory|not found"):
        renderer.render(tmp_path / "nothing", {}, "x", "ns")


def test_a_dead_renderer_is_started_again(renderer_bin: str) -> None:
    with Renderer(renderer_bin) as one:
        first = one.template(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme")
        assert one._proc is not None
        one._proc.kill()
        one._proc.wait()
        assert one.template(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme") == first
        assert one.starts == 2


def fake_renderer(tmp_path: Path, body: str) -> str:
    script = tmp_path / "renderer"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_renderer_that_does_not_answer_is_stopped(tmp_path: Path) -> None:
    with Renderer(fake_renderer(tmp_path, "exec sleep 60"), timeout=0.5) as one:
        with pytest.raises(HelmTimeoutError) as late:
            one.render(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme")
        assert late.value.transient
        assert one._proc is None  # stopped; the next render starts another


def test_a_renderer_that_dies_during_a_render_is_transient(tmp_path: Path) -> None:
    with Renderer(fake_renderer(tmp_path, "read line; exit 3")) as one, \
            pytest.raises(RendererUnavailable, match="exit 3") as died:
        one.render(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme")
    assert died.value.transient


def test_a_renderer_answering_out_of_turn_is_transient(tmp_path: Path) -> None:
    with Renderer(fake_renderer(tmp_path, 'read line; echo \'{"id": "other"}\'; sleep 5')) as one, \
            pytest.raises(RendererUnavailable, match="out of turn"):
        one.render(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme")


def test_no_renderer_is_the_platforms_fault(tmp_path: Path) -> None:
    with pytest.raises(HelmNotFoundError, match="DBAAS_RENDERER=.* is not an executable file"):
        helm.find_renderer({"DBAAS_RENDERER": str(tmp_path / "nope")})
    with pytest.raises(HelmNotFoundError, match="ensure-renderer.sh"):
        helm.find_renderer({"DBAAS_TOOLS_CACHE": str(tmp_path)}, build=False)


def test_find_renderer_takes_the_cached_build(renderer_bin: str) -> None:
    assert helm.find_renderer(dict(os.environ), build=False) == renderer_bin
    assert Path(renderer_bin).name == helm.renderer_build_name()


def test_ensure_renderer_is_idempotent_and_prints_only_the_path(renderer_bin: str) -> None:
    result = subprocess.run([str(ENSURE_RENDERER)], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == renderer_bin + "\n"
    assert result.stderr == ""


def test_prefetched_renders_are_taken_by_the_same_render_in_any_order(renderer_bin: str) -> None:
    services = [{**SERVICE, "name": f"svc-{i}", "replicas": 1 + i % 5} for i in range(Renderer.WINDOW * 2 + 3)]
    with Renderer(renderer_bin) as direct, Renderer(renderer_bin) as ahead:
        expected = [direct.template(SERVICE_CHART, v, v["name"], "tenant-acme") for v in services]
        for values in services:  # more than the window: the rest are written as answers are read
            ahead.prefetch(SERVICE_CHART, values, values["name"], "tenant-acme")
        got = {i: ahead.template(SERVICE_CHART, services[i], services[i]["name"], "tenant-acme")
               for i in reversed(range(len(services)))}
        assert [got[i] for i in range(len(services))] == expected
        assert ahead.starts == 1 and not ahead._answers and not ahead._ahead


def test_a_prefetched_refusal_is_raised_by_its_render_and_the_rest_forgotten(renderer_bin: str) -> None:
    bad = {**SERVICE, "cpu": "two"}
    with Renderer(renderer_bin) as one:
        one.prefetch(SERVICE_CHART, bad, "orders-db", "tenant-acme")
        for i in range(5):
            one.prefetch(SERVICE_CHART, {**SERVICE, "name": f"svc-{i}"}, f"svc-{i}", "tenant-acme")
        with pytest.raises(RenderError, match="at '/cpu': got string, want number"):
            one.render(SERVICE_CHART, bad, "orders-db", "tenant-acme")
        one.forget()
        assert one.template(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme")  # unwanted answers dropped
        assert not one._answers and not one._ahead and not one._sent and not one._unwanted


def test_prefetching_for_a_dead_renderer_shows_at_the_render(renderer_bin: str) -> None:
    with Renderer(renderer_bin) as one:
        one.prefetch(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme")
        assert one._proc is not None
        one._proc.kill()
        one._proc.wait()
        assert one.template(SERVICE_CHART, SERVICE, "orders-db", "tenant-acme") == one.template(
            SERVICE_CHART, SERVICE, "orders-db", "tenant-acme")
        assert one.starts == 2
