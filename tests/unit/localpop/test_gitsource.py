"""The agent's read-only view of a GitOps remote, on throw-away local repositories (no server):
claim files at the tip, the commits that last touched and deleted them, incremental history
that survives a rewritten branch, and typed errors for an unusable remote."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from operators.localpop.claims import Claim
from operators.localpop.gitsource import GitSource, GitUnavailable

CLAIM = """\
---
apiVersion: dbaas.io/v1alpha1
kind: ServiceClaim
metadata: {{name: {name}}}
spec: {{tenant: acme, serviceId: {sid}, name: {name}, engine: vitess, pop: local}}
"""
ORDERS, CACHE = "tenants/acme/local/orders.yaml", "tenants/acme/local/cache.yaml"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(remote))
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "--initial-branch=main", str(work))
    git(work, "remote", "add", "origin", str(remote))
    return remote, work


def commit(work: Path, files: dict[str, str | None], op: str, *, force: bool = False) -> str:
    for path, text in files.items():
        target = work / path
        if text is None:
            git(work, "rm", "-q", path)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            git(work, "add", path)
    git(work, "commit", "-q", "-m", f"change\n\nOperation-Id: {op}\nCorrelation-Id: corr-{op}")
    git(work, "push", "-q", *(["--force"] if force else []), "origin", "HEAD:refs/heads/main")
    return git(work, "rev-parse", "HEAD")


def test_claims_at_the_tip_and_the_commits_behind_them(repo, tmp_path):
    remote, work = repo
    source = GitSource(remote.as_uri(), tmp_path / "mirror.git", "local")
    assert source.snapshot() is None  # no branch yet: nothing to converge on (and nothing to remove)
    c1 = commit(work, {ORDERS: CLAIM.format(name="orders", sid="s1"), "tenants/acme/frankfurt/x.yaml": "x: 1\n",
                       "tenants/acme/local/bad.yaml": "a: ["}, "op-1")
    snap = source.snapshot()
    assert snap.tip == c1 and set(snap.claims) == {ORDERS, "tenants/acme/local/bad.yaml"}
    assert snap.claims[ORDERS] == Claim("acme", "s1", "orders", "vitess", "local")
    assert "not valid YAML" in snap.claims["tenants/acme/local/bad.yaml"]
    assert snap.tenants[ORDERS] == "acme"
    assert (snap.history.last[ORDERS].sha, snap.history.last[ORDERS].operation_id) == (c1, "op-1")

    c2 = commit(work, {CACHE: CLAIM.format(name="cache", sid="s2")}, "op-2")
    c3 = commit(work, {ORDERS: None}, "op-3")
    snap = source.snapshot()  # read incrementally: only c2 and c3 are new
    assert set(snap.claims) == {CACHE, "tenants/acme/local/bad.yaml"}
    assert snap.history.last[CACHE].sha == c2 and snap.history.last[CACHE].correlation_id == "corr-op-2"
    assert (snap.history.deleted[ORDERS].sha, snap.history.deleted[ORDERS].operation_id) == (c3, "op-3")


def test_a_rewritten_branch_is_read_again_from_scratch(repo, tmp_path):
    remote, work = repo
    source = GitSource(str(remote), tmp_path / "mirror.git", "local")
    commit(work, {ORDERS: CLAIM.format(name="orders", sid="s1")}, "op-1")
    commit(work, {ORDERS: None}, "op-2")
    assert ORDERS in source.snapshot().history.deleted
    git(work, "reset", "-q", "--hard", "HEAD~1")
    c3 = commit(work, {CACHE: CLAIM.format(name="cache", sid="s2")}, "op-3", force=True)
    snap = source.snapshot()
    assert snap.tip == c3 and ORDERS in snap.claims and ORDERS not in snap.history.deleted
    # a new instance on the same mirror (a restarted agent) sees the same
    again = GitSource(str(remote), tmp_path / "mirror.git", "local").snapshot()
    assert again.claims == snap.claims and again.history == snap.history


def test_an_unusable_remote_is_a_transient_error(tmp_path):
    source = GitSource((tmp_path / "missing.git").as_uri(), tmp_path / "mirror.git", "local")
    with pytest.raises(GitUnavailable, match="cannot be read"):
        source.snapshot()


def test_each_claim_of_a_group_commit_belongs_to_its_own_operation(repo, tmp_path):
    from gitops.committer import Change, GitOpsCommitter

    remote, _ = repo
    saga = GitOpsCommitter(str(remote), tmp_path / "saga", "saga", "saga@dbaas.invalid")
    saga.apply({ORDERS: CLAIM.format(name="orders", sid="s1")}, "Apply acme/orders in local", "op-0", "corr-0")
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    [removed, added] = saga.apply_group([
        Change({ORDERS: None}, "Remove acme/orders in local", "op-1", "corr-1"),
        Change({CACHE: CLAIM.format(name="cache", sid="s2")}, "Apply acme/cache in local", "op-2", "corr-2", trace)])
    assert removed.sha == added.sha and removed.changed and added.changed
    snap = GitSource(str(remote), tmp_path / "mirror.git", "local").snapshot()
    assert set(snap.claims) == {CACHE}
    cache, orders = snap.history.last[CACHE], snap.history.deleted[ORDERS]
    assert (cache.sha, cache.operation_id, cache.correlation_id, cache.trace) == (added.sha, "op-2", "corr-2", trace)
    assert (orders.sha, orders.operation_id, orders.correlation_id, orders.trace) == (added.sha, "op-1", "corr-1", None)
