"""What the local PoP agent reads from git: claim paths, ServiceClaim files, trailers, history."""
from __future__ import annotations

import pytest

from operators.localpop.claims import (
    CommitRef,
    History,
    InvalidClaim,
    parse_claim,
    parse_history,
    parse_trailers,
    pop_claim_path,
)

CLAIM = """\
---
apiVersion: dbaas.io/v1alpha1
kind: ServiceClaim
metadata:
  name: orders-6e7f8139
  namespace: tenant-acme
spec:
  engine: yugabyte
  engineVersion: '2.20'
  name: orders
  pop: local
  serviceId: 3f0c9a4e-1111-2222-3333-444455556666
  tenant: acme
---
apiVersion: operator.yugabyte.io/v1alpha1
kind: YBUniverse
metadata:
  name: orders-6e7f8139
spec:
  numNodes: 1
"""


@pytest.mark.parametrize("path, expected", [
    ("tenants/acme/local/orders.yaml", ("acme", "orders")),
    ("tenants/acme/frankfurt/orders.yaml", None),  # another PoP's folder
    ("tenants/acme/orders.yaml", None),  # the flat layout is not a PoP's
    ("tenants/acme/local/backups/b1.yaml", None),  # deeper: not a service
    ("tenants/acme/local/orders.yml", None),
    ("base/local/x.yaml", None),
], ids=["local", "other-pop", "flat", "nested", "extension", "not-tenants"])
def test_only_the_pops_own_service_files_are_claims(path, expected):
    assert pop_claim_path(path, "local") == expected


def test_a_rendered_service_file_yields_its_claim():
    claim = parse_claim(CLAIM, "tenants/acme/local/orders.yaml")
    assert (claim.tenant, claim.service_id, claim.name, claim.engine, claim.pop) == (
        "acme", "3f0c9a4e-1111-2222-3333-444455556666", "orders", "yugabyte", "local")
    assert claim.key == "acme/3f0c9a4e-1111-2222-3333-444455556666"


@pytest.mark.parametrize("text, message", [
    ("a: [", "not valid YAML"),
    ("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "0 ServiceClaim"),
    (CLAIM + CLAIM, "2 ServiceClaim"),
    (CLAIM.replace("apiVersion: dbaas.io/v1alpha1", "apiVersion: other.io/v1"), "0 ServiceClaim"),
    (CLAIM.replace("  serviceId: 3f0c9a4e-1111-2222-3333-444455556666\n", ""), "no serviceId"),
], ids=["bad-yaml", "no-claim", "two-claims", "foreign-group", "no-service-id"])
def test_files_that_are_not_one_readable_claim_are_refused_with_the_reason(text, message):
    with pytest.raises(InvalidClaim, match=message):
        parse_claim(text, "tenants/acme/local/orders.yaml")


def test_trailers_are_read_from_the_message_and_the_last_one_wins():
    message = "Apply acme/orders in local\n\nOperation-Id: op-1\nCorrelation-Id: corr-1\n"
    assert parse_trailers(message) == ("op-1", "corr-1")
    assert parse_trailers("Bootstrap\n") == (None, None)
    assert parse_trailers("x\n\nOperation-Id: a\nOperation-Id: b\n") == ("b", None)


def test_history_keeps_the_newest_touch_and_the_newest_deletion_of_each_path():
    log = ("\x1ec3\nRemove\n\nOperation-Id: op-3\nCorrelation-Id: k3\n\x1f\n\nD\ttenants/a/local/x.yaml\n"
           "\x1ec2\nApply\n\nOperation-Id: op-2\n\x1f\n\nM\ttenants/a/local/x.yaml\nA\ttenants/a/local/y.yaml\n"
           "\x1ec1\nApply\n\nOperation-Id: op-1\n\x1f\n\nA\ttenants/a/local/x.yaml\n")
    history = parse_history(log)
    assert history.last["tenants/a/local/x.yaml"] == CommitRef("c3", "op-3", "k3", "D")
    assert history.deleted["tenants/a/local/x.yaml"] == CommitRef("c3", "op-3", "k3", "D")
    assert history.last["tenants/a/local/y.yaml"] == CommitRef("c2", "op-2", None, "A")
    assert "tenants/a/local/y.yaml" not in history.deleted
    assert parse_history("") == History({}, {})


def test_each_file_of_a_group_commit_has_its_own_operations_trailers():
    message = ("Commit 2 operations\n\nApply acme/x in local\nRemove acme/y in local\n\n"
               "Operation-Id: op-1\nCorrelation-Id: k1\nTrace-Id: 00-aa-bb-01\n"
               "Operation-File: op-1 tenants/a/local/x.yaml\n"
               "Operation-Id: op-2\nCorrelation-Id: k2\nOperation-File: op-2 tenants/a/local/y.yaml\n")
    log = (f"\x1ec2\n{message}\x1f\n\nA\ttenants/a/local/x.yaml\nD\ttenants/a/local/y.yaml\n"
           "\x1ec1\nApply\n\nOperation-Id: op-0\n\x1f\n\nA\ttenants/a/local/y.yaml\n")
    history = parse_history(log)
    assert history.last["tenants/a/local/x.yaml"] == CommitRef("c2", "op-1", "k1", "A", "00-aa-bb-01")
    assert history.last["tenants/a/local/y.yaml"] == CommitRef("c2", "op-2", "k2", "D")
    assert history.deleted["tenants/a/local/y.yaml"] == CommitRef("c2", "op-2", "k2", "D")


def test_newer_history_overrides_older():
    old = History({"p": CommitRef("c1", "op-1", None, "A")}, {})
    new = History({"p": CommitRef("c2", "op-2", None, "D")}, {"p": CommitRef("c2", "op-2", None, "D")})
    merged = old.then(new)
    assert merged.last["p"].sha == "c2" and merged.deleted["p"].sha == "c2"
    assert old.then(History({}, {})).last == old.last
