"""Kubernetes PoPs end to end, on real API servers: the test platform runs PoPs frankfurt and lagos
locally (`dbaas stack up --kube-pop …`: kube-apiserver, etcd, the GitOps sync, the PoP operator)
for this module only, and a fixture plays each engine operator by writing the engine resource's
status the way that operator does.

Frankfurt's API server serves the pinned version to authenticated callers only, has every CRD the
platform renders for established, validates engine resources against their upstream schema, and
holds the PoP operator's identity to its chart's RBAC.

A service created in frankfurt becomes a ServiceClaim and a ScyllaCluster in frankfurt's API
server, is Ready in the read model once the ScyllaCluster is available (endpoint and credentials),
scales (the spec changes in the API server), is deleted (finalizer, objects gone, Deleted); an
engine failure fails and reverts the operation and the sync prunes what was applied; with
frankfurt's API server stopped its operations time out while lagos and local ones finish; killing
the operator and the sync mid-operation neither duplicates a report nor leaves a claim stuck.

A backup of a yugabyte service in frankfurt becomes a DatabaseBackup and YugabyteDB's Backup in
frankfurt's API server and is Completed (or Failed) in the read model as the Backup's status says;
a scylla backup fails at once as unsupported; a deleted backup is pruned, finalized and Deleted.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from deploy.stack.kube import crd_documents
from tests.conftest import DBAAS, PLATFORM_ENV, REPO, wait_for
from tests.integration.process_support import kill

POPS = ("frankfurt", "lagos")
FRANKFURT_TIMEOUT = 45  # seconds the saga waits for frankfurt's report in this module (isolation test)
SCYLLA = ("scylla.scylladb.com", "v1", "scyllaclusters")
CLAIMS = ("dbaas.io", "v1alpha1", "serviceclaims")
UNIVERSES = ("operator.yugabyte.io", "v1alpha1", "ybuniverses")
YB_BACKUPS = ("operator.yugabyte.io", "v1alpha1", "backups")
DATABASE_BACKUPS = ("dbaas.io", "v1alpha1", "databasebackups")


def _up(stack, *args: str) -> dict:
    import subprocess

    env = {**os.environ, **PLATFORM_ENV}
    if args and args[0] != "--no-kube-pops":
        env["DBAAS_SAGA_STEP_TIMEOUTS"] = (f"{PLATFORM_ENV['DBAAS_SAGA_STEP_TIMEOUTS']},"
                                           f"pop-report@frankfurt={FRANKFURT_TIMEOUT}")
    proc = subprocess.run([*DBAAS, "stack", "up", "--home", str(stack.home), *args, "--json", "--show-secrets"],
                          cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=3600, env=env)
    assert proc.returncode == 0, f"`stack up {' '.join(args)}` failed; see {stack.home}/logs"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def kube(stack):
    """PoPs frankfurt and lagos running locally for this module: name -> its API (kubernetes client)."""
    from kubernetes import client, config

    _stop(stack, "saga")  # started anew with frankfurt's own report timeout (a process reads it at start)
    status = _up(stack, *(a for pop in POPS for a in ("--kube-pop", pop)))
    apis = {}
    for pop in POPS:
        assert status["kube_pops"][pop]["healthy"], status["kube_pops"][pop]
        apis[pop] = config.new_client_from_config(config_file=status["kube_pops"][pop]["kubeconfig"])
    yield {pop: client.CustomObjectsApi(api) for pop, api in apis.items()}
    for api in apis.values():
        api.close()
    _stop(stack, "saga")
    _up(stack, "--no-kube-pops")  # the rest of the suite runs without them, as CI's platform does


@pytest.fixture
def pop(stack, kube):
    """Frankfurt's API server as the launcher knows it: its files, tokens and TLS."""
    from deploy.stack import config
    from deploy.stack.kube import KubePop
    from deploy.stack.launcher import Launcher

    return KubePop(Launcher(config.resolve(stack.home), say=lambda _m: None).ctx, "frankfurt")


def test_it_serves_the_pinned_version_to_the_administrator_only(pop):
    with pop.client() as admin:
        assert admin.get("/version").json()["gitVersion"] == "v1.35.4"
        assert admin.get("/readyz").status_code == 200
    anonymous = httpx.get(f"{pop.server}/api/v1/namespaces", verify=pop.tls(), timeout=10)
    assert anonymous.status_code == 401
    wrong = httpx.get(f"{pop.server}/api/v1/namespaces", verify=pop.tls(), timeout=10,
                      headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    assert pop.kubeconfig().stat().st_mode & 0o077 == 0  # the kubeconfig is its owner's only


def test_our_crds_and_the_six_engine_operators_are_established(pop):
    names = {d["metadata"]["name"] for d in crd_documents()}
    assert {"serviceclaims.dbaas.io", "databasebackups.dbaas.io", "scyllaclusters.scylla.scylladb.com",
            "ybuniverses.operator.yugabyte.io", "vitessclusters.planetscale.com", "dragonflies.dragonflydb.io",
            "aerospikeclusters.asdb.aerospike.com", "mongodbcommunity.mongodbcommunity.mongodb.com"} <= names
    with pop.client() as admin:
        items = admin.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions").json()["items"]
    established = {i["metadata"]["name"] for i in items
                   if any(c["type"] == "Established" and c["status"] == "True" for c in i["status"]["conditions"])}
    assert names <= established


def test_the_api_server_validates_engine_resources_against_the_upstream_schema(pop):
    bad = {"apiVersion": "dragonflydb.io/v1alpha1", "kind": "Dragonfly", "metadata": {"name": "x"},
           "spec": {"replicas": "three"}}
    with pop.client() as admin:
        admin.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t1"}})
        r = admin.post("/apis/dragonflydb.io/v1alpha1/namespaces/t1/dragonflies", json=bad)
    assert r.status_code == 422 and "spec.replicas" in r.text


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", "/apis/dbaas.io/v1alpha1/serviceclaims", True),
    ("GET", "/apis/scylla.scylladb.com/v1/scyllaclusters", True),
    ("POST", "/apis/scylla.scylladb.com/v1/namespaces/t1/scyllaclusters", False),  # engine resources: read only
    ("GET", "/api/v1/secrets", False),  # no listing of every secret
    ("GET", "/api/v1/namespaces/t1/configmaps", True),
    ("GET", "/api/v1/namespaces/t1/pods", False),
    ("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/serviceclaims.dbaas.io", False),
])
def test_the_operator_identity_is_held_to_its_charts_rbac(pop, method, path, allowed):
    with pop.client("operator") as operator:
        r = operator.request(method, path, json={"apiVersion": "scylla.scylladb.com/v1", "kind": "ScyllaCluster",
                                                 "metadata": {"name": "x"}} if method == "POST" else None)
    assert (r.status_code != 403) is allowed, (r.status_code, r.text[:200])


def _claims(api, tenant: str) -> list[dict]:
    return api.list_namespaced_custom_object(*CLAIMS[:2], f"tenant-{tenant}", CLAIMS[2])["items"]


def _engine(api, tenant: str, plural=SCYLLA) -> list[dict]:
    return api.list_namespaced_custom_object(plural[0], plural[1], f"tenant-{tenant}", plural[2])["items"]


def play_scylla(api, obj: dict, *, degraded: bool = False) -> None:
    """What scylla-operator writes once it rolled the cluster out (or found it degraded): the
    observed generation, member counts, and conditions Available / Progressing / Degraded."""
    m = obj["metadata"]
    members = obj["spec"]["datacenter"]["racks"][0]["members"]

    def cond(kind: str, value: bool) -> dict:
        return {"type": kind, "status": str(value), "reason": "AsExpected" if not degraded else "MembersDown",
                "message": "" if not degraded else "2 of 3 members are down",
                "observedGeneration": m["generation"], "lastTransitionTime": "2026-01-01T00:00:00Z"}

    status = {"observedGeneration": m["generation"], "members": members,
              "readyMembers": 1 if degraded else members, "availableMembers": 1 if degraded else members,
              "conditions": [cond("Available", not degraded), cond("Progressing", False), cond("Degraded", degraded)]}
    api.patch_namespaced_custom_object_status(*SCYLLA[:2], m["namespace"], SCYLLA[2], m["name"], {"status": status})


def _org(stack) -> str:
    org = f"kube-{uuid.uuid4().hex[:8]}"
    assert stack.dbaas("org", "create", org).returncode == 0
    return org


def _submit(stack, *args: str) -> str:
    out = stack.dbaas(*args, "--no-wait", "--json", check=True).stdout
    return json.loads(out)["operation_id"]


def _wait_op(stack, op: str, timeout: float = 120) -> dict:
    proc = stack.dbaas("operation", "wait", op, "--timeout", str(int(timeout)), "--json")
    return json.loads(proc.stdout) if proc.stdout.strip() else {"state": None, "stderr": proc.stderr}


def _service(stack, org: str, name: str) -> dict:
    return json.loads(stack.dbaas("service", "get", name, "--org", org, "--json", check=True).stdout)


def _reports(stack, operation_id: str) -> Counter:
    """Reports on dbaas.pop.status about `operation_id`, counted by (report id, phase)."""
    return _reports_of(stack, {operation_id})[operation_id]


def _reports_of(stack, operation_ids: set[str]) -> dict[str, Counter]:
    """Reports on dbaas.pop.status about each of `operation_ids` (one read of the topic)."""
    from schemas.registry import POP_STATUS_SUBJECT, Registry, Serde

    serde = Serde(Registry(stack.registry), POP_STATUS_SUBJECT)
    consumer = Consumer(stack.kafka.client(**{"group.id": f"t-{uuid.uuid4()}",
                         "enable.auto.commit": False}))
    parts = consumer.list_topics("dbaas.pop.status", timeout=10).topics["dbaas.pop.status"].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition("dbaas.pop.status", p), timeout=10)[1] for p in parts}
    consumer.assign([TopicPartition("dbaas.pop.status", p, 0) for p in parts])
    seen: dict[str, Counter] = {op: Counter() for op in operation_ids}
    done: set[int] = {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + 60
    while len(done) < len(parts) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        if msg.offset() + 1 >= ends[msg.partition()]:
            done.add(msg.partition())
        record = serde.decode(msg.value())
        if record["operation_id"] in seen:
            seen[record["operation_id"]][(record["report_id"], record["phase"])] += 1
    consumer.close()
    return seen


def test_a_scylla_service_in_frankfurt_is_created_scaled_and_deleted_through_its_api_server(stack, kube):
    api, org = kube["frankfurt"], _org(stack)
    started = time.monotonic()
    op = _submit(stack, "service", "create", "orders", "--org", org, "--engine", "scylla", "--pop", "frankfurt")

    clusters = wait_for(lambda: _engine(api, org), timeout=60, what="the ScyllaCluster in frankfurt's API server")
    claim = wait_for(lambda: _claims(api, org), timeout=30, what="the ServiceClaim")[0]
    assert claim["spec"]["engine"] == "scylla" and claim["metadata"]["annotations"]["dbaas.io/operation-id"] == op
    assert "dbaas.io/pop-operator" in wait_for(
        lambda: _claims(api, org)[0]["metadata"].get("finalizers"), what="the operator's finalizer")
    assert _service(stack, org, "orders")["status"] == "Provisioning"  # honestly waiting on the PoP

    play_scylla(api, clusters[0])
    result = _wait_op(stack, op)
    assert result["state"] == "Succeeded", result
    ready_after = time.monotonic() - started
    assert _service(stack, org, "orders")["status"] == "Ready"
    endpoint = f"{clusters[0]['metadata']['name']}-client.tenant-{org}.svc:9042"
    assert [s["ref"] for s in result["steps"] if s["name"] == "pop-report"] == [endpoint]
    creds = json.loads(stack.dbaas("service", "credentials", "orders", "--org", org, "--json", check=True).stdout)
    assert creds["username"] == "cassandra" and creds["password"] and f"{creds['host']}:{creds['port']}" == endpoint
    claim = _claims(api, org)[0]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in claim["status"]["conditions"]}
    assert conditions == {"Synced": ("True", "EngineResourceFound"), "Ready": ("True", "Available")}
    print(f"create -> Ready with the engine fixture: {ready_after:.1f}s")

    op = _submit(stack, "service", "scale", "orders", "--org", org, "--replicas", "5")
    scaled = wait_for(lambda: [c for c in _engine(api, org)
                               if c["spec"]["datacenter"]["racks"][0]["members"] == 5],
                      timeout=60, what="the ScyllaCluster's spec to have 5 members")
    assert _claims(api, org)[0]["spec"]["replicas"] == 5
    play_scylla(api, scaled[0])
    assert _wait_op(stack, op)["state"] == "Succeeded"
    again = json.loads(stack.dbaas("service", "credentials", "orders", "--org", org, "--json", check=True).stdout)
    assert again["password"] == creds["password"]  # the credentials Secret outlives a scale

    op = _submit(stack, "service", "delete", "orders", "--org", org)
    assert _wait_op(stack, op)["state"] == "Succeeded"
    gone = stack.dbaas("service", "get", "orders", "--org", org, "--json")
    assert gone.returncode != 0 or json.loads(gone.stdout)["status"] == "Deleted"
    assert not _claims(api, org) and not _engine(api, org)
    assert sum(n for (_, phase), n in _reports(stack, op).items() if phase == "Deleted") == 1


def test_an_engine_failure_fails_the_operation_and_the_sync_prunes_the_reverted_claim(stack, kube):
    api, org = kube["frankfurt"], _org(stack)
    op = _submit(stack, "service", "create", "events", "--org", org, "--engine", "scylla", "--pop", "frankfurt")
    cluster = wait_for(lambda: _engine(api, org), timeout=60, what="the ScyllaCluster")[0]
    play_scylla(api, cluster, degraded=True)
    result = _wait_op(stack, op)
    assert result["state"] == "Failed" and result["reason_code"] == "pop_failed", result
    assert "Degraded" in result["message"]
    wait_for(lambda: _service(stack, org, "events")["status"] == "Failed" and not _claims(api, org)
             and not _engine(api, org), timeout=60, what="the reverted claim to be pruned from the API server")
    phases = Counter(phase for (_, phase), n in _reports(stack, op).items() for _ in range(n))
    assert phases == Counter({"Failed": 1})


def play_yugabyte(api, obj: dict) -> None:
    """What the YugabyteDB operator writes once the universe is up: its state and SQL endpoints."""
    m = obj["metadata"]
    api.patch_namespaced_custom_object_status(*UNIVERSES[:2], m["namespace"], UNIVERSES[2], m["name"], {"status": {
        "universeState": "Ready", "sqlEndpoints": [f"yb-tserver-service.{m['namespace']}.svc:5433"]}})


def play_yugabyte_backup(api, obj: dict, state: str) -> None:
    """What YugabyteDB Anywhere's operator writes on a Backup as its task runs: "Backup State: <state>"
    and the backup's UUID in YBA."""
    m = obj["metadata"]
    api.patch_namespaced_custom_object_status(*YB_BACKUPS[:2], m["namespace"], YB_BACKUPS[2], m["name"], {"status": {
        "message": f"Backup State: {state}", "resourceUUID": str(uuid.uuid4()), "taskUUID": str(uuid.uuid4())}})


def _backup_objects(api, org: str, backup_id: str) -> tuple[dict, dict] | None:
    """The DatabaseBackup of `backup_id` and the engine's Backup of the same name, once both exist."""
    claims = [b for b in _engine(api, org, DATABASE_BACKUPS) if b["spec"]["backupId"] == backup_id]
    if not claims:
        return None
    engine = [b for b in _engine(api, org, YB_BACKUPS) if b["metadata"]["name"] == claims[0]["metadata"]["name"]]
    return (claims[0], engine[0]) if engine else None


def _backup(stack, org: str, name: str) -> dict:
    out = stack.dbaas("backup", "create", name, "--org", org, "--json", check=True).stdout
    return json.loads(out)


def test_backups_in_frankfurt_are_reported_like_the_local_pops(stack, kube):
    """A yugabyte backup completes or fails as YBA's Backup says; a scylla backup fails at once; a
    completed backup deleted is pruned from the API server and reported Deleted once."""
    api, org = kube["frankfurt"], _org(stack)
    ledger = _submit(stack, "service", "create", "ledger", "--org", org, "--engine", "yugabyte", "--pop", "frankfurt")
    events = _submit(stack, "service", "create", "events", "--org", org, "--engine", "scylla", "--pop", "frankfurt")
    play_yugabyte(api, wait_for(lambda: _engine(api, org, UNIVERSES), timeout=60, what="the YBUniverse")[0])
    play_scylla(api, wait_for(lambda: _engine(api, org), timeout=60, what="the ScyllaCluster")[0])
    assert _wait_op(stack, ledger)["state"] == "Succeeded" and _wait_op(stack, events)["state"] == "Succeeded"

    started = time.monotonic()
    good, unsupported = _backup(stack, org, "ledger"), _backup(stack, org, "events")
    claim, engine = wait_for(lambda: _backup_objects(api, org, good["backup_id"]), timeout=60,
                             what="the DatabaseBackup and YugabyteDB's Backup in frankfurt's API server")
    assert claim["metadata"]["annotations"]["dbaas.io/operation-id"] == good["operation_id"]
    assert engine["spec"]["universe"] == _engine(api, org, UNIVERSES)[0]["metadata"]["name"]
    play_yugabyte_backup(api, engine, "InProgress")
    assert wait_for(lambda: ((_backup_objects(api, org, good["backup_id"]) or [{}])[0].get("status") or {}).get(
        "phase") == "Running", timeout=30, what="the DatabaseBackup Running while YBA works")
    play_yugabyte_backup(api, engine, "Completed")
    assert _wait_op(stack, good["operation_id"])["state"] == "Succeeded"
    shown = json.loads(stack.dbaas("backup", "get", good["backup_id"], "--json", check=True).stdout)
    assert shown["status"] == "Completed", shown
    assert shown["location"] == f"s3://dbaas-backups/tenants/{org}/backups/{good['backup_id']}"
    status = next(b for b in _engine(api, org, DATABASE_BACKUPS) if b["spec"]["backupId"] == good["backup_id"])
    assert status["status"]["phase"] == "Completed"
    print(f"backup -> Completed with the engine fixture: {time.monotonic() - started:.1f}s")

    result = _wait_op(stack, unsupported["operation_id"], timeout=60)
    assert result["state"] == "Failed" and result["reason_code"] == "pop_failed", result
    assert "Unsupported" in result["message"] and "scylla" in result["message"]
    assert json.loads(stack.dbaas("backup", "get", unsupported["backup_id"], "--json", check=True).stdout)[
        "status"] == "Failed"

    bad = _backup(stack, org, "ledger")
    _, engine = wait_for(lambda: _backup_objects(api, org, bad["backup_id"]), timeout=60,
                         what="the second backup's objects")
    play_yugabyte_backup(api, engine, "Failed")
    result = _wait_op(stack, bad["operation_id"])
    assert result["state"] == "Failed" and "BackupFailed" in result["message"], result
    assert json.loads(stack.dbaas("backup", "get", bad["backup_id"], "--json", check=True).stdout)[
        "status"] == "Failed"
    wait_for(lambda: _backup_objects(api, org, bad["backup_id"]) is None, timeout=60,
             what="the failed backup's reverted objects to be pruned")

    out = stack.dbaas("backup", "delete", good["backup_id"], "--json", check=True).stdout
    deleting = json.loads(out)["operation_id"]
    assert _wait_op(stack, deleting)["state"] == "Succeeded"  # pruned, finalized, reported Deleted
    assert _backup_objects(api, org, good["backup_id"]) is None
    assert not [b for b in _engine(api, org, DATABASE_BACKUPS) if b["spec"]["backupId"] == good["backup_id"]]
    assert json.loads(stack.dbaas("backup", "get", good["backup_id"], "--json", check=True).stdout)[
        "status"] == "Deleted"
    expected = {good["operation_id"]: "Completed", bad["operation_id"]: "Failed",
                unsupported["operation_id"]: "Failed", deleting: "Deleted"}
    reports = _reports_of(stack, set(expected))
    assert {op: [(p, n) for (_, p), n in seen.items()] for op, seen in reports.items()} == {
        op: [(phase, 1)] for op, phase in expected.items()}


def _stop(stack, component: str) -> bool:
    from deploy.stack import config
    from deploy.stack.launcher import Launcher

    return Launcher(config.resolve(stack.home), say=lambda _m: None).stop([component]) == [component]


def test_killing_the_operator_and_the_sync_mid_operation_neither_duplicates_a_report_nor_strands_a_claim(
        stack, kube):
    api, org = kube["frankfurt"], _org(stack)
    op = create = _submit(stack, "service", "create", "sturdy", "--org", org, "--engine", "scylla", "--pop",
                          "frankfurt")
    cluster = wait_for(lambda: _engine(api, org), timeout=60, what="the ScyllaCluster")[0]
    kill(stack, "pop-operator-frankfurt")
    kill(stack, "kube-sync-frankfurt")
    play_scylla(api, cluster)  # while both are down
    assert _wait_op(stack, op)["state"] == "Succeeded"
    kill(stack, "pop-operator-frankfurt")  # again, after its report: nothing is re-reported
    op = _submit(stack, "service", "delete", "sturdy", "--org", org)
    assert _wait_op(stack, op)["state"] == "Succeeded"
    # the finalizer did not strand it: the operator reports Deleted once the engine's objects are
    # gone, and lets the claim go in the same reconciliation, so it may still be listed a moment
    wait_for(lambda: not _claims(api, org), timeout=30, what="the deleted service's claim to be gone")
    assert [(phase, n) for (_, phase), n in _reports(stack, create).items()] == [("Ready", 1)]


def test_frankfurt_down_times_out_frankfurt_alone_while_lagos_and_local_finish(stack, kube):
    """Last in the module: frankfurt's API server stays down until the module's PoPs are stopped."""
    org = _org(stack)
    assert _stop(stack, "kube-apiserver-frankfurt")
    frankfurt = _submit(stack, "service", "create", "down", "--org", org, "--engine", "scylla", "--pop", "frankfurt")
    lagos = _submit(stack, "service", "create", "up", "--org", org, "--engine", "scylla", "--pop", "lagos")
    local = _submit(stack, "service", "create", "here", "--org", org, "--engine", "dragonfly", "--pop", "local")
    cluster = wait_for(lambda: _engine(kube["lagos"], org), timeout=60, what="lagos's ScyllaCluster")[0]
    play_scylla(kube["lagos"], cluster)
    assert _wait_op(stack, lagos)["state"] == "Succeeded"
    assert _wait_op(stack, local)["state"] == "Succeeded"
    assert _service(stack, org, "down")["status"] == "Provisioning"  # still waiting, within its timeout
    result = _wait_op(stack, frankfurt, timeout=FRANKFURT_TIMEOUT + 60)
    assert result["state"] == "Failed" and result["reason_code"] == "timed_out", result
