"""The service saga on the test platform: an operation in a Kubernetes PoP is rendered with the
real helm, committed to the GitOps remote with trailers, and waits for the PoP; PoP reports on
`dbaas.pop.status` (signed by the PoP's key) finish it and start the operation queued behind it.
An operation the saga can never carry out (the chart refuses its values, git refuses its change)
fails with the reason, and the saga goes on with the operations behind it."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from runtime.kafka import partition_for
from tests.conftest import wait_for
from tests.integration.conftest import operation


def _git(stack, *args: str) -> str:
    remote = stack.gitops_remote.removeprefix("file://")
    return subprocess.run(["git", "--git-dir", remote, *args], capture_output=True, text=True, check=True).stdout


def _report(stack, tenant: str, service_id: str, op_id: str, phase: str, endpoint: str | None = None) -> None:
    """PoP frankfurt's report, signed with its key (the saga believes no other)."""
    stack.report("frankfurt", tenant, service_id, op_id, phase, endpoint=endpoint)


def test_kubernetes_pop_operation_commits_then_waits_for_the_pop(api, stack):
    org = f"saga-{uuid.uuid4().hex[:8]}"
    assert api.post("/organizations", json={"slug": org}).status_code == 202
    wait_for(lambda: any(o["id"] == org for o in api.get("/organizations", params={"limit": 500}).json()["items"]),
             what="the organization")
    created = api.post("/services", json={"org": org, "name": "orders", "engine": "yugabyte",
                                          "pop": "frankfurt", "size": "medium"}).json()
    op_id, service_id = created["operation_id"], created["service_id"]

    op = operation(api, op_id, lambda o: o["done_steps"] == 2, "committed, awaiting the PoP")
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
    operation(api, scale["operation_id"], lambda o: o["state"] == "Accepted", "the queued scale")
    def commits_of(operation_id: str) -> int:
        trailers = _git(stack, "log", "--format=%(trailers:key=Operation-Id,valueonly)", "main").split()
        return trailers.count(operation_id)
    assert commits_of(scale["operation_id"]) == 0

    _report(stack, org, service_id, op_id, "Ready", endpoint="orders.tenant-x.svc:5433")
    done = operation(api, op_id, lambda o: o["state"] == "Succeeded", "the create to succeed on the PoP's report")
    assert done["done_steps"] == 3
    scaled = operation(api, scale["operation_id"], lambda o: o["done_steps"] == 2, "the scale to start and commit")
    assert commits_of(scale["operation_id"]) == 1
    after = list(yaml.safe_load_all(_git(stack, "show", f"main:{path}")))
    universe = next(d for d in after if d and d["kind"] == "YBUniverse")
    assert "5" in yaml.safe_dump(universe["spec"])  # the new replica count reached the engine CR
    assert scaled["state"] == "Running"

    _report(stack, org, service_id, scale["operation_id"], "Ready")
    operation(api, scale["operation_id"], lambda o: o["state"] == "Succeeded", "the scale to succeed")
    assert api.get(f"/services/{service_id}").json()["status"] == "Ready"

    deleted = api.delete(f"/services/{service_id}").json()
    operation(api, deleted["operation_id"], lambda o: o["done_steps"] == 2, "the delete to be committed")
    assert path not in _git(stack, "ls-tree", "-r", "--name-only", "main").split()
    _report(stack, org, service_id, deleted["operation_id"], "Deleted")
    operation(api, deleted["operation_id"], lambda o: o["state"] == "Succeeded", "the delete to succeed")
    assert wait_for(lambda: api.get(f"/services/{service_id}").json()["status"] == "Deleted")


# -- operations the saga can never carry out -----------------------------------------------------

def _partition(stack, org: str) -> int:
    """The partition of `dbaas.events` (that of its commands) holding organization `org`'s story."""
    topic = AdminClient(stack.kafka.client()).list_topics("dbaas.commands", timeout=30).topics
    return partition_for(org.encode(), len(topic["dbaas.commands"].partitions))


def _organization(api, stack, prefix: str, partition: int | None = None, length: int | None = None) -> str | None:
    """A new organization; on `partition` when given (then its events queue behind another's), with
    a slug of `length` characters when given (None: the platform refuses such a slug)."""
    def slug() -> str:
        org = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return org if length is None else f"{org}-{'x' * length}"[:length]
    org = slug()
    while partition is not None and _partition(stack, org) != partition:
        org = slug()
    created = api.post("/organizations", json={"slug": org})
    if length is not None and created.status_code == 422:
        return None
    assert created.status_code == 202, created.text
    operation(api, created.json()["operation_id"], lambda o: o["state"] == "Succeeded", f"organization {org}")
    return org


# Creates the service chart refuses: (what, length of the organization's slug, the create's fields,
# what the reason says). The first the platform accepts is used: each check added up front (names
# over 53 characters and more than 32 labels are refused since) moves the test on to the next.
CHART_REFUSED = [
    ("a name of 60 characters (Helm: release names are at most 53)", None, {"name": "n" * 60},
     "at most 53 characters"),
    ("33 labels (the chart: at most 32)", None, {"name": "labelled", "labels": {f"k{i}": "v" for i in range(33)}},
     "want 32"),
    ("an organization slug of 60 characters (its namespace tenant-<slug> is over 63)", 60, {"name": "orders"},
     "at most 63 characters"),
]


def test_an_operation_the_chart_refuses_fails_with_the_reason_and_the_saga_moves_on(api, stack):
    for what, slug_length, fields, says in CHART_REFUSED:
        bad_org = _organization(api, stack, "sagarefused", length=slug_length)
        if bad_org is None:
            continue
        answer = api.post("/services", json={"org": bad_org, "engine": "yugabyte", "pop": "frankfurt",
                                             "size": "small", **fields})
        if answer.status_code == 202:
            break
        assert answer.status_code == 422, answer.text
    else:
        pytest.skip("every chart-refused value is refused up front now; the commit refusal test covers the saga")
    refused = answer.json()
    # Organization `good_org` shares its partition: its create waits behind the refused one in the
    # saga's input, so it is carried out only if the saga got past the refused operation.
    good_org = _organization(api, stack, "sagafine", partition=_partition(stack, bad_org))
    assert good_org is not None
    operation(api, refused["operation_id"], lambda o: o["state"] in ("Accepted", "Running", "Failed"),
        "the refused operation to be in the log")
    good = api.post("/services", json={"org": good_org, "name": "orders", "engine": "yugabyte",
                                       "pop": "frankfurt", "size": "small"}).json()

    failed = operation(api, refused["operation_id"], lambda o: o["state"] == "Failed", f"the create with {what} to fail")
    assert failed["reason_code"] == "render_failed", failed
    assert says in failed["message"] and "nothing was committed" in failed["message"], failed["message"]
    render = next(s for s in failed["steps"] if s["name"] == "render")
    assert render["state"] == "Failed"
    assert api.get(f"/services/{refused['service_id']}").json()["status"] == "Failed"
    assert refused["operation_id"] not in _git(stack, "log", "--format=%(trailers:key=Operation-Id,valueonly)",
                                               "main").split()

    operation(api, good["operation_id"], lambda o: o["done_steps"] == 2, "the other organization's create to be committed")
    _report(stack, good_org, good["service_id"], good["operation_id"], "Ready", endpoint="orders.svc:5433")
    operation(api, good["operation_id"], lambda o: o["state"] == "Succeeded", "the other organization's create to succeed")
    assert api.get(f"/services/{good['service_id']}").json()["status"] == "Ready"
    assert 'dbaas_saga_steps_failed_total{error="RenderFailed",step="render"}' in stack.metrics("saga")


def _push_folder(stack, tmp_path: Path, folder: str) -> None:
    """Put a folder at `folder` in the GitOps remote's main branch, as a person's commit would."""
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", stack.gitops_remote, str(work)], check=True)
    (work / folder).mkdir(parents=True)
    (work / folder / "README").write_text("a folder where the saga would write a file\n")
    git = ["git", "-C", str(work), "-c", "user.name=test", "-c", "user.email=test@dbaas.local"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "A folder in the way"], check=True)

    def pushed() -> bool:  # the saga commits too: rebase on what it pushed meanwhile
        subprocess.run([*git, "pull", "-q", "--rebase", "origin", "main"], check=True)
        return subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=False, capture_output=True).returncode == 0
    wait_for(pushed, timeout=60, what="the folder to be pushed")


def test_an_operation_git_refuses_to_commit_fails_with_the_reason_and_nothing_is_reverted(api, stack, tmp_path):
    org = _organization(api, stack, "sagaclash")
    assert org is not None
    _push_folder(stack, tmp_path, f"tenants/{org}/frankfurt/orders.yaml")
    created = api.post("/services", json={"org": org, "name": "orders", "engine": "yugabyte",
                                          "pop": "frankfurt", "size": "small"}).json()
    failed = operation(api, created["operation_id"], lambda o: o["state"] == "Failed", "the create to fail at its commit")
    assert failed["reason_code"] == "commit_failed", failed
    assert "a folder of that name exists" in failed["message"], failed["message"]
    assert [s["state"] for s in failed["steps"]][:2] == ["Done", "Failed"], failed["steps"]
    assert failed["compensation"] is None, "nothing was committed, so nothing is reverted"

    # The organization's next create, at another path, goes through.
    other = api.post("/services", json={"org": org, "name": "billing", "engine": "yugabyte",
                                        "pop": "frankfurt", "size": "small"}).json()
    operation(api, other["operation_id"], lambda o: o["done_steps"] == 2, "the next create to be committed")
