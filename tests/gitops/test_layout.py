"""Unit tests of gitops.layout: path helpers, validation and the bootstrap skeleton.

Pure functions, so plain tables; the Argo CD Applications are also checked against the real
upstream Application CRD (../shared/crds/argocd) with the crdschema test helper.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest
import yaml

from gitops import layout
from gitops.errors import GitOpsError, InvalidPath

REPO_URL = "https://git.example.org/dbaas/gitops.git"
# As crdschema.upstream_crds_dir(): $DBAAS_UPSTREAM_CRDS, else ../shared/crds next to the repository.
CRDS = Path(os.environ.get("DBAAS_UPSTREAM_CRDS", Path(__file__).resolve().parents[3] / "shared" / "crds"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (layout.service_path("acme", "orders"), "tenants/acme/orders.yaml"),
        (layout.pop_service_path("acme", "lagos", "orders"), "tenants/acme/lagos/orders.yaml"),
        (layout.backup_path("acme", "lagos", "orders-20250101"),
         "tenants/acme/lagos/backups/orders-20250101.yaml"),
        (layout.backup_path("acme", "local", "5b1f0c2e-4a7d-5e9b-8c3a-1d2e3f4a5b6c"),
         "tenants/acme/local/backups/5b1f0c2e-4a7d-5e9b-8c3a-1d2e3f4a5b6c.yaml"),
        (layout.tenant_dir("acme"), "tenants/acme"),
        (layout.backups_dir("acme", "frankfurt"), "tenants/acme/frankfurt/backups"),
        (layout.overlay_dir("lagos"), "overlays/lagos"),
        (layout.overlay_kustomization_path("local"), "overlays/local/kustomization.yaml"),
        (layout.base_dir("crds"), "base/crds"),
        (layout.base_kustomization_path("kafka"), "base/kafka/kustomization.yaml"),
        (layout.application_path("pop-frankfurt"), "argocd/applications/pop-frankfurt.yaml"),
        (layout.service_path("3f2b6c1e-8d4a-4b1e-9c3a-0e5f7a9b2c4d", "0a1b"),
         "tenants/3f2b6c1e-8d4a-4b1e-9c3a-0e5f7a9b2c4d/0a1b.yaml"),
    ],
)
def test_paths_follow_the_platform_layout(path, expected):
    assert path == expected
    assert layout.validate_repo_path(path) == path


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("..", "parent directory"),
        ("a/b", "slash would add a folder"),
        ("Acme", "uppercase"),
        ("acme_prod", "underscore"),
        ("acme.prod", "dot"),
        ("-acme", "leading dash"),
        ("acme-", "trailing dash"),
        ("a" * 64, "longer than 63"),
        ("acme prod", "space"),
        (None, "not a string"),
    ],
)
def test_invalid_names_are_rejected_with_a_typed_error(name, reason):
    for helper in (lambda n: layout.service_path("acme", n), lambda n: layout.service_path(n, "db"),
                   lambda n: layout.backup_path("acme", "lagos", n), lambda n: layout.backup_path(n, "lagos", "b1"),
                   layout.application_path):
        with pytest.raises(InvalidPath) as caught:
            helper(name)
        assert isinstance(caught.value, GitOpsError) and isinstance(caught.value, ValueError), reason
        assert not caught.value.transient


def test_errors_say_how_to_fix_the_input():
    with pytest.raises(InvalidPath, match="lowercase letters, digits and '-'"):
        layout.service_path("Acme", "db")
    with pytest.raises(InvalidPath, match="choose one of: lagos, johannesburg, frankfurt"):
        layout.overlay_dir("paris")
    with pytest.raises(InvalidPath, match="choose one of: crds, operators"):
        layout.base_dir("secrets")


def test_backup_paths_need_a_known_pop():
    with pytest.raises(InvalidPath, match="choose one of: lagos"):
        layout.backup_path("acme", "paris", "b1")
    with pytest.raises(InvalidPath, match="backup id 'B_1' is not a DNS-1123 label"):
        layout.backup_path("acme", "lagos", "B_1")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tenants/acme/lagos/orders.yaml", layout.TenantPath("service", "acme", "lagos", "orders")),
        ("tenants/acme/lagos/backups/bk-1.yaml", layout.TenantPath("backup", "acme", "lagos", "bk-1")),
        ("tenants/acme/local/backups/5b1f0c2e-4a7d-5e9b-8c3a-1d2e3f4a5b6c.yaml",
         layout.TenantPath("backup", "acme", "local", "5b1f0c2e-4a7d-5e9b-8c3a-1d2e3f4a5b6c")),
        # a service may be called "backups": its file sits beside the backups folder
        ("tenants/acme/lagos/backups.yaml", layout.TenantPath("service", "acme", "lagos", "backups")),
        ("tenants/README.md", None),
        ("tenants/acme/orders.yaml", None),  # no PoP folder
        ("tenants/acme/paris/orders.yaml", None),  # unknown PoP
        ("tenants/acme/lagos/snapshots/bk-1.yaml", None),  # not the backups folder
        ("tenants/acme/lagos/backups/x/bk-1.yaml", None),  # too deep
        ("tenants/acme/lagos/backups/bk-1.yml", None),
        ("tenants/acme/lagos/Orders.yaml", None),  # not a DNS-1123 label
        ("tenants/Acme/lagos/orders.yaml", None),
        ("overlays/lagos/orders.yaml", None),
        ("", None),
    ],
)
def test_parse_tenant_path_tells_backups_from_services(path, expected):
    assert layout.parse_tenant_path(path) == expected


@pytest.mark.parametrize("pop", layout.POPS)
def test_parse_tenant_path_inverts_the_path_helpers(pop):
    service = layout.parse_tenant_path(layout.pop_service_path("acme", pop, "orders-db"))
    backup = layout.parse_tenant_path(layout.backup_path("acme", pop, "bk-20260101"))
    assert (service.kind, service.tenant, service.pop, service.name) == ("service", "acme", pop, "orders-db")
    assert (backup.kind, backup.tenant, backup.pop, backup.name) == ("backup", "acme", pop, "bk-20260101")


@pytest.mark.parametrize("name", ["a", "acme", "acme-prod-2", "0", "a" * 63])
def test_valid_names_pass(name):
    assert layout.validate_name(name, "tenant") == name


@pytest.mark.parametrize(
    "path",
    ["", "/abs.yaml", "../x", "a/../b", "a//b", "a/", "./a", ".git/config", "a/.Git/x", "a\\b",
     "a\x00b", "a\nb", "x" * 1025],
)
def test_unsafe_repo_paths_are_rejected(path):
    with pytest.raises(InvalidPath):
        layout.validate_repo_path(path)


@pytest.mark.parametrize("pop", layout.POPS)
def test_every_pop_has_an_overlay(pop):
    assert layout.overlay_dir(pop) == f"overlays/{pop}"


def test_bootstrap_has_every_folder_of_the_layout():
    files = layout.bootstrap_files(REPO_URL)
    for component in ("crds", "operators", "observability", "kafka", "infrastructure"):
        assert f"base/{component}/kustomization.yaml" in files
    for pop in ("lagos", "johannesburg", "frankfurt", "ashburn", "singapore", "local"):
        assert f"overlays/{pop}/kustomization.yaml" in files
    assert "tenants/README.md" in files
    assert "argocd/app-of-apps.yaml" in files
    assert any(p.startswith("argocd/applications/") for p in files)
    assert all(layout.validate_repo_path(p) == p for p in files)


def test_bootstrap_is_deterministic():
    assert layout.bootstrap_files(REPO_URL) == layout.bootstrap_files(REPO_URL)


def test_app_of_apps_points_at_the_applications_folder():
    app = yaml.safe_load(layout.bootstrap_files(REPO_URL, revision="release")["argocd/app-of-apps.yaml"])
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    assert app["spec"]["source"] == {
        "repoURL": REPO_URL, "targetRevision": "release", "path": "argocd/applications",
        "directory": {"recurse": False},
    }
    assert app["spec"]["destination"] == {"server": "https://kubernetes.default.svc", "namespace": "argocd"}


def test_pop_applications_sync_their_overlay_into_their_cluster():
    files = layout.bootstrap_files(REPO_URL)
    for pop in layout.KUBERNETES_POPS:
        app = yaml.safe_load(files[f"argocd/applications/pop-{pop}.yaml"])
        assert app["spec"]["source"]["path"] == f"overlays/{pop}"
        assert app["spec"]["destination"]["name"] == pop
    assert "argocd/applications/pop-local.yaml" not in files  # the local agent syncs overlays/local


def test_kustomizations_reference_folders_that_exist():
    files = layout.bootstrap_files(REPO_URL)
    for path, text in files.items():
        if not path.endswith("kustomization.yaml"):
            continue
        doc = yaml.safe_load(text)
        assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and doc["kind"] == "Kustomization"
        for resource in doc["resources"]:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), resource))
            assert f"{target}/kustomization.yaml" in files, f"{path} -> {resource}"


@pytest.mark.parametrize("url", ["", "   ", "https://x y", None])
def test_bootstrap_rejects_a_bad_repo_url(url):
    with pytest.raises(InvalidPath):
        layout.bootstrap_files(url)


def test_applications_validate_against_the_argo_cd_crd():
    crd = CRDS / "argocd" / "application-crd.yaml"
    if not crd.exists():
        pytest.skip(f"Argo CD CRD copy not found at {crd}")
    try:
        from crdschema import CrdIndex
    except ImportError:
        pytest.skip("tests/gitops/crdschema.py helper not available")
    index = CrdIndex.from_files([crd])
    applications = [
        yaml.safe_load(text) for path, text in layout.bootstrap_files(REPO_URL).items()
        if path.startswith("argocd/")
    ]
    assert len(applications) == 1 + len(layout.KUBERNETES_POPS)
    for app in applications:
        assert index.errors(app) == [], app["metadata"]["name"]
