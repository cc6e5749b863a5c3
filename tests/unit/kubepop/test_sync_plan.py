"""The GitOps sync's pure part: which Applications are this PoP's, what they ask for (namespace,
tracking label and annotation, sync waves), and what is pruned — Prune=false and Delete=false
honoured as Argo CD does."""
from __future__ import annotations

import yaml

from operators.kubepop import sync


def _app(name, pop, path, ns="tenant-acme", recurse=True):
    return yaml.safe_dump({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
                           "spec": {"destination": {"name": pop, "namespace": ns},
                                    "source": {"path": path, "directory": {"recurse": recurse}}}})


CLAIM = """---
apiVersion: dbaas.io/v1alpha1
kind: ServiceClaim
metadata:
  name: orders-1
  annotations: {argocd.argoproj.io/sync-wave: "0"}
---
apiVersion: scylla.scylladb.com/v1
kind: ScyllaCluster
metadata:
  name: orders-1
  annotations: {argocd.argoproj.io/sync-wave: "1"}
"""

FILES = {
    "argocd/applications/acme-frankfurt.yaml": _app("acme-frankfurt", "frankfurt", "tenants/acme/frankfurt"),
    "argocd/applications/acme-lagos.yaml": _app("acme-lagos", "lagos", "tenants/acme/lagos"),
    "tenants/acme/frankfurt/orders.yaml": CLAIM,
    "tenants/acme/frankfurt/backups/b1.yaml": "apiVersion: dbaas.io/v1alpha1\nkind: DatabaseBackup\n"
                                               "metadata: {name: b1}\n",
    "tenants/acme/lagos/other.yaml": CLAIM.replace("orders-1", "other-1"),
}


def _namespaced(api_version, kind):
    return kind != "Namespace"


def test_only_this_pops_applications_are_synced_with_tracking_and_namespace():
    want = sync.desired(FILES, "frankfurt", _namespaced)
    assert list(want.apps) == ["acme-frankfurt"]
    objs = want.objects["acme-frankfurt"]
    assert sorted(objs) == ["dbaas.io/DatabaseBackup/tenant-acme/b1", "dbaas.io/ServiceClaim/tenant-acme/orders-1",
                            "scylla.scylladb.com/ScyllaCluster/tenant-acme/orders-1"]
    claim = objs["dbaas.io/ServiceClaim/tenant-acme/orders-1"]
    assert claim["metadata"]["labels"][sync.APP_LABEL] == "acme-frankfurt"
    assert claim["metadata"]["annotations"][sync.TRACKING_ANNOTATION] == \
        "acme-frankfurt:dbaas.io/ServiceClaim:tenant-acme/orders-1"
    ordered = sorted(objs.values(), key=lambda o: (sync.wave(o), sync.object_key(o)))
    assert [o["kind"] for o in ordered] == ["DatabaseBackup", "ServiceClaim", "ScyllaCluster"]


def test_a_directory_without_recurse_leaves_subfolders_out():
    files = dict(FILES, **{"argocd/applications/acme-frankfurt.yaml":
                           _app("acme-frankfurt", "frankfurt", "tenants/acme/frankfurt", recurse=False)})
    assert "dbaas.io/DatabaseBackup/tenant-acme/b1" not in sync.desired(files, "frankfurt", _namespaced).objects[
        "acme-frankfurt"]


def test_unreadable_manifests_are_reported_not_applied():
    files = dict(FILES, **{"tenants/acme/frankfurt/broken.yaml": "a: [b"})
    want = sync.desired(files, "frankfurt", _namespaced)
    assert any("broken.yaml" in p for p in want.problems)
    assert len(want.objects["acme-frankfurt"]) == 3


def _live(app, kind, name, options=None):
    meta = {"name": name, "namespace": "tenant-acme", "labels": {sync.APP_LABEL: app}}
    if options:
        meta["annotations"] = {sync.OPTIONS_ANNOTATION: options}
    return {"apiVersion": "dbaas.io/v1alpha1", "kind": kind, "metadata": meta}


def test_prune_removes_what_git_no_longer_holds_honouring_prune_and_delete_false():
    wanted = {"acme-frankfurt": {"dbaas.io/ServiceClaim/tenant-acme/kept": {}}}
    live = [_live("acme-frankfurt", "ServiceClaim", "kept"),
            _live("acme-frankfurt", "ServiceClaim", "removed"),
            _live("acme-frankfurt", "ServiceClaim", "protected", "Prune=false,Delete=false"),
            _live("gone-app", "ServiceClaim", "orphan"),
            _live("gone-app", "ServiceClaim", "kept-on-app-delete", "Delete=false"),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "not-ours", "namespace": "x"}}]
    assert [o["metadata"]["name"] for o in sync.to_prune(live, wanted)] == ["removed", "orphan"]
