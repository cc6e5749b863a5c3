"""What the saga commits for a service in a Kubernetes PoP besides its manifests: the (tenant, PoP)
Argo CD Application — validated against the upstream Argo CD CRD — and, for a deletion, the
record naming the deleting operation; the ServiceClaim carries its operation, for the PoP operator."""
from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from events import OperationStarted
from events.records import Resources
from processors.saga import HelmRenderer

STARTED = OperationStarted("op-1", "svc-1", "apply", "orders", "scylla", "2026.2.4", "frankfurt", "small",
                           Resources(cpu=1, memory_gb=2, storage_gb=10, replicas=3))
REPO = "https://git.example.net/dbaas/gitops.git"


def test_a_kube_pop_commit_adds_its_application_and_the_claim_names_its_operation(crd_index):
    path, content, also = HelmRenderer(repo_url=REPO).render("acme", STARTED)
    assert path == "tenants/acme/frankfurt/orders.yaml"
    claim = next(d for d in yaml.safe_load_all(content) if d and d["kind"] == "ServiceClaim")
    assert claim["metadata"]["annotations"]["dbaas.io/operation-id"] == "op-1"
    app = yaml.safe_load(also["argocd/applications/acme-frankfurt.yaml"])
    crd_index.validate(app)
    assert app["spec"]["source"]["path"] == "tenants/acme/frankfurt" and app["spec"]["source"]["repoURL"] == REPO
    assert app["spec"]["destination"] == {"name": "frankfurt", "namespace": "tenant-acme"}
    assert also["tenants/acme/frankfurt/deletions/orders.yaml"] is None  # a creation clears an old record


def test_a_deletion_writes_the_record_the_operator_reports_it_with():
    path, content, also = HelmRenderer(repo_url=REPO).render("acme", replace(STARTED, action="delete",
                                                                            operation_id="op-9"))
    assert content is None
    record = yaml.safe_load(also["tenants/acme/frankfurt/deletions/orders.yaml"])
    assert record["kind"] == "ConfigMap" and record["metadata"]["namespace"] == "tenant-acme"
    assert record["metadata"]["labels"]["dbaas.io/deletion-record"] == "true"
    assert record["data"] == {"serviceId": "svc-1", "operationId": "op-9"}


@pytest.mark.parametrize("pop", ["local"])
def test_the_local_pop_gets_its_manifests_alone(pop):
    rendered = HelmRenderer(repo_url=REPO).render("acme", replace(STARTED, pop=pop, engine="dragonfly"))
    assert len(rendered) == 2
    assert "dbaas.io/operation-id" not in rendered[1]


def test_a_kube_pop_backup_names_its_operation_on_the_database_backup_and_a_local_one_does_not():
    from events import BackupRequested

    requested = BackupRequested("bk-1", "op-b1", "svc-1", "orders", "yugabyte", "frankfurt")
    path, content = HelmRenderer(repo_url=REPO).render_backup("acme", requested)
    assert path == "tenants/acme/frankfurt/backups/bk-1.yaml"
    claim = next(d for d in yaml.safe_load_all(content) if d and d["kind"] == "DatabaseBackup")
    assert claim["metadata"]["annotations"]["dbaas.io/operation-id"] == "op-b1"
    _, local = HelmRenderer(repo_url=REPO).render_backup("acme", replace(requested, pop="local"))
    assert "dbaas.io/operation-id" not in local


def test_a_kube_pop_backup_deletion_writes_the_record_the_operator_reports_it_with():
    from events import BackupDeletionRequested

    deleting = BackupDeletionRequested("bk-1", "op-d1", "svc-1", "frankfurt", "requested")
    path, content, also = HelmRenderer(repo_url=REPO).render_backup("acme", deleting)
    assert path == "tenants/acme/frankfurt/backups/bk-1.yaml" and content is None
    record = yaml.safe_load(also["tenants/acme/frankfurt/deletions/backups/bk-1.yaml"])
    assert record["kind"] == "ConfigMap" and record["metadata"]["namespace"] == "tenant-acme"
    assert record["metadata"]["labels"]["dbaas.io/deletion-record"] == "true"
    assert record["metadata"]["labels"]["dbaas.io/backup-id"] == "bk-1"
    assert "dbaas.io/service-id" not in record["metadata"]["labels"]  # never mistaken for a service's record
    assert record["data"] == {"backupId": "bk-1", "operationId": "op-d1"}
    assert HelmRenderer(repo_url=REPO).render_backup("acme", replace(deleting, pop="local")) == (
        "tenants/acme/local/backups/bk-1.yaml", None)
