"""Backups and restores rendered for the PoPs, with the real Helm, validated against the CRDs.

- ``gitops.backups.render_backup`` for every engine, with and without PITR, in a Kubernetes PoP:
  a DatabaseBackup plus the engine operator's one-shot backup resource where it has one
  (YugabyteDB: StorageConfig + Backup); every object validates against its CRD (upstream for
  engine kinds, deploy/crds for ours) and points at the objects the service chart rendered;
- PoP local gets the DatabaseBackup alone; names are deterministic;
- a restore (dbaas-service with ``restore``) for every engine, from a backup and from a point in
  time: ServiceClaim ``spec.restore`` and, for YugabyteDB from a backup in the same namespace and
  PoP, a RestoreJob naming the Backup the backup render made;
- values the charts refuse fail ``helm template`` with a message naming the key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from crdschema import PLATFORM_CRDS, CrdIndex, iter_crd_versions

from gitops import backups, helm, layout, manifests
from gitops.helm import BACKUP_CHART, SERVICE_CHART, RenderError

ENGINES = ("yugabyte", "vitess", "scylla", "dragonfly", "aerospike", "mongodb")
ENGINE_VERSIONS = {
    "yugabyte": "2024.2.0.0-b145",
    "vitess": "v24.0.0-rc1-mysql80",
    "scylla": "2026.2.4",
    "dragonfly": "v1.36.0",
    "aerospike": "8.1.2.0",
    "mongodb": "6.0.5",
}
ENGINE_KINDS = {
    "yugabyte": "YBUniverse",
    "vitess": "VitessCluster",
    "scylla": "ScyllaCluster",
    "dragonfly": "Dragonfly",
    "aerospike": "AerospikeCluster",
    "mongodb": "MongoDBCommunity",
}
# What a backup renders in a Kubernetes PoP, per engine: (apiVersion, kind) of every object.
BACKUP_KINDS = {
    "yugabyte": {
        ("dbaas.io/v1alpha1", "DatabaseBackup"),
        ("operator.yugabyte.io/v1alpha1", "StorageConfig"),
        ("operator.yugabyte.io/v1alpha1", "Backup"),
    },
    **{e: {("dbaas.io/v1alpha1", "DatabaseBackup")} for e in ENGINES if e != "yugabyte"},
}
TENANT = "acme"
NAMESPACE = "tenant-acme"
POP = "frankfurt"
SOURCE_ID = "3f2a9c1e-7b4d-4e21-9a55-0c6d2e8f1a77"
SOURCE_NAME = "orders-db"
BACKUP_ID = "5b1f0c2e-4a7d-5e9b-8c3a-1d2e3f4a5b6c"  # uuid5(service, slot), as the scheduler makes it
DESTINATION = {
    "bucket": "dbaas-backups-frankfurt",
    "prefix": f"tenants/acme/backups/{BACKUP_ID}/",
    "endpoint": "https://s3.frankfurt.example.net",
    "region": "eu-central-1",
}
TARGET_TIME = "2026-01-31T12:00:00Z"


def sha8(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def service_values(engine: str, *, name: str = SOURCE_NAME, service_id: str = SOURCE_ID,
                   pop: str = POP, **overrides: Any) -> dict[str, Any]:
    return {
        "tenant": TENANT, "serviceId": service_id, "name": name, "engine": engine,
        "engineVersion": ENGINE_VERSIONS[engine], "pop": pop, "cpu": 2, "memoryGi": 8,
        "storageGi": 100, "replicas": 3, **overrides,
    }


def backup_args(engine: str, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "tenant": TENANT, "pop": POP, "engine": engine, "service_id": SOURCE_ID,
        "service_name": SOURCE_NAME, "backup_id": BACKUP_ID, "destination": DESTINATION,
        "encryption_key_id": "dek-acme-0001", "kek_id": "kek-2026-01", "pitr": False,
    }
    args.update(overrides)
    return args


def restore(engine: str, **overrides: Any) -> dict[str, Any]:
    values = backups.restore_values(
        source_tenant=TENANT, source_service_id=SOURCE_ID, source_engine=engine,
        source_service_name=SOURCE_NAME, source_pop=POP, backup_id=BACKUP_ID,
        location={"bucket": DESTINATION["bucket"], "prefix": DESTINATION["prefix"]},
    )
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), f"a kind rendered twice: {kinds}"
    return {d["kind"]: d for d in docs}


def validate_all(crd_index: CrdIndex, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        crd_index.validate(doc)
        assert doc["metadata"]["namespace"] == NAMESPACE, manifests.ref(doc)


@pytest.fixture(scope="module")
def services(helm_bin: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The source service of every engine, rendered once: engine -> kind -> object."""
    return {
        engine: by_kind(helm.render(SERVICE_CHART, service_values(engine), "svc", NAMESPACE, helm=helm_bin))
        for engine in ENGINES
    }


# -- backups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pitr", [False, True], ids=["snapshot", "pitr"])
@pytest.mark.parametrize("engine", ENGINES)
def test_backup_renders_valid_objects_per_engine(
    helm_bin: str, crd_index: CrdIndex, services, engine: str, pitr: bool
) -> None:
    text = backups.render_backup(helm_bin, **backup_args(engine, pitr=pitr))
    docs = manifests.parse_all(text)
    validate_all(crd_index, docs)
    assert {(d["apiVersion"], d["kind"]) for d in docs} == BACKUP_KINDS[engine]
    assert len(docs) == len(BACKUP_KINDS[engine])

    claim = services[engine]["ServiceClaim"]
    name = f"{claim['metadata']['name']}-{sha8(BACKUP_ID)}"
    assert all(d["metadata"]["name"] == name for d in docs)  # one name for every object of a backup
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["dbaas.io/backup-id"] == BACKUP_ID and labels["dbaas.io/service-id"] == SOURCE_ID
        assert labels["dbaas.io/engine"] == engine and labels["dbaas.io/pop"] == POP

    spec = by_kind(docs)["DatabaseBackup"]["spec"]
    assert spec == {
        "serviceClaimRef": {"name": claim["metadata"]["name"]},
        "tenant": TENANT,
        "backupId": BACKUP_ID,
        "engine": engine,
        "pitr": pitr,
        "destination": DESTINATION,
        "encryption": {"keyId": "dek-acme-0001", "kekId": "kek-2026-01"},
    }
    assert spec["engine"] == claim["spec"]["engine"]


def test_backup_without_key_ids_leaves_the_keys_to_the_pop(helm_bin: str, crd_index: CrdIndex) -> None:
    args = backup_args("scylla", encryption_key_id=None, kek_id=None)
    [claim] = manifests.parse_all(backups.render_backup(helm_bin, **args))
    crd_index.validate(claim)
    assert "encryption" not in claim["spec"]  # the PoP seals with the tenant's current key, reports its ids


def test_yugabyte_backup_points_at_the_universe_and_its_storage(helm_bin: str, services) -> None:
    docs = by_kind(manifests.parse_all(backups.render_backup(helm_bin, **backup_args("yugabyte"))))
    universe = services["yugabyte"]["YBUniverse"]
    storage, backup = docs["StorageConfig"], docs["Backup"]
    assert backup["spec"] == {
        "backupType": "PGSQL_TABLE_TYPE",
        "universe": universe["metadata"]["name"],
        "keyspace": "orders_db",
        "storageConfig": storage["metadata"]["name"],
        "sse": True,
        "tableByTableBackup": False,
    }
    assert storage["spec"] == {
        "config_type": "STORAGE_S3",
        "data": {
            "BACKUP_LOCATION": f"s3://dbaas-backups-frankfurt/tenants/acme/backups/{BACKUP_ID}",
            "AWS_HOST_BASE": "s3.frankfurt.example.net",
            "PATH_STYLE_ACCESS": True,
            "USE_IAM": True,
        },
    }
    # Argo CD applies the StorageConfig before the Backup, and prunes the Backup first.
    waves = {kind: int(d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for kind, d in docs.items()}
    assert waves == {"DatabaseBackup": 2, "StorageConfig": 2, "Backup": 3}


def test_yugabyte_storage_with_an_access_key(helm_bin: str, crd_index: CrdIndex) -> None:
    text = backups.render_backup(
        helm_bin,
        **backup_args("yugabyte", destination={"bucket": "dbaas-backups-frankfurt"}),
        object_store={"accessKeyId": "AKIAEXAMPLE", "secretName": "dbaas-backup-store"},
    )
    storage = by_kind(manifests.parse_all(text))["StorageConfig"]
    crd_index.validate(storage)
    assert storage["spec"]["data"] == {
        "BACKUP_LOCATION": "s3://dbaas-backups-frankfurt",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    }
    assert storage["spec"]["awsSecretAccessKeySecret"] == {"name": "dbaas-backup-store"}


@pytest.mark.parametrize("engine", ENGINES)
def test_backup_in_the_local_pop_is_the_claim_alone(helm_bin: str, crd_index: CrdIndex, engine: str) -> None:
    for destination in ({"path": "/var/lib/dbaas/backups"}, {"bucket": "dbaas-backups-local"}):
        text = backups.render_backup(helm_bin, **backup_args(engine, pop="local", destination=destination))
        [claim] = manifests.parse_all(text)
        crd_index.validate(claim)
        assert claim["kind"] == "DatabaseBackup" and claim["spec"]["destination"] == destination


def test_backup_renders_are_deterministic(helm_bin: str) -> None:
    first = backups.render_backup(helm_bin, **backup_args("yugabyte", pitr=True))
    assert backups.render_backup(helm_bin, **backup_args("yugabyte", pitr=True)) == first
    other = manifests.parse_all(backups.render_backup(helm_bin, **backup_args("yugabyte", backup_id="bk-2")))
    names = {d["metadata"]["name"] for d in manifests.parse_all(first)}
    assert names.isdisjoint(d["metadata"]["name"] for d in other)  # another backup: other objects


def test_backup_file_goes_to_the_pops_backups_folder() -> None:
    path = layout.backup_path(TENANT, POP, BACKUP_ID)
    assert path == f"tenants/acme/frankfurt/backups/{BACKUP_ID}.yaml"
    assert layout.parse_tenant_path(path) == layout.TenantPath("backup", TENANT, POP, BACKUP_ID)
    # inside what the PoP's Argo CD Application syncs (tenants/{tenant}/{pop}, recursively)
    assert path.startswith(layout.pop_service_path(TENANT, POP, "x").rsplit("/", 1)[0] + "/")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"engine": "mysql"}, "at '/engine': value must be one of 'yugabyte'", id="unknown-engine"),
        pytest.param({"destination": {"bucket": "b-1", "path": "/x"}}, "at '/destination': 'oneOf' failed",
                     id="bucket-and-path"),
        pytest.param({"destination": {"bucket": "b-1", "acl": "public"}}, "at '/destination': 'oneOf' failed",
                     id="unknown-destination-key"),
        pytest.param({"destination": {"path": "/var/backups"}},
                     "destination: PoP frankfurt is a Kubernetes PoP and needs object storage",
                     id="path-in-a-kubernetes-pop"),
        pytest.param({"encryption_key_id": ""}, "at '/encryption/keyId'", id="no-data-key"),
        pytest.param({"kek_id": "kek 1"}, "at '/encryption/kekId'", id="bad-kek-id"),
        pytest.param({"kek_id": None}, "at '/encryption/kekId'", id="data-key-without-its-kek"),
        pytest.param({"labels": {"dbaas.io/backup-id": "x"}}, "reserved for the platform", id="reserved-label"),
        pytest.param({"object_store": {"accessKeyId": "AKIAEXAMPLE"}},
                     "objectStore: set both accessKeyId and secretName", id="half-an-access-key"),
    ],
)
def test_backup_values_the_chart_refuses(helm_bin: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError) as caught:
        backups.render_backup(helm_bin, **{**backup_args("yugabyte"), **overrides})
    assert message in str(caught.value)
    assert caught.value.reason == "RenderFailed" and not caught.value.transient


def test_backup_chart_rejects_unknown_keys(helm_bin: str) -> None:
    values = backups.backup_values(**backup_args("vitess"))
    with pytest.raises(RenderError, match="additional properties 'schedule' not allowed"):
        helm.render(BACKUP_CHART, {**values, "schedule": "@daily"}, "backup", NAMESPACE, helm=helm_bin)


def test_render_backup_refuses_a_chart_that_renders_no_backup(helm_bin: str, tmp_path: Path, monkeypatch) -> None:
    chart = tmp_path / "broken"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {{ .Release.Namespace }}\n"
    )
    monkeypatch.setattr(helm, "BACKUP_CHART", chart)
    with pytest.raises(RenderError, match="rendered 0 DatabaseBackup objects"):
        backups.render_backup(helm_bin, **backup_args("vitess"))


# -- restores --------------------------------------------------------------------------------


def render_restore(helm_bin: str, engine: str, restore_value: dict[str, Any], **overrides: Any) -> list[dict]:
    values = service_values(engine, name="orders-copy", service_id="7c1d2e3f-0a9b-4c8d-8e7f-6a5b4c3d2e1f",
                            restore=restore_value, **overrides)
    return helm.render(SERVICE_CHART, values, "svc", NAMESPACE, helm=helm_bin)


@pytest.mark.parametrize("point", ["backup", "time"])
@pytest.mark.parametrize("engine", ENGINES)
def test_restore_renders_valid_objects_per_engine(
    helm_bin: str, crd_index: CrdIndex, engine: str, point: str
) -> None:
    value = restore(engine) if point == "backup" else restore(engine, backupId=None, targetTime=TARGET_TIME)
    docs = render_restore(helm_bin, engine, value)
    validate_all(crd_index, docs)
    kinds = by_kind(docs)
    expected = {"ServiceClaim", ENGINE_KINDS[engine]}
    if engine == "yugabyte" and point == "backup":
        expected.add("RestoreJob")
    assert set(kinds) == expected
    assert kinds["ServiceClaim"]["spec"]["restore"] == value


def test_yugabyte_restore_job_restores_the_backup_the_backup_render_made(
    helm_bin: str, crd_index: CrdIndex
) -> None:
    backup = by_kind(manifests.parse_all(backups.render_backup(helm_bin, **backup_args("yugabyte"))))["Backup"]
    kinds = by_kind(render_restore(helm_bin, "yugabyte", restore("yugabyte")))
    job = kinds["RestoreJob"]
    assert job["spec"] == {
        "actionType": "RESTORE",
        "universe": kinds["YBUniverse"]["metadata"]["name"],
        "backup": backup["metadata"]["name"],
        "keyspace": "orders_copy",  # restored into the new service's own database
    }
    assert job["metadata"]["name"] == f"{kinds['ServiceClaim']['metadata']['name']}-restore"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "2"  # after the universe


@pytest.mark.parametrize(
    ("overrides", "pop"),
    [
        pytest.param({"backupId": None, "targetTime": TARGET_TIME}, POP, id="point-in-time"),
        pytest.param({"sourceTenant": "globex"}, POP, id="other-tenant"),
        pytest.param({"sourcePop": "lagos"}, POP, id="other-pop"),
        pytest.param({"sourcePop": None}, POP, id="pop-unknown"),
        pytest.param({"sourceServiceName": None}, POP, id="source-name-unknown"),
        pytest.param({"sourcePop": "local"}, "local", id="local-pop"),
    ],
)
def test_yugabyte_restore_job_only_where_the_operator_can_run_it(
    helm_bin: str, crd_index: CrdIndex, overrides: dict[str, Any], pop: str
) -> None:
    value = restore("yugabyte", **overrides)
    docs = render_restore(helm_bin, "yugabyte", value, pop=pop)
    validate_all(crd_index, docs)
    assert set(by_kind(docs)) == {"ServiceClaim", "YBUniverse"}  # the PoP's dbaas operator restores


def test_a_service_without_restore_has_no_restore_field(helm_bin: str) -> None:
    docs = by_kind(helm.render(SERVICE_CHART, service_values("yugabyte"), "svc", NAMESPACE, helm=helm_bin))
    assert "restore" not in docs["ServiceClaim"]["spec"] and "RestoreJob" not in docs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"targetTime": TARGET_TIME}, "at '/restore': 'oneOf' failed, subschemas 0, 1 matched",
                     id="backup-and-time"),
        pytest.param({"backupId": None}, "missing property 'backupId'", id="neither"),
        pytest.param({"backupId": None, "targetTime": "2026-01-31 12:00:00"},
                     "at '/restore/targetTime': '2026-01-31 12:00:00' does not match pattern", id="time-format"),
        pytest.param({"backupId": None, "targetTime": "2026-01-31T12:00:00"},
                     "at '/restore/targetTime'", id="time-without-zone"),
        pytest.param({"backupId": None, "targetTime": "2026-02-30T12:00:00Z"},
                     'restore.targetTime: "2026-02-30T12:00:00Z" is not a valid RFC 3339 time', id="no-such-day"),
        pytest.param({"sourceEngine": "vitess"},
                     "restore.sourceEngine: a vitess backup cannot be restored into a yugabyte service",
                     id="other-engine"),
        pytest.param({"snapshot": "latest"}, "at '/restore': additional properties 'snapshot' not allowed",
                     id="unknown-key"),
        pytest.param({"sourceServiceId": None}, "missing property 'sourceServiceId'", id="no-source"),
        pytest.param({"location": {"bucket": "b-1", "path": "/x"}}, "at '/restore/location': 'oneOf' failed",
                     id="location-bucket-and-path"),
    ],
)
def test_restore_values_the_chart_refuses(helm_bin: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError) as caught:
        render_restore(helm_bin, "yugabyte", restore("yugabyte", **overrides))
    assert message in str(caught.value)
    assert caught.value.reason == "RenderFailed" and not caught.value.transient


def test_restore_values_write_an_instant_in_utc() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    lagos = timezone(timedelta(hours=1))
    value = backups.restore_values(source_tenant="acme", source_service_id="s-1", source_engine="vitess",
                                   target_time=datetime(2026, 1, 31, 13, 0, tzinfo=lagos))
    assert value["targetTime"] == "2026-01-31T12:00:00Z"
    assert backups.rfc3339(datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)) == "2026-01-31T12:00:00.250000Z"
    with pytest.raises(ValueError, match="no time zone"):
        backups.rfc3339(datetime(2026, 1, 31, 12, 0))


def test_restore_values_leave_out_what_is_not_given() -> None:
    assert backups.restore_values(
        source_tenant="acme", source_service_id="s-1", source_engine="mongodb", target_time=TARGET_TIME
    ) == {"sourceTenant": "acme", "sourceServiceId": "s-1", "sourceEngine": "mongodb", "targetTime": TARGET_TIME}


# -- our CRDs --------------------------------------------------------------------------------


def _crd_spec(name: str) -> dict[str, Any]:
    return next(iter_crd_versions(PLATFORM_CRDS / name)).openapi["properties"]["spec"]


def test_crd_restore_is_exactly_one_of_backup_or_time(crd_index: CrdIndex, helm_bin: str) -> None:
    claim = by_kind(render_restore(helm_bin, "mongodb", restore("mongodb")))["ServiceClaim"]
    both = {**claim, "spec": {**claim["spec"], "restore": {**claim["spec"]["restore"], "targetTime": TARGET_TIME}}}
    assert any("is valid under each of" in e for e in crd_index.errors(both))
    rules = [r["rule"] for r in _crd_spec("serviceclaim.yaml")["properties"]["restore"]["x-kubernetes-validations"]]
    assert "has(self.backupId) != has(self.targetTime)" in rules
    at_time = restore("mongodb", backupId=None, targetTime="yesterday")
    bad_time = {**claim, "spec": {**claim["spec"], "restore": at_time}}
    assert any("'yesterday' does not match" in e for e in crd_index.errors(bad_time))


def test_crd_restore_is_set_at_creation_only() -> None:
    rules = {r["rule"]: r["message"] for r in _crd_spec("serviceclaim.yaml")["x-kubernetes-validations"]}
    assert "!has(self.restore) || self.restore.sourceEngine == self.engine" in rules
    assert "!has(self.restore) || (has(oldSelf.restore) && self.restore == oldSelf.restore)" in rules


def test_crd_and_chart_schemas_agree_on_the_restore_shape() -> None:
    import json

    chart = json.loads((SERVICE_CHART / "values.schema.json").read_text())["properties"]["restore"]
    crd = _crd_spec("serviceclaim.yaml")["properties"]["restore"]
    assert set(chart["properties"]) == set(crd["properties"])
    assert chart["required"] == crd["required"]
    assert chart["properties"]["targetTime"]["pattern"] == crd["properties"]["targetTime"]["pattern"]


def test_databasebackup_engines_match_the_catalog_and_the_chart() -> None:
    import json

    catalog = pytest.importorskip("schemas.catalog")
    crd = _crd_spec("databasebackup.yaml")
    chart = json.loads((BACKUP_CHART / "values.schema.json").read_text())["properties"]
    assert tuple(crd["properties"]["engine"]["enum"]) == tuple(catalog.ENGINES) == tuple(chart["engine"]["enum"])
    assert tuple(chart["pop"]["enum"]) == tuple(catalog.POPS)


def test_chart_values_yaml_documents_every_engine() -> None:
    text = (BACKUP_CHART / "values.yaml").read_text()
    for engine in ENGINES:
        assert f"#   {engine}" in text, f"values.yaml says nothing of {engine}'s backup resource"
    assert yaml.safe_load(text)["engines"] == {"yugabyte": {"sse": True}}


def test_a_kubernetes_pop_backup_carries_its_operation_on_the_database_backup(helm_bin: str, crd_index: CrdIndex
                                                                              ) -> None:
    docs = by_kind(manifests.parse_all(backups.render_backup(helm_bin, **backup_args("yugabyte"),
                                                             operation_id="op-backup-1")))
    crd_index.validate(docs["DatabaseBackup"])
    assert docs["DatabaseBackup"]["metadata"]["annotations"]["dbaas.io/operation-id"] == "op-backup-1"
    assert "dbaas.io/operation-id" not in docs["Backup"]["metadata"]["annotations"]  # the claim alone carries it
    without = by_kind(manifests.parse_all(backups.render_backup(helm_bin, **backup_args("yugabyte"))))
    assert "dbaas.io/operation-id" not in without["DatabaseBackup"]["metadata"]["annotations"]
