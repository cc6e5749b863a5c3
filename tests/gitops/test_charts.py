"""The Helm charts in deploy/charts, rendered by the real Helm through gitops.helm.

- ``helm lint --strict`` passes for every chart;
- every engine x size x PoP renders a ServiceClaim plus the engine operator CR, and every rendered
  object validates against the openAPIV3Schema of its CRD (upstream CRDs for engine CRs and Argo
  CD Applications, deploy/crds for ServiceClaim and DatabaseBackup), misspelled fields included;
- each size lands in the engine's real replica, CPU, memory and storage fields;
- bad values fail ``helm template`` with a message naming the offending key;
- gitops.helm and deploy/scripts/ensure-helm.sh behave as documented.

The 108-cell matrix is rendered once per session, concurrently (one ``helm template`` per service,
exactly as the platform renders), and the cells are then checked one test each.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from crdschema import CrdIndex

from gitops import helm, manifests
from gitops.helm import (
    ARGOCD_APPS_CHART,
    BACKUP_CHART,
    SERVICE_CHART,
    HelmNotFoundError,
    LintError,
    RenderError,
)

ENGINES = ("yugabyte", "vitess", "scylla", "dragonfly", "aerospike", "mongodb")
POPS = ("lagos", "johannesburg", "frankfurt", "ashburn", "singapore", "local")
# Versions as schemas.catalog.DEFAULT_ENGINE_VERSIONS hands them to the saga.
ENGINE_VERSIONS = {
    "yugabyte": "2024.2.0.0-b145",
    "vitess": "v24.0.0-rc1-mysql80",
    "scylla": "2026.2.4",
    "dragonfly": "v1.36.0",
    "aerospike": "8.1.2.0",
    "mongodb": "6.0.5",
}
# size -> (cpu cores, memory GiB, storage GiB, replicas)
SIZES = {"small": (1, 2, 10, 1), "medium": (2, 8, 100, 3), "large": (4, 16, 500, 3)}
ENGINE_KINDS = {
    "yugabyte": ("operator.yugabyte.io/v1alpha1", "YBUniverse"),
    "vitess": ("planetscale.com/v2", "VitessCluster"),
    "scylla": ("scylla.scylladb.com/v1", "ScyllaCluster"),
    "dragonfly": ("dragonflydb.io/v1alpha1", "Dragonfly"),
    "aerospike": ("asdb.aerospike.com/v1", "AerospikeCluster"),
    "mongodb": ("mongodbcommunity.mongodb.com/v1", "MongoDBCommunity"),
}
NAMESPACE = "tenant-acme"
ENSURE_HELM = helm.REPO_ROOT / "deploy" / "scripts" / "ensure-helm.sh"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Cell = tuple[str, str, str]  # engine, size, pop


def service_values(engine: str, size: str, pop: str, **overrides: Any) -> dict[str, Any]:
    cpu, memory, storage, replicas = SIZES[size]
    values = {
        "tenant": "acme",
        "serviceId": f"3f2a9c1e-{engine}-{size}-{pop}",
        "name": "orders-db",
        "engine": engine,
        "engineVersion": ENGINE_VERSIONS[engine],
        "pop": pop,
        "cpu": cpu,
        "memoryGi": memory,
        "storageGi": storage,
        "replicas": replicas,
        "labels": {"team": "payments", "example.com/cost-center": "cc-42"},
    }
    values.update(overrides)
    return values


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), f"a kind rendered twice: {kinds}"
    return {d["kind"]: d for d in docs}


def dig(obj: Any, path: str) -> Any:
    """``spec.racks[0].members`` style lookup."""
    for part in path.replace("]", "").replace("[", ".").split("."):
        obj = obj[int(part)] if part.isdigit() else obj[part]
    return obj


# -- the matrix, rendered once ---------------------------------------------------------------

MATRIX: list[Cell] = list(itertools.product(ENGINES, SIZES, POPS))


@pytest.fixture(scope="session")
def matrix(helm_bin: str, timings: dict[str, float]) -> dict[Cell, list[dict[str, Any]] | Exception]:
    def one(cell: Cell) -> list[dict[str, Any]] | Exception:
        try:
            return helm.render(SERVICE_CHART, service_values(*cell), "svc", NAMESPACE, helm=helm_bin)
        except RenderError as exc:  # reported by the cell's own test
            return exc

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) * 2)) as pool:
        results = dict(zip(MATRIX, pool.map(one, MATRIX)))
    timings[f"render {len(MATRIX)} services (engine x size x PoP)"] = time.monotonic() - started
    return results


def rendered(matrix: dict[Cell, Any], cell: Cell) -> list[dict[str, Any]]:
    result = matrix[cell]
    if isinstance(result, Exception):
        pytest.fail(f"helm template failed for {cell}: {result}")
    return result


@pytest.mark.parametrize("cell", MATRIX, ids=["-".join(c) for c in MATRIX])
def test_every_engine_size_pop_renders_valid_crs(matrix, crd_index: CrdIndex, cell: Cell) -> None:
    engine, size, pop = cell
    docs = by_kind(rendered(matrix, cell))
    api_version, kind = ENGINE_KINDS[engine]
    assert set(docs) == {"ServiceClaim", kind}
    assert docs[kind]["apiVersion"] == api_version
    for doc in docs.values():
        crd_index.validate(doc)  # SchemaViolation lists every problem with its path
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert DNS1123_LABEL.match(meta["name"]) and len(meta["name"]) <= 30
        assert meta["labels"]["dbaas.io/tenant"] == "acme"
        assert meta["labels"]["dbaas.io/service-id"] == f"3f2a9c1e-{engine}-{size}-{pop}"
        assert meta["labels"]["dbaas.io/engine"] == engine
        assert meta["labels"]["dbaas.io/pop"] == pop
        assert meta["labels"]["team"] == "payments"
    assert docs["ServiceClaim"]["metadata"]["name"] == docs[kind]["metadata"]["name"]


VITESS_POOL = "spec.keyspaces[0].partitionings[0].equal.shardTemplate.tabletPools[0]"
# Where each engine keeps replicas, CPU, memory and storage, and how it spells them.
# (path, expected value from (cpu, memoryGi, storageGi, replicas))
SIZE_FIELDS: dict[str, list[tuple[str, Any]]] = {
    "yugabyte": [
        ("spec.numNodes", lambda c, m, s, r: r),
        ("spec.replicationFactor", lambda c, m, s, r: 3 if r >= 3 else 1),
        ("spec.kubernetesOverrides.resource.tserver.requests.cpu", lambda c, m, s, r: str(c)),
        ("spec.kubernetesOverrides.resource.tserver.limits.memory", lambda c, m, s, r: f"{m}Gi"),
        ("spec.deviceInfo.volumeSize", lambda c, m, s, r: s),
    ],
    "vitess": [
        (f"{VITESS_POOL}.replicas", lambda c, m, s, r: r),
        (f"{VITESS_POOL}.mysqld.resources.requests.cpu", lambda c, m, s, r: str(c)),
        (f"{VITESS_POOL}.mysqld.resources.limits.memory", lambda c, m, s, r: f"{m}Gi"),
        (f"{VITESS_POOL}.dataVolumeClaimTemplate.resources.requests.storage", lambda c, m, s, r: f"{s}Gi"),
        ("spec.keyspaces[0].durabilityPolicy", lambda c, m, s, r: "semi_sync" if r >= 3 else "none"),
        ("spec.cells[0].name", lambda c, m, s, r: "frankfurt"),
    ],
    "scylla": [
        ("spec.datacenter.name", lambda c, m, s, r: "frankfurt"),
        ("spec.datacenter.racks[0].members", lambda c, m, s, r: r),
        ("spec.datacenter.racks[0].resources.requests.cpu", lambda c, m, s, r: str(c)),
        ("spec.datacenter.racks[0].resources.limits.cpu", lambda c, m, s, r: str(c)),
        ("spec.datacenter.racks[0].resources.limits.memory", lambda c, m, s, r: f"{m}Gi"),
        ("spec.datacenter.racks[0].storage.capacity", lambda c, m, s, r: f"{s}Gi"),
    ],
    "dragonfly": [
        ("spec.replicas", lambda c, m, s, r: r),
        ("spec.resources.requests.cpu", lambda c, m, s, r: str(c)),
        ("spec.resources.limits.memory", lambda c, m, s, r: f"{m}Gi"),
        ("spec.snapshot.persistentVolumeClaimSpec.resources.requests.storage", lambda c, m, s, r: f"{s}Gi"),
    ],
    "aerospike": [
        ("spec.size", lambda c, m, s, r: r),
        ("spec.podSpec.aerospikeContainer.resources.requests.cpu", lambda c, m, s, r: str(c)),
        ("spec.podSpec.aerospikeContainer.resources.limits.memory", lambda c, m, s, r: f"{m}Gi"),
        ("spec.storage.volumes[1].source.persistentVolume.size", lambda c, m, s, r: f"{s}Gi"),
        ("spec.aerospikeConfig.namespaces[0].replication-factor", lambda c, m, s, r: min(r, 2)),
        (
            "spec.aerospikeConfig.namespaces[0].storage-engine.filesize",
            lambda c, m, s, r: s * 1024 * 9 // 10 * 2**20,
        ),
    ],
    "mongodb": [
        ("spec.members", lambda c, m, s, r: r),
        (
            "spec.statefulSet.spec.template.spec.containers[0].resources.requests.cpu",
            lambda c, m, s, r: str(c),
        ),
        (
            "spec.statefulSet.spec.template.spec.containers[0].resources.limits.memory",
            lambda c, m, s, r: f"{m}Gi",
        ),
        (
            "spec.statefulSet.spec.volumeClaimTemplates[0].spec.resources.requests.storage",
            lambda c, m, s, r: f"{s}Gi",
        ),
    ],
}
SIZE_CELLS = list(itertools.product(ENGINES, SIZES))


@pytest.mark.parametrize(("engine", "size"), SIZE_CELLS, ids=["-".join(c) for c in SIZE_CELLS])
def test_size_maps_to_the_engines_own_fields(matrix, engine: str, size: str) -> None:
    docs = by_kind(rendered(matrix, (engine, size, "frankfurt")))
    cr = docs[ENGINE_KINDS[engine][1]]
    cpu, memory, storage, replicas = SIZES[size]
    for path, expected in SIZE_FIELDS[engine]:
        assert dig(cr, path) == expected(cpu, memory, storage, replicas), path
    claim = docs["ServiceClaim"]["spec"]
    assert claim["resources"] == {"cpu": str(cpu), "memory": f"{memory}Gi", "storage": f"{storage}Gi"}
    assert (claim["replicas"], claim["engine"], claim["pop"]) == (replicas, engine, "frankfurt")
    assert claim["engineVersion"] == ENGINE_VERSIONS[engine]


@pytest.mark.parametrize(
    ("engine", "path", "expected"),
    [
        pytest.param("yugabyte", "spec.ybSoftwareVersion", "2024.2.0.0-b145", id="yugabyte"),
        pytest.param(
            "vitess", "spec.images.vttablet", "vitess/lite:v24.0.0-rc1-mysql80", id="vitess-full-tag"
        ),
        pytest.param("scylla", "spec.version", "2026.2.4", id="scylla"),
        pytest.param(
            "dragonfly", "spec.image", "docker.dragonflydb.io/dragonflydb/dragonfly:v1.36.0", id="dragonfly"
        ),
        pytest.param(
            "aerospike", "spec.image", "aerospike/aerospike-server-enterprise:8.1.2.0", id="aerospike"
        ),
        pytest.param("mongodb", "spec.version", "6.0.5", id="mongodb"),
    ],
)
def test_engine_version_lands_in_the_engines_version_field(
    matrix, engine: str, path: str, expected: str
) -> None:
    cr = by_kind(rendered(matrix, (engine, "small", "ashburn")))[ENGINE_KINDS[engine][1]]
    assert dig(cr, path) == expected


def test_vitess_bare_release_gets_the_mysql80_flavour(helm_bin: str) -> None:
    docs = helm.render(
        SERVICE_CHART,
        service_values("vitess", "small", "lagos", engineVersion="22.0.1"),
        "svc",
        NAMESPACE,
        helm=helm_bin,
    )
    assert by_kind(docs)["VitessCluster"]["spec"]["images"]["vtgate"] == "vitess/lite:v22.0.1-mysql80"


@pytest.mark.parametrize(
    ("cpu", "memory_gi", "cpu_quantity", "memory_quantity"),
    [
        pytest.param(0.5, 0.75, "500m", "768Mi", id="half-core"),
        pytest.param(4.35, 1.5, "4350m", "1536Mi", id="float-rounding"),
        pytest.param(64, 512, "64", "512Gi", id="whole-units"),
    ],
)
def test_fractional_cpu_and_memory_become_exact_quantities(
    helm_bin: str, crd_index: CrdIndex, cpu: float, memory_gi: float, cpu_quantity: str, memory_quantity: str
) -> None:
    values = service_values("scylla", "small", "lagos", cpu=cpu, memoryGi=memory_gi)
    docs = by_kind(helm.render(SERVICE_CHART, values, "svc", NAMESPACE, helm=helm_bin))
    assert docs["ServiceClaim"]["spec"]["resources"]["cpu"] == cpu_quantity
    assert docs["ServiceClaim"]["spec"]["resources"]["memory"] == memory_quantity
    rack = docs["ScyllaCluster"]["spec"]["datacenter"]["racks"][0]
    assert rack["resources"]["limits"] == {"cpu": cpu_quantity, "memory": memory_quantity}
    for doc in docs.values():
        crd_index.validate(doc)


@pytest.mark.parametrize("engine", ENGINES)
def test_deletion_protection_stops_argocd_pruning_and_deleting(
    helm_bin: str, crd_index: CrdIndex, engine: str
) -> None:
    values = service_values(engine, "medium", "singapore", deletionProtection=True)
    docs = by_kind(helm.render(SERVICE_CHART, values, "svc", NAMESPACE, helm=helm_bin))
    for doc in docs.values():
        crd_index.validate(doc)
        assert doc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false,Delete=false"
    assert docs["ServiceClaim"]["spec"]["deletionProtection"] is True
    assert docs["ServiceClaim"]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "0"
    assert docs[ENGINE_KINDS[engine][1]]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "1"


def test_names_are_short_dns_labels_derived_from_name_and_id(helm_bin: str, crd_index: CrdIndex) -> None:
    long_name = "a-very-long-service-name-" + "x" * 38  # 63 characters, the maximum
    first = helm.render(
        SERVICE_CHART,
        service_values("aerospike", "small", "lagos", name=long_name, serviceId="id-1"),
        "svc",
        NAMESPACE,
        helm=helm_bin,
    )
    again = helm.render(
        SERVICE_CHART,
        service_values("aerospike", "small", "lagos", name=long_name, serviceId="id-1"),
        "svc",
        NAMESPACE,
        helm=helm_bin,
    )
    other = helm.render(
        SERVICE_CHART,
        service_values("aerospike", "small", "lagos", name=long_name, serviceId="id-2"),
        "svc",
        NAMESPACE,
        helm=helm_bin,
    )
    name = first[0]["metadata"]["name"]
    assert first == again  # deterministic: same values, same objects
    assert name == "a-very-long-service-n-" + name[-8:] and len(name) == 30 and DNS1123_LABEL.match(name)
    assert other[0]["metadata"]["name"] != name
    for doc in first:
        crd_index.validate(doc)
    aerospike = by_kind(first)["AerospikeCluster"]
    assert len(aerospike["spec"]["aerospikeConfig"]["namespaces"][0]["name"]) <= 31


def test_platform_labels_win_and_the_dbaas_prefix_is_reserved(helm_bin: str) -> None:
    values = service_values("mongodb", "small", "lagos", labels={"app.kubernetes.io/name": "mine"})
    docs = helm.render(SERVICE_CHART, values, "svc", NAMESPACE, helm=helm_bin)
    assert {d["metadata"]["labels"]["app.kubernetes.io/name"] for d in docs} == {"mongodb"}
    with pytest.raises(RenderError, match=r'labels: key "dbaas.io/tenant" is reserved for the platform'):
        helm.render(
            SERVICE_CHART,
            service_values("mongodb", "small", "lagos", labels={"dbaas.io/tenant": "evil"}),
            "svc",
            NAMESPACE,
            helm=helm_bin,
        )


# (overrides, a fragment Helm's message must contain)
BAD_VALUES = [
    pytest.param(
        {"engine": "mysql"}, "at '/engine': value must be one of 'yugabyte', 'vitess'", id="engine-mysql"
    ),
    pytest.param({"pop": "mars"}, "at '/pop': value must be one of 'lagos'", id="pop-unknown"),
    pytest.param({"replicas": 0}, "at '/replicas': minimum: got 0, want 1", id="no-replicas"),
    pytest.param({"replicas": 1.5}, "at '/replicas': got number, want integer", id="fractional-replicas"),
    pytest.param({"cpu": "two"}, "at '/cpu': got string, want number", id="cpu-not-a-number"),
    pytest.param({"cpu": 0}, "at '/cpu': minimum: got 0, want 0.001", id="cpu-zero"),
    pytest.param({"storageGi": 0}, "at '/storageGi': minimum: got 0, want 1", id="no-storage"),
    pytest.param({"tenant": "Acme Corp"}, "at '/tenant'", id="tenant-not-dns-label"),
    pytest.param({"name": "n" * 64}, "at '/name'", id="name-too-long"),
    pytest.param({"serviceId": "a/b"}, "at '/serviceId'", id="service-id-not-label-safe"),
    pytest.param({"engineVersion": "8.0 latest"}, "at '/engineVersion'", id="version-with-space"),
    pytest.param({"replica": 3}, "additional properties 'replica' not allowed", id="misspelled-key"),
    pytest.param(
        {"engines": {"vitess": {"imag": "x"}}},
        "additional properties 'imag' not allowed",
        id="misspelled-engine-knob",
    ),
    pytest.param({"labels": {"team": "a b"}}, "at '/labels/team'", id="label-value-invalid"),
    pytest.param({"tenant": None}, "at '/tenant'", id="tenant-missing"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES)
def test_bad_values_fail_helm_template_with_a_message(
    helm_bin: str, overrides: dict[str, Any], message: str
) -> None:
    values = service_values("yugabyte", "small", "lagos")
    for key, value in overrides.items():
        if value is None:
            del values[key]
        else:
            values[key] = value
    with pytest.raises(RenderError) as caught:
        helm.render(SERVICE_CHART, values, "svc", NAMESPACE, helm=helm_bin)
    assert message in caught.value.stderr, caught.value.stderr
    assert message in str(caught.value)
    assert caught.value.reason == "RenderFailed" and not caught.value.transient


# -- lint ------------------------------------------------------------------------------------

CHARTS = {
    "dbaas-service": SERVICE_CHART,
    "dbaas-argocd-apps": ARGOCD_APPS_CHART,
    "dbaas-backup": BACKUP_CHART,
}
LINT_CASES = [
    pytest.param(chart, ci_values, id=f"{chart}-{ci_values.stem}")
    for chart, path in CHARTS.items()
    for ci_values in sorted((path / "ci").glob("*.yaml"))
] + [pytest.param("dbaas-service", engine, id=f"dbaas-service-{engine}") for engine in ENGINES]


@pytest.mark.parametrize(("chart", "values"), LINT_CASES)
def test_helm_lint_strict_passes(helm_bin: str, chart: str, values: Path | str) -> None:
    import yaml

    if isinstance(values, Path):
        data = yaml.safe_load(values.read_text())
    else:
        data = service_values(values, "large", "johannesburg", deletionProtection=True)
    helm.lint(CHARTS[chart], data, helm=helm_bin)


def test_lint_failure_is_a_lint_error_with_helms_report(helm_bin: str) -> None:
    with pytest.raises(LintError, match=r"\[ERROR\]") as caught:
        helm.lint(SERVICE_CHART, {"engine": "mysql"}, helm=helm_bin)
    assert "value must be one of" in caught.value.output


def test_every_chart_is_covered_by_a_ci_values_file() -> None:
    for name, path in CHARTS.items():
        assert list((path / "ci").glob("*.yaml")), f"{name} has no ci/*.yaml example values"


# -- Argo CD Applications --------------------------------------------------------------------

APPS_VALUES = {
    "repoURL": "https://git.example.net/dbaas/gitops.git",
    "applications": [{"tenant": tenant, "pop": pop} for tenant in ("acme", "globex") for pop in POPS],
    "destinations": {"local": {"server": "https://kubernetes.default.svc"}},
}


@pytest.fixture(scope="session")
def applications(helm_bin: str) -> dict[tuple[str, str], dict[str, Any]]:
    docs = helm.render(ARGOCD_APPS_CHART, APPS_VALUES, "apps", "argocd", helm=helm_bin)
    return {
        (d["metadata"]["labels"]["dbaas.io/tenant"], d["metadata"]["labels"]["dbaas.io/pop"]): d for d in docs
    }


APP_CELLS = list(itertools.product(("acme", "globex"), POPS))


@pytest.mark.parametrize(("tenant", "pop"), APP_CELLS, ids=["-".join(c) for c in APP_CELLS])
def test_argocd_application_per_tenant_and_pop(
    applications, crd_index: CrdIndex, tenant: str, pop: str
) -> None:
    app = applications[(tenant, pop)]
    crd_index.validate(app)
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["metadata"]["name"] == f"{tenant}-{pop}"
    assert app["metadata"]["namespace"] == "argocd"
    source = app["spec"]["source"]
    assert (source["repoURL"], source["path"], source["directory"]["recurse"]) == (
        APPS_VALUES["repoURL"],
        f"tenants/{tenant}/{pop}",  # each PoP applies only the services placed in it
        True,
    )
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
    destination = app["spec"]["destination"]
    assert destination["namespace"] == f"tenant-{tenant}"
    expected = {"server": "https://kubernetes.default.svc"} if pop == "local" else {"name": pop}
    assert {k: v for k, v in destination.items() if k != "namespace"} == expected


def test_argocd_names_stay_within_63_characters_and_distinct(helm_bin: str, crd_index: CrdIndex) -> None:
    tenants = ["t" * 63, "t" * 62 + "u"]  # differ only beyond what fits
    values = {
        **APPS_VALUES,
        "applications": [{"tenant": t, "pop": "johannesburg"} for t in tenants],
        "include": "*.{pop}.yaml",
    }
    docs = helm.render(ARGOCD_APPS_CHART, values, "apps", "argocd", helm=helm_bin)
    names = [d["metadata"]["name"] for d in docs]
    namespaces = [d["spec"]["destination"]["namespace"] for d in docs]
    assert len(set(names)) == 2 and len(set(namespaces)) == 2
    assert all(len(n) <= 63 and DNS1123_LABEL.match(n) for n in names + namespaces)
    assert {d["spec"]["source"]["directory"]["include"] for d in docs} == {"*.johannesburg.yaml"}
    for doc in docs:
        crd_index.validate(doc)


@pytest.mark.parametrize(
    ("values", "paths"),
    [
        pytest.param(
            {"pathTemplate": "tenants/{tenant}/{pop}"},
            {"tenants/acme/lagos", "tenants/acme/ashburn"},
            id="per-pop-folder",
        ),
        pytest.param(
            {"applications": [{"tenant": "acme", "pop": "lagos", "path": "custom/acme"}]},
            {"custom/acme"},
            id="literal-path",
        ),
    ],
)
def test_application_paths_follow_the_layout(helm_bin: str, values: dict[str, Any], paths: set[str]) -> None:
    base = {
        **APPS_VALUES,
        "applications": [{"tenant": "acme", "pop": "lagos"}, {"tenant": "acme", "pop": "ashburn"}],
    }
    docs = helm.render(ARGOCD_APPS_CHART, {**base, **values}, "apps", "argocd", helm=helm_bin)
    assert {d["spec"]["source"]["path"] for d in docs} == paths


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"repoURL": ""}, "at '/repoURL'", id="no-repo"),
        pytest.param({"pathTemplate": "/abs/{tenant}"}, "at '/pathTemplate'", id="absolute-path"),
        pytest.param(
            {"applications": [{"tenant": "acme", "pop": "mars"}]},
            "at '/applications/0/pop'",
            id="pop-unknown",
        ),
        pytest.param(
            {"applications": [{"tenant": "acme", "pop": "lagos"}] * 2},
            'tenant "acme" and pop "lagos" are listed twice',
            id="duplicate",
        ),
        pytest.param(
            {"destinations": {"lagos": {"server": "http://insecure"}}},
            "at '/destinations/lagos",
            id="plain-http-destination",
        ),
    ],
)
def test_bad_application_values_fail(helm_bin: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError) as caught:
        helm.render(ARGOCD_APPS_CHART, {**APPS_VALUES, **overrides}, "apps", "argocd", helm=helm_bin)
    assert message in caught.value.stderr


# -- DatabaseBackup --------------------------------------------------------------------------

BACKUP_VALUES = {
    "tenant": "acme",
    "serviceId": "3f2a9c1e-vitess-medium-lagos",
    "serviceName": "orders-db",
    "engine": "vitess",
    "pop": "lagos",
    "backupId": "bk-20260101-0001",
    "destination": {"bucket": "dbaas-backups-lagos", "prefix": "tenants/acme/orders-db/"},
    "encryption": {"keyId": "dek-acme-0001", "kekId": "kek-2026-01"},
}


@pytest.mark.parametrize(
    ("pop", "destination"),
    [
        pytest.param("lagos", BACKUP_VALUES["destination"], id="bucket"),
        pytest.param("local", {"path": "/var/lib/dbaas/backups/acme"}, id="local-path"),
    ],
)
def test_backup_renders_a_valid_databasebackup_for_the_services_claim(
    matrix, helm_bin: str, crd_index: CrdIndex, pop: str, destination: dict[str, str]
) -> None:
    service_id = f"3f2a9c1e-vitess-medium-{pop}"
    values = {**BACKUP_VALUES, "pop": pop, "serviceId": service_id, "destination": destination}
    [backup] = helm.render(BACKUP_CHART, values, "backup", NAMESPACE, helm=helm_bin)
    crd_index.validate(backup)
    claim = by_kind(rendered(matrix, ("vitess", "medium", pop)))["ServiceClaim"]
    assert (
        backup["spec"]["serviceClaimRef"]["name"] == claim["metadata"]["name"]
    )  # both charts derive it alike
    assert backup["spec"]["destination"] == destination
    assert backup["metadata"]["labels"]["dbaas.io/backup-id"] == "bk-20260101-0001"


def test_backup_with_both_bucket_and_path_is_refused(helm_bin: str) -> None:
    values = {**BACKUP_VALUES, "destination": {"bucket": "b-1", "path": "/x"}}
    with pytest.raises(RenderError, match="at '/destination': 'oneOf' failed"):
        helm.render(BACKUP_CHART, values, "backup", NAMESPACE, helm=helm_bin)


# -- gitops.helm -----------------------------------------------------------------------------


def test_find_helm_prefers_dbaas_helm(helm_bin: str) -> None:
    assert helm.find_helm({"DBAAS_HELM": helm_bin, "PATH": ""}) == helm_bin
    assert helm.version(helm_bin).startswith("v3.")


def test_find_helm_rejects_a_bad_dbaas_helm(tmp_path: Path) -> None:
    with pytest.raises(HelmNotFoundError, match="DBAAS_HELM=.* is not an executable file"):
        helm.find_helm({"DBAAS_HELM": str(tmp_path / "nope"), "PATH": ""})
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho v2.17.0\n")
    fake.chmod(0o755)
    with pytest.raises(HelmNotFoundError, match="is not Helm v3"):
        helm.find_helm({"DBAAS_HELM": str(fake), "PATH": ""})


def test_find_helm_falls_back_to_path_then_tools(helm_bin: str, tmp_path: Path, monkeypatch) -> None:
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "helm").symlink_to(helm_bin)
    assert helm.find_helm({"PATH": str(on_path)}) == str(on_path / "helm")
    monkeypatch.setattr(helm, "BUNDLED_HELM", Path(helm_bin))
    assert helm.find_helm({"PATH": str(tmp_path / "empty")}) == helm_bin
    monkeypatch.setattr(helm, "BUNDLED_HELM", tmp_path / "missing" / "helm")
    with pytest.raises(HelmNotFoundError, match="Run deploy/scripts/ensure-helm.sh"):
        helm.find_helm({"PATH": str(tmp_path / "empty")})


@pytest.mark.parametrize(
    ("release", "namespace", "message"),
    [
        pytest.param("Svc", NAMESPACE, "release name 'Svc'", id="release-upper-case"),
        pytest.param("s" * 54, NAMESPACE, "at most 53", id="release-too-long"),
        pytest.param("svc", "", "namespace ''", id="namespace-empty"),
        pytest.param("svc", "tenant_acme", "namespace 'tenant_acme'", id="namespace-underscore"),
    ],
)
def test_release_and_namespace_are_checked_before_helm_runs(
    release: str, namespace: str, message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        helm.render(
            SERVICE_CHART, service_values("vitess", "small", "lagos"), release, namespace, helm="/nonexistent"
        )


def test_values_must_be_plain_data(helm_bin: str) -> None:
    with pytest.raises(RenderError, match="not plain JSON data"):
        helm.render(SERVICE_CHART, {"tenant": object()}, "svc", NAMESPACE, helm=helm_bin)


def test_values_never_reach_the_command_line(helm_bin: str, tmp_path: Path) -> None:
    """A values-looking string stays data: Helm sees it on stdin, never as a flag."""
    spy = tmp_path / "helm"
    spy.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\nexec {helm_bin} "$@"\n')
    spy.chmod(0o755)
    values = service_values("dragonfly", "small", "lagos", labels={"secret-looking": "s3cr3t-value"})
    helm.render(SERVICE_CHART, values, "svc", NAMESPACE, helm=str(spy))
    argv = (tmp_path / "argv").read_text()
    assert "s3cr3t-value" not in argv and "--values -" in argv


def test_ensure_helm_is_idempotent_and_prints_only_the_path(helm_bin: str) -> None:
    again = subprocess.run([str(ENSURE_HELM)], capture_output=True, text=True, timeout=60, check=True)
    assert again.stdout == f"{helm_bin}\n"  # the same answer as the session fixture got
    assert "building" not in again.stderr
    honoured = subprocess.run(
        [str(ENSURE_HELM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "DBAAS_HELM": helm_bin},
    )
    assert honoured.stdout == f"{helm_bin}\n"


def test_ensure_helm_explains_a_missing_go(tmp_path: Path) -> None:
    """Outside a repo with .tools/bin/helm, with neither helm nor go on PATH, it says what to do."""
    script = tmp_path / "deploy" / "scripts" / "ensure-helm.sh"
    script.parent.mkdir(parents=True)
    shutil.copy2(ENSURE_HELM, script)
    path = ":".join(
        p for p in ("/usr/bin", "/bin") if not (Path(p) / "go").exists() and not (Path(p) / "helm").exists()
    )
    result = subprocess.run(
        [str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": path, "HOME": str(tmp_path)},
    )
    assert result.returncode != 0 and result.stdout == ""
    assert "Go is not installed" in result.stderr and "DBAAS_HELM" in result.stderr


def test_rendered_objects_round_trip_through_deterministic_yaml(matrix) -> None:
    docs = rendered(matrix, ("mongodb", "large", "lagos"))
    text = manifests.dump_all(docs)
    assert text == manifests.dump_all(copy.deepcopy(docs))  # equal objects, equal bytes
    assert text.startswith("---\n") and text.count("\n---\n") == len(docs) - 1
    assert manifests.parse_all(text) == docs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("a: [", "is not valid YAML", id="bad-yaml"),
        pytest.param("- 1\n", "document 1 is a list", id="not-a-mapping"),
        pytest.param("---\n---\nkind: X\nmetadata: {name: x}\n", "has no apiVersion", id="no-api-version"),
        pytest.param("apiVersion: v1\nkind: X\n", "has no metadata.name", id="no-name"),
    ],
)
def test_manifest_parsing_errors_are_typed(text: str, message: str) -> None:
    with pytest.raises(manifests.ManifestError, match=message) as caught:
        manifests.parse_all(text)
    assert caught.value.reason == "InvalidManifest" and not caught.value.transient


def test_render_returns_independent_plain_dicts(helm_bin: str) -> None:
    docs = helm.render(
        SERVICE_CHART, service_values("vitess", "small", "local"), "svc", NAMESPACE, helm=helm_bin
    )
    snapshot = copy.deepcopy(docs)
    docs[0]["metadata"]["name"] = "changed"
    again = helm.render(
        SERVICE_CHART, service_values("vitess", "small", "local"), "svc", NAMESPACE, helm=helm_bin
    )
    assert again == snapshot
