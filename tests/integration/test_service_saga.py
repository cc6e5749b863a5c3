"""The service saga on the test platform: an operation in a Kubernetes PoP is rendered with the
real helm, committed to the GitOps remote with trailers, and waits for the PoP; PoP reports on
`dbaas.pop.status` finish it and start the operation queued behind it."""
from __future__ import annotations

import subprocess
import uuid
from datetime import datetime, timezone

import httpx
import pytest
import yaml
from confluent_kafka import Producer

from schemas.registry import POP_STATUS_SUBJECT, Registry, Serde
from tests.conftest import wait_for



@pytest.fixture
def api(stack):
    with httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(), timeout=30) as client:
        yield client


def _op(api, op_id: str, predicate, what: str) -> dict:
    def get():
        r = api.get(f"/operations/{op_id}")
        return r.json() if r.status_code == 200 and predicate(r.json()) else None
    return wait_for(get, timeout=120, what=what)


def _git(stack, *args: str) -> str:
    remote = stack.gitops_remote.removeprefix("file://")
    return subprocess.run(["git", "--git-dir", remote, *args], capture_output=True, text=True, check=True).stdout


def _report(stack, tenant: str, service_id: str, op_id: str, phase: str, endpoint: str | None = None) -> None:
    serde = Serde(Registry(stack.registry), POP_STATUS_SUBJECT)
    producer = Producer({"bootstrap.servers": stack.kafka, "acks": "all"})
    producer.produce("dbaas.pop.status", key=tenant.encode(), value=serde.encode({
        "report_id": str(uuid.uuid4()), "pop": "frankfurt", "tenant_id": tenant, "service_id": service_id,
        "operation_id": op_id, "phase": phase, "endpoint": endpoint, "reason": None,
        "observed_at": datetime.now(timezone.utc)}))
    assert producer.flush(30) == 0


def test_kubernetes_pop_operation_commits_then_waits_for_the_pop(api, stack):
    org = f"saga-{uuid.uuid4().hex[:8]}"
    assert api.post("/organizations", json={"slug": org}).status_code == 202
    wait_for(lambda: any(o["id"] == org for o in api.get("/organizations", params={"limit": 500}).json()["items"]),
             what="the organization")
    created = api.post("/services", json={"org": org, "name": "orders", "engine": "yugabyte",
                                          "pop": "frankfurt", "size": "medium"}).json()
    op_id, service_id = created["operation_id"], created["service_id"]

    op = _op(api, op_id, lambda o: o["done_steps"] == 2, "committed, awaiting the PoP")
    assert op["state"] == "Running" and op["total_steps"] == 3
    commit_step = next(s for s in op["steps"] if s["name"] == "commit")
    sha = commit_step["ref"]
    path = f"tenants/{org}/frankfurt/orders.yaml"
    message = _git(stack, "log", "-1", "--format=%B", sha)
    assert f"Operation-Id: {op_id}" in message and "Correlation-Id:" in message
    docs = list(yaml.safe_load_all(_git(stack, "show", f"{sha}:{path}")))
    kinds = {d["kind"] for d in docs if d}
    assert kinds == {"ServiceClaim", "YBUniverse"}
    claim = next(d for d in docs if d and d["kind"] == "ServiceClaim")
    assert claim["spec"]["engine"] == "yugabyte" and claim["spec"]["pop"] == "frankfurt"
    assert api.get(f"/services/{service_id}").json()["status"] == "Provisioning"  # until the PoP reports

    # A scale queues behind the create: accepted, not started, nothing committed for it yet.
    scale = api.post(f"/services/{service_id}/scale", json={"replicas": 5}).json()
    _op(api, scale["operation_id"], lambda o: o["state"] == "Accepted", "the queued scale")
    def commits_of(operation_id: str) -> int:
        trailers = _git(stack, "log", "--format=%(trailers:key=Operation-Id,valueonly)", "main").split()
        return trailers.count(operation_id)
    assert commits_of(scale["operation_id"]) == 0

    _report(stack, org, service_id, op_id, "Ready", endpoint="orders.tenant-x.svc:5433")
    done = _op(api, op_id, lambda o: o["state"] == "Succeeded", "the create to succeed on the PoP's report")
    assert done["done_steps"] == 3
    scaled = _op(api, scale["operation_id"], lambda o: o["done_steps"] == 2, "the scale to start and commit")
    assert commits_of(scale["operation_id"]) == 1
    after = list(yaml.safe_load_all(_git(stack, "show", f"main:{path}")))
    universe = next(d for d in after if d and d["kind"] == "YBUniverse")
    assert "5" in yaml.safe_dump(universe["spec"])  # the new replica count reached the engine CR
    assert scaled["state"] == "Running"

    _report(stack, org, service_id, scale["operation_id"], "Ready")
    _op(api, scale["operation_id"], lambda o: o["state"] == "Succeeded", "the scale to succeed")
    assert api.get(f"/services/{service_id}").json()["status"] == "Ready"

    deleted = api.delete(f"/services/{service_id}").json()
    _op(api, deleted["operation_id"], lambda o: o["done_steps"] == 2, "the delete to be committed")
    assert path not in _git(stack, "ls-tree", "-r", "--name-only", "main").split()
    _report(stack, org, service_id, deleted["operation_id"], "Deleted")
    _op(api, deleted["operation_id"], lambda o: o["state"] == "Succeeded", "the delete to succeed")
    assert wait_for(lambda: api.get(f"/services/{service_id}").json()["status"] == "Deleted")
