"""Compensation, cancellation, step timeouts and quotas on the test platform: a failed or cancelled
operation's GitOps commit is reverted in the real remote, the service ends where the PoP last had
it, and many concurrent creates never exceed an organization's quota."""
from __future__ import annotations

import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import SINGAPORE_TIMEOUT, wait_for
from tests.integration.conftest import operation


def _service(api, service_id: str) -> dict:
    return api.get(f"/services/{service_id}").json()


def _git(stack, *args: str) -> str:
    remote = stack.gitops_remote.removeprefix("file://")
    return subprocess.run(["git", "--git-dir", remote, *args], capture_output=True, text=True, check=True).stdout


def _file_at_tip(stack, path: str) -> bool:
    return bool(_git(stack, "ls-tree", "--name-only", "main", "--", path).strip())


def _create(api, org: str, name: str, pop: str, engine: str = "scylla", **more) -> tuple[str, str]:
    r = api.post("/services", json={"org": org, "name": name, "engine": engine, "pop": pop, **more})
    assert r.status_code == 202, r.text
    service_id = r.json()["service_id"]
    wait_for(lambda: api.get(f"/services/{service_id}").status_code == 200, what="the service")
    return r.json()["operation_id"], service_id


def _committed(api, op_id: str) -> dict:
    return operation(api, op_id, lambda o: o["done_steps"] >= 2, "the operation committed, awaiting its PoP")


def _report_failed(stack, tenant, service_id, op_id, reason):
    stack.report("frankfurt", tenant, service_id, op_id, "Failed", reason=reason)


def test_a_pop_failure_reverts_the_commit_and_releases_the_quota(api, stack, org):
    op_id, service_id = _create(api, org, "orders", "frankfurt")
    commit_sha = next(s["ref"] for s in _committed(api, op_id)["steps"] if s["name"] == "commit")
    path = f"tenants/{org}/frankfurt/orders.yaml"
    assert _file_at_tip(stack, path)

    _report_failed(stack, org, service_id, op_id, "ScyllaCluster: insufficient nodes")
    op = operation(api, op_id, lambda o: (o["compensation"] or {}).get("state") == "Done", "the revert")

    assert (op["state"], op["reason_code"]) == ("Failed", "pop_failed")
    assert "insufficient nodes" in op["message"]
    revert = op["compensation"]["ref"]
    assert revert and revert != commit_sha
    assert _git(stack, "rev-parse", f"{revert}^").strip() != ""  # a real commit on main
    assert not _file_at_tip(stack, path)
    trailers = _git(stack, "log", "-1", "--format=%(trailers:key=Operation-Id,valueonly)", revert).strip()
    assert trailers and trailers != op_id  # the revert has its own operation id
    assert _service(api, service_id)["status"] == "Failed"
    usage = api.get(f"/organizations/{org}/quotas").json()["usage"]
    assert usage["services"] == 0  # a failed creation holds no quota


def test_cancelling_a_creation_awaiting_its_pop_reverts_it(api, stack, org):
    op_id, service_id = _create(api, org, "cache", "frankfurt", engine="dragonfly")
    _committed(api, op_id)
    path = f"tenants/{org}/frankfurt/cache.yaml"
    assert _file_at_tip(stack, path)

    r = api.post(f"/operations/{op_id}/cancel")
    assert r.status_code == 202
    cancel = operation(api, r.json()["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed"), "the cancel")
    assert cancel["state"] == "Succeeded", cancel
    op = operation(api, op_id, lambda o: (o["compensation"] or {}).get("state") == "Done", "the revert")

    assert op["state"] == "Cancelled"
    assert not _file_at_tip(stack, path)
    wait_for(lambda: _service(api, service_id)["status"] == "Deleted", what="the service to be gone")


def test_cancelling_a_queued_scale_drops_it_and_a_running_render_cannot_be_cancelled(api, stack, org):
    op_id, service_id = _create(api, org, "events", "frankfurt", size="small")
    scale = api.post(f"/services/{service_id}/scale", json={"cpu": 2}).json()["operation_id"]
    operation(api, scale, lambda o: o["state"] == "Accepted", "the scale, queued")

    cancel = api.post(f"/operations/{scale}/cancel").json()["operation_id"]
    assert operation(api, cancel, lambda o: o["state"] != "Accepted", "the cancel")["state"] == "Succeeded"
    dropped = operation(api, scale, lambda o: o["state"] == "Cancelled", "the scale cancelled")
    assert dropped["compensation"] is None  # nothing was committed for it
    assert _service(api, service_id)["resources"]["cpu"] == 1.0

    again = api.post(f"/operations/{scale}/cancel").json()["operation_id"]
    refused = operation(api, again, lambda o: o["state"] == "Failed", "the second cancel refused")
    assert refused["reason_code"] == "conflict" and "nothing to cancel" in refused["message"]
    assert api.post(f"/operations/{uuid.uuid4()}/cancel").status_code == 404


def test_no_report_from_the_pop_in_time_fails_and_reverts(api, stack, org):
    op_id, service_id = _create(api, org, "ledger", "singapore", engine="mongodb")
    _committed(api, op_id)
    path = f"tenants/{org}/singapore/ledger.yaml"
    assert _file_at_tip(stack, path)

    op = operation(api, op_id, lambda o: (o["compensation"] or {}).get("state") == "Done",
             "the timeout and its revert", timeout=SINGAPORE_TIMEOUT + 90)

    assert (op["state"], op["reason_code"]) == ("Failed", "timed_out")
    assert op["message"] == f"step pop-report did not finish within {SINGAPORE_TIMEOUT} s"
    assert not _file_at_tip(stack, path)
    assert _service(api, service_id)["status"] == "Failed"


def test_concurrent_creates_never_exceed_the_quota(api, stack, org):
    r = api.put(f"/organizations/{org}/quotas", json={
        "max_services": 4, "total": {"cpu": 100, "memory_gb": 1000, "storage_gb": 10000}})
    assert r.status_code == 202
    operation(api, r.json()["operation_id"], lambda o: o["state"] == "Succeeded", "the quota")
    assert api.get(f"/organizations/{org}/quotas").json()["quota"]["max_services"] == 4

    def create(i: int) -> str:
        with httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(), timeout=30) as c:
            resp = c.post("/services", json={"org": org, "name": f"db-{i}", "engine": "aerospike", "pop": "ashburn"})
            assert resp.status_code == 202, resp.text
            return resp.json()["operation_id"]

    with ThreadPoolExecutor(12) as pool:
        ops = list(pool.map(create, range(12)))
    outcomes = [operation(api, op, lambda o: o["state"] != "Accepted", "judged") for op in ops]

    accepted = [o for o in outcomes if o["state"] != "Failed"]
    refused = [o for o in outcomes if o["state"] == "Failed"]
    assert len(accepted) == 4
    assert {o["reason_code"] for o in refused} == {"quota_exceeded"}
    assert "its quota allows 4" in refused[0]["message"]
    assert api.get(f"/organizations/{org}/quotas").json()["usage"]["services"] == 4


def test_only_an_org_owner_sets_a_quota(stack, org):
    with httpx.Client(base_url=stack.api + "/api/v1", timeout=30, headers=stack.auth("bob", {org: ["org-admin"]})) as c:
        r = c.put(f"/organizations/{org}/quotas", json={"max_services": 1, "total": {
            "cpu": 1, "memory_gb": 1, "storage_gb": 1}})
    assert r.status_code == 403
