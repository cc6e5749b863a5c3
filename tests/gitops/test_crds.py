"""The platform CRDs (deploy/crds) and the CRD-schema validator (tests/gitops/crdschema.py).

The validator is what makes the chart tests meaningful, so it is tested both ways here: every
upstream example CR passes (no false alarms), and each kind of mistake a template can make (wrong
type, missing required field, misspelled field, bad enum, float for an int-or-string, null where
not nullable, bad name) fails with the path of the mistake.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from crdschema import (
    PLATFORM_CRDS,
    CrdIndex,
    SchemaViolation,
    UnknownKindError,
    iter_crd_versions,
    structural_problems,
    upstream_crds_dir,
    upstream_example_files,
)

PLATFORM_CRD_FILES = {
    "serviceclaim": (PLATFORM_CRDS / "serviceclaim.yaml", "ServiceClaim", "serviceclaims"),
    "databasebackup": (PLATFORM_CRDS / "databasebackup.yaml", "DatabaseBackup", "databasebackups"),
}
# Short names kubectl already uses for built-in kinds; ours must not shadow them.
BUILTIN_SHORT_NAMES = {
    "cm",
    "cs",
    "ds",
    "deploy",
    "ep",
    "ev",
    "hpa",
    "ing",
    "limits",
    "no",
    "ns",
    "pdb",
    "po",
    "psp",
    "pv",
    "pvc",
    "quota",
    "rc",
    "rs",
    "sa",
    "sc",
    "sts",
    "svc",
    "crd",
    "netpol",
    "csr",
    "pc",
    "app",
    "apps",
}

SERVICE_CLAIM: dict[str, Any] = {
    "apiVersion": "dbaas.io/v1alpha1",
    "kind": "ServiceClaim",
    "metadata": {
        "name": "orders-db-b6743252",
        "namespace": "tenant-acme",
        "labels": {"dbaas.io/tenant": "acme", "dbaas.io/pop": "lagos"},
    },
    "spec": {
        "tenant": "acme",
        "serviceId": "3f2a9c1e-7b4d-4e21-9a55-0c6d2e8f1a77",
        "name": "orders-db",
        "engine": "yugabyte",
        "engineVersion": "2024.2.0.0-b145",
        "pop": "lagos",
        "resources": {"cpu": "2", "memory": "8Gi", "storage": "100Gi"},
        "replicas": 3,
        "deletionProtection": True,
        "labels": {"team": "payments"},
    },
    "status": {
        "observedGeneration": 2,
        "phase": "Ready",
        "endpoint": {
            "host": "orders-db-b6743252.tenant-acme.svc",
            "port": 5433,
            "protocol": "postgresql",
            "credentialsSecret": "orders-db-b6743252-credentials",
        },
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Available",
                "message": "3 of 3 nodes ready",
                "observedGeneration": 2,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
            {
                "type": "Synced",
                "status": "True",
                "reason": "ReconcileSuccess",
                "message": "",
                "observedGeneration": 2,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ],
    },
}

DATABASE_BACKUP: dict[str, Any] = {
    "apiVersion": "dbaas.io/v1alpha1",
    "kind": "DatabaseBackup",
    "metadata": {"name": "orders-db-b6743252-eb3024d4", "namespace": "tenant-acme"},
    "spec": {
        "serviceClaimRef": {"name": "orders-db-b6743252"},
        "tenant": "acme",
        "backupId": "bk-0001",
        "engine": "yugabyte",
        "pitr": True,
        "destination": {"bucket": "dbaas-backups-lagos", "prefix": "tenants/acme/orders-db/"},
        "encryption": {"keyId": "dek-acme-0001", "kekId": "kek-2026-01"},
    },
    "status": {
        "phase": "Completed",
        "location": "s3://dbaas-backups-lagos/tenants/acme/orders-db/bk-0001.tar.zst.enc",
        "sizeBytes": 1234567890123,
        "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:05:00Z",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Completed",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:05:00Z",
            }
        ],
    },
}


def _example(relative: str, kind: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((upstream_crds_dir() / relative).read_text()):
        if doc and doc.get("kind") == kind:
            return doc
    raise LookupError(f"no {kind} in {relative}")


def _crd_doc(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


# -- the platform CRDs -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PLATFORM_CRD_FILES))
def test_platform_crd_is_structural_namespaced_with_status(name: str) -> None:
    path, kind, plural = PLATFORM_CRD_FILES[name]
    crd = _crd_doc(path)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.dbaas.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == ("dbaas.io", "Namespaced", kind)
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    version = spec["versions"][0]
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert structural_problems(version["schema"]["openAPIV3Schema"]) == []
    short_names = set(spec["names"]["shortNames"])
    assert short_names and not short_names & BUILTIN_SHORT_NAMES


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        pytest.param("serviceclaim", {"Engine", "PoP", "Phase", "Ready", "Age"}, id="serviceclaim"),
        pytest.param("databasebackup", {"Service", "Phase", "Ready", "Size", "Age"}, id="databasebackup"),
    ],
)
def test_printer_columns_point_at_schema_fields(name: str, columns: set[str]) -> None:
    path, _, _ = PLATFORM_CRD_FILES[name]
    version = _crd_doc(path)["spec"]["versions"][0]
    printer = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns <= set(printer)
    schema = version["schema"]["openAPIV3Schema"]
    for column, json_path in printer.items():
        if json_path.startswith(".metadata."):
            continue
        node = schema
        plain = re.sub(r"\[\?\(.*?\)\]", "[]", json_path)  # drop filters: conditions[?(@.type=="Ready")]
        for part in plain.lstrip(".").split("."):
            field = part.split("[")[0]
            assert field in node.get("properties", {}), f"column {column}: {json_path} is not in the schema"
            node = node["properties"][field]
            if "[" in part:
                node = node["items"]


@pytest.mark.parametrize(
    "obj",
    [pytest.param(SERVICE_CLAIM, id="ServiceClaim"), pytest.param(DATABASE_BACKUP, id="DatabaseBackup")],
)
def test_full_platform_objects_with_status_validate(crd_index: CrdIndex, obj: dict[str, Any]) -> None:
    crd_index.validate(obj)


def test_platform_enums_match_between_crd_and_chart_schema() -> None:
    import json

    from gitops.helm import SERVICE_CHART

    values_schema = json.loads((SERVICE_CHART / "values.schema.json").read_text())
    spec = next(iter_crd_versions(PLATFORM_CRD_FILES["serviceclaim"][0])).openapi["properties"]["spec"]
    for field in ("engine", "pop"):
        assert spec["properties"][field]["enum"] == values_schema["properties"][field]["enum"], field


def test_platform_enums_match_the_domain_catalog() -> None:
    """The CRD offers exactly the engines and PoPs the command side offers."""
    catalog = pytest.importorskip("schemas.catalog")
    spec = next(iter_crd_versions(PLATFORM_CRD_FILES["serviceclaim"][0])).openapi["properties"]["spec"]
    assert tuple(spec["properties"]["engine"]["enum"]) == tuple(catalog.ENGINES)
    assert tuple(spec["properties"]["pop"]["enum"]) == tuple(catalog.POPS)


# -- the validator: no false alarms ----------------------------------------------------------


def _example_params() -> list[Any]:
    params = []
    for path in upstream_example_files():
        for position, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and doc.get("apiVersion") != "v1":  # companion Secrets / PVCs have no CRD
                rel = path.relative_to(upstream_crds_dir())
                params.append(pytest.param(doc, id=f"{rel}#{position}-{doc['kind']}"))
    return params


@pytest.mark.parametrize("doc", _example_params())
def test_every_upstream_example_cr_validates(crd_index: CrdIndex, doc: dict[str, Any]) -> None:
    crd_index.validate(doc)


def test_every_upstream_crd_version_is_indexed(crd_index: CrdIndex) -> None:
    kinds = {kind for _, kind in crd_index.kinds()}
    assert {
        "YBUniverse",
        "VitessCluster",
        "ScyllaCluster",
        "Dragonfly",
        "AerospikeCluster",
        "MongoDBCommunity",
        "Application",
        "ServiceClaim",
        "DatabaseBackup",
    } <= kinds


# -- the validator: it catches mistakes ------------------------------------------------------


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (``[n]`` for list items); value ``DELETE`` removes the field."""
    parts = path.replace("]", "").replace("[", ".").split(".")
    node: Any = obj
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


DELETE = object()

# (example file, kind, path, new value, expected error fragment, reason)
MISTAKES = [
    pytest.param(
        "dragonfly/examples/v1alpha1_dragonfly.yaml",
        "Dragonfly",
        "spec.replicas",
        "2",
        "$.spec.replicas: '2' is not of type 'integer'",
        id="wrong-type-string-for-integer",
    ),
    pytest.param(
        "mongodb/examples/mongodb.com_v1_mongodbcommunity_cr.yaml",
        "MongoDBCommunity",
        "spec.type",
        DELETE,
        "$.spec: 'type' is a required property",
        id="missing-required-field",
    ),
    pytest.param(
        "vitess/examples/example.yaml",
        "VitessCluster",
        "spec.keyspaces[0].partitionings[0].equal.shardTemplate.tabletPools[0].replica",
        3,
        "Additional properties are not allowed ('replica' was unexpected)",
        id="misspelled-nested-field",
    ),
    pytest.param(
        "scylla/examples/scylla.scyllacluster.yaml",
        "ScyllaCluster",
        "spec.datacentre",
        {"name": "x"},
        "('datacentre' was unexpected)",
        id="misspelled-spec-field",
    ),
    pytest.param(
        "scylla/examples/scylla.scyllacluster.yaml",
        "ScyllaCluster",
        "spec2",
        {},
        "('spec2' was unexpected)",
        id="unknown-top-level-field",
    ),
    pytest.param(
        "scylla/examples/scylla.scyllacluster.yaml",
        "ScyllaCluster",
        "spec.datacenter.racks[0].resources.limits.cpu",
        1.5,
        "$.spec.datacenter.racks[0].resources.limits.cpu: 1.5 is not of type 'integer', 'string'",
        id="float-for-int-or-string",
    ),
    pytest.param(
        "aerospike/examples/ssd_storage_cluster_cr.yaml",
        "AerospikeCluster",
        "spec.storage.volumes[0].source.persistentVolume.volumeMode",
        "Raw",
        "'Raw' is not one of ['Block', 'Filesystem']",
        id="enum-violation",
    ),
    pytest.param(
        "aerospike/examples/ssd_storage_cluster_cr.yaml",
        "AerospikeCluster",
        "spec.storage.volumes[0].source.persistentVolume.size",
        "3 GB",
        "does not match",
        id="int-or-string-pattern",
    ),
    pytest.param(
        "dragonfly/examples/v1alpha1_dragonfly.yaml",
        "Dragonfly",
        "spec.image",
        None,
        "$.spec.image: None is not of type 'string'",
        id="null-where-not-nullable",
    ),
    pytest.param(
        "aerospike/examples/dim_nostorage_cluster_cr.yaml",
        "AerospikeCluster",
        "spec.size",
        257,
        "257 is greater than the maximum of 256",
        id="maximum",
    ),
    pytest.param(
        "yugabyte/examples/universeCr.yaml",
        "YBUniverse",
        "spec.deviceInfo.volumeSise",
        10,
        "('volumeSise' was unexpected)",
        id="misspelled-field-beside-preserved-sibling",
    ),
    pytest.param(
        "argocd/examples/target-child-application.yaml",
        "Application",
        "spec.syncPolicy.automated.prun",
        True,
        "('prun' was unexpected)",
        id="argocd-misspelled-sync-field",
    ),
    pytest.param(
        "dragonfly/examples/v1alpha1_dragonfly.yaml",
        "Dragonfly",
        "metadata.name",
        "Dragonfly_Sample",
        "$.metadata.name: 'Dragonfly_Sample' does not match",
        id="name-not-dns-1123",
    ),
    pytest.param(
        "dragonfly/examples/v1alpha1_dragonfly.yaml",
        "Dragonfly",
        "metadata.name",
        "d" * 64,
        "is too long",
        id="name-longer-than-63",
    ),
    pytest.param(
        "dragonfly/examples/v1alpha1_dragonfly.yaml",
        "Dragonfly",
        "metadata.labels.tier",
        "a b",
        "$.metadata.labels.tier: 'a b' does not match",
        id="label-value-not-allowed",
    ),
    pytest.param(
        "dragonfly/examples/v1alpha1_dragonfly.yaml",
        "Dragonfly",
        "metadata.uid",
        "x",
        "('uid' was unexpected)",
        id="unexpected-metadata-field",
    ),
]


@pytest.mark.parametrize(("example", "kind", "path", "value", "expected"), MISTAKES)
def test_validator_catches(
    crd_index: CrdIndex, example: str, kind: str, path: str, value: Any, expected: str
) -> None:
    doc = copy.deepcopy(_example(example, kind))
    crd_index.validate(doc)  # the unmodified example is valid ...
    _set(doc, path, value)
    with pytest.raises(SchemaViolation) as caught:  # ... and the one mistake is not
        crd_index.validate(doc)
    assert any(expected in error for error in caught.value.errors), caught.value.errors


# (object, path, new value, expected fragment or None when the change is valid)
PLATFORM_CASES = [
    pytest.param(
        SERVICE_CLAIM, "spec.engine", "mysql", "'mysql' is not one of", id="claim-engine-not-offered"
    ),
    pytest.param(SERVICE_CLAIM, "spec.pop", "mars", "'mars' is not one of", id="claim-pop-unknown"),
    pytest.param(
        SERVICE_CLAIM, "spec.replicas", 0, "0 is less than the minimum of 1", id="claim-no-replicas"
    ),
    pytest.param(
        SERVICE_CLAIM, "spec.resources.cpu", "two", "'two' does not match", id="claim-cpu-not-quantity"
    ),
    pytest.param(SERVICE_CLAIM, "spec.resources.cpu", 2, None, id="claim-cpu-integer-ok"),
    pytest.param(SERVICE_CLAIM, "spec.resources.cpu", "500m", None, id="claim-cpu-millicores-ok"),
    pytest.param(
        SERVICE_CLAIM,
        "spec.resources.cpu",
        0.5,
        "0.5 is not of type 'integer', 'string'",
        id="claim-cpu-float-rejected",
    ),
    pytest.param(
        SERVICE_CLAIM, "spec.resources.memory", "8GB", "'8GB' does not match", id="claim-memory-unit"
    ),
    pytest.param(
        SERVICE_CLAIM, "spec.tenant", DELETE, "'tenant' is a required property", id="claim-no-tenant"
    ),
    pytest.param(SERVICE_CLAIM, "spec.replica", 3, "('replica' was unexpected)", id="claim-misspelled-field"),
    pytest.param(
        SERVICE_CLAIM, "status.phase", "Running", "'Running' is not one of", id="claim-phase-unknown"
    ),
    pytest.param(
        SERVICE_CLAIM,
        "status.conditions[0].status",
        "Yes",
        "'Yes' is not one of",
        id="claim-condition-status",
    ),
    pytest.param(
        SERVICE_CLAIM,
        "status.conditions[0].reason",
        "not camel",
        "does not match",
        id="claim-condition-reason-not-camelcase",
    ),
    pytest.param(
        DATABASE_BACKUP,
        "spec.destination",
        {"bucket": "b-1", "path": "/x"},
        "is valid under each of",
        id="backup-bucket-and-path",
    ),
    pytest.param(
        DATABASE_BACKUP,
        "spec.destination",
        {"prefix": "x/"},
        "is not valid under any",
        id="backup-no-bucket-nor-path",
    ),
    pytest.param(
        DATABASE_BACKUP, "spec.destination", {"path": "/var/backups/acme"}, None, id="backup-path-ok"
    ),
    pytest.param(
        DATABASE_BACKUP,
        "spec.encryption",
        {"keyId": "dek-acme-0001"},
        "'kekId' is a required property",
        id="backup-data-key-without-its-kek",
    ),
    pytest.param(DATABASE_BACKUP, "status.sizeBytes", -1, "less than the minimum", id="backup-negative-size"),
]


@pytest.mark.parametrize(("base", "path", "value", "expected"), PLATFORM_CASES)
def test_platform_crd_rules(
    crd_index: CrdIndex, base: dict[str, Any], path: str, value: Any, expected: str | None
) -> None:
    doc = copy.deepcopy(base)
    _set(doc, path, value)
    errors = crd_index.errors(doc)
    if expected is None:
        assert errors == []
    else:
        assert any(expected in error for error in errors), errors


def test_preserve_unknown_fields_keeps_free_form_config(crd_index: CrdIndex) -> None:
    """Fields under x-kubernetes-preserve-unknown-fields (YBUniverse kubernetesOverrides, Aerospike
    aerospikeConfig) are free-form upstream, so the validator must not flag them."""
    universe = copy.deepcopy(_example("yugabyte/examples/universeCr.yaml", "YBUniverse"))
    universe["spec"]["kubernetesOverrides"]["anythingTheChartSupports"] = {"x": 1}
    aerospike = copy.deepcopy(_example("aerospike/examples/ssd_storage_cluster_cr.yaml", "AerospikeCluster"))
    aerospike["spec"]["aerospikeConfig"]["logging"] = [{"name": "console", "any": "info"}]
    crd_index.validate(universe)
    crd_index.validate(aerospike)


def test_nullable_fields_accept_null(crd_index: CrdIndex) -> None:
    mongo = copy.deepcopy(
        _example("mongodb/examples/mongodb.com_v1_mongodbcommunity_cr.yaml", "MongoDBCommunity")
    )
    mongo["spec"]["additionalMongodConfig"] = None  # nullable: true upstream
    crd_index.validate(mongo)


def test_unknown_kind_is_an_error_not_a_pass(crd_index: CrdIndex) -> None:
    with pytest.raises(
        UnknownKindError, match="no CRD loaded for kind 'YBUniverse' in apiVersion 'yugabyte.io/v9'"
    ):
        crd_index.validate({"apiVersion": "yugabyte.io/v9", "kind": "YBUniverse", "metadata": {"name": "x"}})
