"""The PoP operator's Helm chart, rendered with the real helm: a Deployment running the operator
under its own ServiceAccount, with a persistent state volume, secrets only by reference, and a
ClusterRole that grants what the operator does and nothing more."""
from __future__ import annotations

import pytest

from gitops import helm

VALUES = {"pop": "frankfurt", "kafka": {"bootstrap": "kafka.example.net:9093"},
          "registryUrl": "https://registry.example.net/apis/ccompat/v7"}


@pytest.fixture(scope="module")
def docs(helm_bin):
    return {d["kind"]: d for d in helm.render(helm.POP_OPERATOR_CHART, VALUES, "pop-operator", "dbaas-system",
                                               helm=helm_bin)}


def test_renders_a_deployment_under_its_service_account_with_persistent_state(docs):
    assert set(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "PersistentVolumeClaim", "Deployment"}
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"] == "dbaas-pop-operator"
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DBAAS_POP"] == "frankfurt" and env["DBAAS_KAFKA_BOOTSTRAP"] == "kafka.example.net:9093"
    assert container["envFrom"] == [{"secretRef": {"name": "dbaas-pop-operator"}}]  # keys by reference only
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    binding = docs["ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dbaas-pop-operator",
                                    "namespace": "dbaas-system"}]


def test_the_cluster_role_is_least_privilege(docs):
    rules = {(g, r): set(rule["verbs"]) for rule in docs["ClusterRole"]["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules[("dbaas.io", "serviceclaims")] == {"get", "list", "watch", "patch"}
    assert rules[("dbaas.io", "serviceclaims/status")] == {"get", "patch"}
    engine_kinds = [("scylla.scylladb.com", "scyllaclusters"), ("operator.yugabyte.io", "ybuniverses"),
                    ("planetscale.com", "vitessclusters"), ("dragonflydb.io", "dragonflies"),
                    ("asdb.aerospike.com", "aerospikeclusters"), ("mongodbcommunity.mongodb.com", "mongodbcommunity")]
    for kind in engine_kinds:
        assert rules[kind] == {"get", "list", "watch"}  # engine resources are read, never written
    assert rules[("", "secrets")] == {"get", "create", "delete"}  # no list/watch of every secret
    every = {v for verbs in rules.values() for v in verbs}
    assert "*" not in every and not any("*" in g or "*" in r for g, r in rules)
    assert "update" not in every and "escalate" not in every and "bind" not in every


def test_refuses_to_render_without_its_pop_or_kafka(helm_bin):
    with pytest.raises(helm.RenderError, match="pop is required"):
        helm.render(helm.POP_OPERATOR_CHART, {**VALUES, "pop": ""}, "pop-operator", "dbaas-system", helm=helm_bin)
    with pytest.raises(helm.RenderError, match="kafka.bootstrap is required"):
        helm.render(helm.POP_OPERATOR_CHART, {**VALUES, "kafka": {"bootstrap": ""}}, "pop-operator",
                    "dbaas-system", helm=helm_bin)
