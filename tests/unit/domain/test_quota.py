"""Quotas: defaults, overrides by the org-owner, checks on create and scale, release on failure and
deletion, and the usage they count."""

from __future__ import annotations

import pytest
from domain_builders import op, DB1, DB2, SYSTEM, TENANT, cmd, reverted, run, saga, trusted

from commands import (
    Actor,
    CreateOrganization,
    CreateService,
    DeleteService,
    ScaleService,
    SetQuota,
    decide,
    fingerprint_of,
    usage,
)
from commands.catalog import DEFAULT_QUOTA
from events import CommandRejected, OperationStarted, Quota, QuotaSet, ResourceLimit

ORG = cmd(CreateOrganization(TENANT, "Acme"))
ADMIN = Actor("carol", ("org-admin",))
DB3 = "2f1dac60-7b9e-4e30-9f4c-3d5e7f9a0b23"


def quota(services=10, cpu=8.0, memory=32, storage=1000, engines=None, pops=None):
    return cmd(SetQuota(Quota(services, ResourceLimit(cpu, memory, storage), engines or {}, pops or {})))


def create(service_id, name, engine="yugabyte", pop="frankfurt", size="small", **kw):
    return cmd(CreateService(service_id, name, engine, pop, size, **kw))


def verdict(steps, command):
    state, _ = run(steps)
    payloads = [e.payload for e in decide(state, command, fingerprint_of(command.payload), trusted(command))]
    rejected = [p for p in payloads if isinstance(p, CommandRejected)]
    return rejected[0] if rejected else payloads


def test_the_default_quota_applies_until_the_owner_sets_one():
    state, _ = run([ORG])
    assert state.quota is None and DEFAULT_QUOTA.max_services > 0
    state, produced = run([ORG, quota(3)])
    assert produced[-2].payload == QuotaSet(Quota(3, ResourceLimit(8.0, 32, 1000)))
    assert state.quota.max_services == 3


def test_only_the_org_owner_sets_the_quota():
    r = verdict([ORG], cmd(SetQuota(Quota(1, ResourceLimit(1, 1, 1))), actor=ADMIN))
    assert r.reason_code == "forbidden"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (Quota(-1, ResourceLimit(1, 1, 1)), "quota.max_services"),
        (Quota(1, ResourceLimit(-1, 1, 1)), "quota.total.cpu"),
        (Quota(1, ResourceLimit(1, 1, 1), {"postgres": ResourceLimit(1, 1, 1)}), "quota.engines"),
        (Quota(1, ResourceLimit(1, 1, 1), {}, {"mars": ResourceLimit(1, 1, 1)}), "quota.pops"),
        (Quota(1, ResourceLimit(float("nan"), 1, 1)), "quota.total.cpu"),
    ],
)
def test_a_malformed_quota_is_rejected_with_the_field(bad, field):
    r = verdict([ORG], cmd(SetQuota(bad)))
    assert (r.reason_code, r.field) == ("invalid", field)


def test_the_number_of_services_is_bounded():
    steps = [ORG, quota(2), create(DB1, "a"), create(DB2, "b")]
    r = verdict(steps, create(DB3, "c"))
    assert r.reason_code == "quota_exceeded"
    assert "has 2 services and its quota allows 2" in r.message and "/quotas" in r.message


def test_cpu_counts_replicas_and_a_scale_over_the_quota_is_refused():
    steps = [ORG, quota(cpu=4), create(DB1, "a", size="small", replicas=3)]  # 3 vCPU
    r = verdict(steps, create(DB2, "b", size="small", cpu=2))
    assert (r.reason_code, r.field) == ("quota_exceeded", "cpu")
    assert "would use 5 vCPU in total (now 3), over its quota of 4" in r.message
    r = verdict([*steps, *saga(DB1, op(steps[-1]))], cmd(ScaleService(DB1, cpu=2)))
    assert r.reason_code == "quota_exceeded"
    ok = verdict([*steps, *saga(DB1, op(steps[-1]))], cmd(ScaleService(DB1, replicas=1)))
    assert any(isinstance(p, OperationStarted) for p in ok)


def test_per_engine_and_per_pop_limits():
    engines = {"mongodb": ResourceLimit(1, 100, 100)}
    pops = {"lagos": ResourceLimit(100, 100, 15)}
    steps = [ORG, quota(cpu=100, memory=1000, storage=10000, engines=engines, pops=pops)]
    r = verdict(steps, create(DB1, "m", engine="mongodb", cpu=2))
    assert (r.reason_code, r.field) == ("quota_exceeded", "cpu") and "for engine mongodb" in r.message
    r = verdict(steps, create(DB1, "l", pop="lagos", storage_gb=20))
    assert (r.reason_code, r.field) == ("quota_exceeded", "storage_gb") and "in pop lagos" in r.message
    assert isinstance(verdict(steps, create(DB1, "y", pop="ashburn", storage_gb=20)), list)


def test_failure_and_deletion_release_the_quota():
    a = create(DB1, "a")
    steps = [ORG, quota(1), a]
    assert verdict(steps, create(DB2, "b")).reason_code == "quota_exceeded"
    failed = [*steps, *saga(DB1, op(a), "Failed"), reverted(DB1, op(a))]
    assert isinstance(verdict(failed, create(DB2, "b")), list)
    delete = cmd(DeleteService(DB1))
    ready = [*steps, *saga(DB1, op(a))]
    deleted = [*ready, delete, *saga(DB1, op(delete), "Deleted")]
    assert verdict([*ready, delete], create(DB2, "b")).reason_code == "quota_exceeded"  # still deleting
    assert isinstance(verdict(deleted, create(DB2, "b")), list)


def test_shrinking_is_allowed_over_a_lowered_quota():
    a = create(DB1, "a", cpu=4)
    steps = [ORG, a, *saga(DB1, op(a)), quota(cpu=1)]
    assert any(isinstance(p, OperationStarted) for p in verdict(steps, cmd(ScaleService(DB1, cpu=2))))


def test_usage_sums_resources_times_replicas_per_engine_and_pop():
    steps = [ORG, create(DB1, "a", size="medium"), create(DB2, "b", engine="vitess", pop="lagos")]
    state, _ = run(steps)
    u = usage(state)
    assert u["services"] == 2
    assert u["total"] == [2.0 * 3 + 1.0, 8 * 3 + 2, 100 * 3 + 10]
    assert u["engines"]["vitess"] == [1.0, 2, 10] and u["pops"]["frankfurt"] == [6.0, 24, 300]


def test_a_system_actor_cannot_set_a_quota():
    r = verdict([ORG], cmd(SetQuota(Quota(1, ResourceLimit(1, 1, 1))), actor=SYSTEM))
    assert r.reason_code == "forbidden"
