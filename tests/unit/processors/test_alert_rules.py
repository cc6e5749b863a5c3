"""The alert rules (`processors.alerting`) and the alerts processor's logic over plain tables
(`processors.alerts.Processor`): episodes with hysteresis, ids derived from what the alert is
about and when it began, one raise and one resolve per episode — also when samples are delivered
again, the event log is folded again after a restart, or the tables come back from their changelog."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from commands import CreateOrganization, CreateService, DeleteService, SetQuota
from events import Quota, ResourceLimit
from processors.alerting import (
    Config,
    Fact,
    QuotaWatch,
    ServiceWatch,
    Thresholds,
    alert_id,
    fact_of,
    mark_of,
    on_fact,
    on_sample,
    on_tenant,
    past,
    quota_usage,
    size,
)
from processors.alerts import Processor, thresholds
from tests.unit.domain.domain_builders import TENANT, cmd, op, run, saga

SVC = "7d3e2f10-0a1b-4c2d-8e3f-405162738495"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=15)
GIB = 2**30


def sample(at: datetime, storage: float = 0.1, connections: int = 1, *, limit: int = GIB, most: int = 20,
           service: str = SVC, tenant: str = TENANT) -> dict:
    return {"tenant_id": tenant, "service_id": service, "engine": "yugabyte", "pop": "local", "sampled_at": at,
            "connections": connections, "max_connections": most, "transactions_per_s": 1.0, "ops_per_s": None,
            "storage_bytes": int(storage * limit), "storage_limit_bytes": limit, "storage_estimated": False,
            "keys": None}


def feed(samples: list[dict], watch: ServiceWatch | None = None, config: Config = Config()):
    alerts = []
    for s in samples:
        watch, out = on_sample(watch, s, config)
        alerts += out
    return watch, alerts


# -- storage ----------------------------------------------------------------------------------------
def test_storage_over_80_percent_raises_once_and_resolves_below_75_with_the_same_id():
    levels = [0.50, 0.79, 0.81, 0.95, 0.78, 0.76, 0.81, 0.74, 0.60]
    watch, alerts = feed([sample(T0 + i * S, level) for i, level in enumerate(levels)])

    assert [(a.kind, a.state) for a in alerts] == [("storage_high", "raised"), ("storage_high", "resolved")]
    raised, resolved = alerts
    assert raised.alert_id == resolved.alert_id == alert_id(TENANT, SVC, "storage_high", T0 + 2 * S)
    assert raised.raised_at == resolved.raised_at == T0 + 2 * S  # the episode's start, in both
    assert resolved.resolved_at == T0 + 7 * S
    assert raised.severity == "warning" and raised.source == "alerts" and raised.service_id == SVC
    assert "81%" in raised.message and "829 MiB of 1 GiB" in raised.message
    assert resolved.message.startswith(raised.message + "; resolved: 74%")
    assert "storage_high" not in watch.open


def test_a_second_episode_has_an_id_of_its_own():
    levels = [0.9, 0.5, 0.85]
    _, alerts = feed([sample(T0 + i * S, level) for i, level in enumerate(levels)])

    assert [a.state for a in alerts] == ["raised", "resolved", "raised"]
    assert alerts[2].alert_id == alert_id(TENANT, SVC, "storage_high", T0 + 2 * S) != alerts[0].alert_id


def test_samples_delivered_again_or_late_change_nothing():
    watch, alerts = feed([sample(T0, 0.9), sample(T0 + S, 0.5)])
    again, more = feed([sample(T0, 0.9), sample(T0 + S, 0.5), sample(T0 - S, 0.99)], watch)

    assert [a.state for a in alerts] == ["raised", "resolved"]
    assert more == [] and again == watch


def test_a_sample_without_a_storage_limit_is_not_judged_on_storage():
    s = {**sample(T0, 0.9), "storage_limit_bytes": None}
    watch, alerts = on_sample(None, s)
    assert alerts == [] and watch.last_sampled_at == T0


# -- connections ------------------------------------------------------------------------------------
def test_connections_near_the_limit_raise_after_two_samples_in_a_row_from_the_first_of_them():
    counts = [19, 10, 18, 19, 20, 17, 15]  # of 20: 95 %, 50 %, 90 %, 95 %, 100 %, 85 %, 75 %
    _, alerts = feed([sample(T0 + i * S, connections=c) for i, c in enumerate(counts)])

    assert [(a.kind, a.state) for a in alerts] == [("connections_high", "raised"), ("connections_high", "resolved")]
    assert alerts[0].alert_id == alert_id(TENANT, SVC, "connections_high", T0 + 2 * S)  # the run began at 18
    assert alerts[0].raised_at == T0 + 2 * S and alerts[1].resolved_at == T0 + 6 * S
    assert "19 of its 20 connections (95%)" in alerts[0].message  # as the sample that raised it saw it


def test_one_sample_over_the_threshold_is_not_enough():
    _, alerts = feed([sample(T0, connections=20), sample(T0 + S, connections=1), sample(T0 + 2 * S, connections=20)])
    assert alerts == []


def test_thresholds_come_from_the_configuration():
    config = Config(storage=Thresholds(0.5, 0.4), connections=Thresholds(0.5, 0.4, samples=1))
    _, alerts = feed([sample(T0, 0.55, connections=11), sample(T0 + S, 0.45, connections=9)], config=config)
    assert sorted((a.kind, a.state) for a in alerts) == [("connections_high", "raised"), ("storage_high", "raised")]
    with pytest.raises(ValueError, match="at most raise_at"):
        Thresholds(0.7, 0.8)


@pytest.mark.parametrize("raw, expected", [
    ("80/75", Thresholds(0.8, 0.75)), ("90/80/3", Thresholds(0.9, 0.8, 3))])
def test_threshold_settings(raw, expected):
    assert thresholds("X", samples=True)(raw) == expected


@pytest.mark.parametrize("raw", ["80", "75/80", "a/b", "90/80/0"])
def test_threshold_settings_refused(raw):
    with pytest.raises(ValueError, match="X="):
        thresholds("X", samples=True)(raw)


# -- lifecycle facts --------------------------------------------------------------------------------
def fact(seq: int, what: str, at: datetime = T0, **kw) -> Fact:
    return Fact(TENANT, SVC, seq, what, at, **kw)  # type: ignore[arg-type]


def test_a_failed_operation_raises_one_critical_alert_resolved_when_the_service_is_ready_again():
    steps = [fact(1, "requested", name="orders"), fact(5, "failed", T0 + S, operation_id="op-1", reason="disk full"),
             fact(6, "failed", T0 + 2 * S, operation_id="op-2", reason="again"),
             fact(9, "ready", T0 + 3 * S, operation_id="op-3")]
    watch, alerts = None, []
    for f in steps:
        watch, out = on_fact(watch, f)
        alerts += out

    assert [(a.kind, a.state, a.severity) for a in alerts] == [
        ("operation_failed", "raised", "critical"), ("operation_failed", "resolved", "critical")]
    assert alerts[0].alert_id == alerts[1].alert_id == alert_id(TENANT, SVC, "operation_failed", T0 + S)
    assert 'service "orders"' in alerts[0].message and "disk full" in alerts[0].message
    assert "Ready again (operation op-3)" in alerts[1].message


def test_deleting_a_service_resolves_its_open_episodes_and_later_samples_are_ignored():
    watch, raised = feed([sample(T0, 0.9), sample(T0 + S, 0.9, connections=20), sample(T0 + 2 * S, 0.9, connections=20)])
    watch, failed = on_fact(watch, fact(4, "failed", T0 + 3 * S, reason="x"))
    watch, resolved = on_fact(watch, fact(7, "deleted", T0 + 4 * S))
    after, late = on_sample(watch, sample(T0 + 5 * S, 0.99, connections=20))

    assert [a.kind for a in raised + failed] == ["storage_high", "connections_high", "operation_failed"]
    assert sorted((a.kind, a.state) for a in resolved) == [
        ("connections_high", "resolved"), ("operation_failed", "resolved"), ("storage_high", "resolved")]
    assert all("deleted" in a.message for a in resolved)
    assert late == [] and after == watch and watch.open == {}


def test_facts_seen_again_change_nothing():
    watch, first = on_fact(None, fact(5, "failed", reason="x"))
    again, second = on_fact(watch, fact(5, "failed", reason="x"))
    assert len(first) == 1 and second == [] and again == watch


def test_the_watch_survives_its_json_form():
    watch, _ = feed([sample(T0, 0.9), sample(T0 + S, connections=20)])
    watch, _ = on_fact(watch, fact(3, "requested", name="orders"))
    assert ServiceWatch.from_json(json.loads(json.dumps(watch.to_json()))) == watch


# -- quota ------------------------------------------------------------------------------------------
def create(service_id: str, name: str, cpu: float = 1.0):
    return cmd(CreateService(service_id, name, "yugabyte", "frankfurt", "small", cpu=cpu, replicas=1))


def ids(n: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]


def test_quota_usage_is_the_highest_share_of_any_limit():
    quota = Quota(10, ResourceLimit(cpu=8.0, memory_gb=64, storage_gb=1000), {"yugabyte": ResourceLimit(4.0, 64, 1000)})
    state, _ = run([cmd(SetQuota(quota)), *[create(i, f"db{n}", cpu=1.0) for n, i in enumerate(ids(3))]],
                   run([cmd(CreateOrganization(TENANT, "Acme"))])[0])
    level, what = quota_usage(state.quota, state.usage)
    assert level == pytest.approx(0.75) and what == "3 of 4 vCPU for engine yugabyte"


def test_quota_over_90_percent_raises_and_below_85_resolves():
    quota = Quota(10, ResourceLimit(cpu=10.0, memory_gb=1000, storage_gb=100000))
    services = ids(10)
    steps = [cmd(CreateOrganization(TENANT, "Acme")), cmd(SetQuota(quota))]
    creates = [create(sid, f"db{n}") for n, sid in enumerate(services[:9])]
    steps += [*creates, *saga(services[0], op(creates[0])), cmd(DeleteService(services[0]))]
    state, envelopes = run(steps)
    watch, alerts = QuotaWatch(), []
    from events import TenantState, evolve
    folded = TenantState(TENANT)
    for env in envelopes:
        folded = evolve(folded, env)
        watch, out = on_tenant(watch, folded, env.occurred_at)
        alerts += out

    assert [(a.kind, a.state, a.service_id) for a in alerts] == [("quota_high", "raised", None)]
    assert "90% of its quota: 9 of 10 services" in alerts[0].message
    # the deletion waits for its PoP: the service still holds quota; once it is gone, 80 % < 85 %
    done = folded
    for env in run([*saga(services[0], op(steps[-1]), "Deleted")], done)[1]:
        done = evolve(done, env)
        watch, out = on_tenant(watch, done, env.occurred_at)
        alerts += out
    assert [a.state for a in alerts] == ["raised", "resolved"]
    assert alerts[0].alert_id == alerts[1].alert_id == alert_id(TENANT, None, "quota_high", alerts[0].raised_at)


def test_marks_publish_each_state_of_each_episode_once():
    _, (raised, resolved, second) = feed([sample(T0, 0.9), sample(T0 + S, 0.5), sample(T0 + 2 * S, 0.9)])
    assert past(None, raised)
    assert not past(list(mark_of(raised)), raised) and past(list(mark_of(raised)), resolved)
    assert not past(list(mark_of(resolved)), raised) and not past(list(mark_of(resolved)), resolved)
    assert past(list(mark_of(resolved)), second)


@pytest.mark.parametrize("n, text", [(0, "0 bytes"), (512, "512 bytes"), (1536, "1.5 KiB"),
                                     (2048, "2 KiB"), (15 * 2**20, "15 MiB"), (GIB, "1 GiB")])
def test_sizes_for_people(n, text):
    assert size(n) == text


# -- the processor over plain tables ----------------------------------------------------------------
class Published(list):
    def __call__(self, alert) -> None:
        self.append(alert)


def processor(tenants: dict, services: dict, envelopes: list, published: Published):
    return Processor(decode_event=lambda b: envelopes[int(b)], decode_sample=lambda b: json.loads(b, object_hook=_at),
                     keyring=None, publish=published, tenants=tenants, services=services)


def _at(d: dict) -> dict:
    if "sampled_at" in d:
        d["sampled_at"] = datetime.fromisoformat(d["sampled_at"])
    return d


def encoded(s: dict) -> bytes:
    return json.dumps({**s, "sampled_at": s["sampled_at"].isoformat()}).encode()


def fold(p: Processor, envelopes: list) -> list[Fact]:
    facts = []
    for offset in range(len(envelopes)):
        out, record = p.event(0, offset, str(offset).encode())
        facts += out
        record()
    return facts


def test_the_processor_publishes_nothing_twice_when_it_folds_the_log_again_after_a_restart():
    quota = Quota(2, ResourceLimit(cpu=100.0, memory_gb=1000, storage_gb=100000))
    a, b = ids(2)
    steps = [cmd(CreateOrganization(TENANT, "Acme")), cmd(SetQuota(quota)), create(a, "one"), create(b, "two")]
    state, envelopes = run(steps)
    _, more = run(saga(a, op(steps[2]), "Failed", reason="no capacity"), state)  # frees a's share of the quota
    envelopes += more
    tenants, services, published = {}, {}, Published()

    first = processor(tenants, services, envelopes, published)
    facts = fold(first, envelopes)
    assert [(f.service_id, f.what) for f in facts] == [(a, "failed")]  # a request forwards nothing
    for f in facts:
        first.fact(json.dumps(f.to_json()).encode())
    assert [(al.kind, al.state) for al in published] == [
        ("quota_high", "raised"), ("quota_high", "resolved"), ("operation_failed", "raised")]

    again = Published()
    restarted = processor(tenants, services, envelopes, again)
    watches = dict(services)
    refolded = fold(restarted, envelopes)  # the whole log again: same tables
    # facts are forwarded at least once: those forwarded again change no watch and publish nothing
    assert refolded == facts
    for f in refolded:
        restarted.fact(json.dumps(f.to_json()).encode())
    assert again == [] and services == watches


def test_a_restart_folds_what_was_committed_quietly_and_judges_what_follows():
    quota = Quota(2, ResourceLimit(cpu=100.0, memory_gb=1000, storage_gb=100000))
    a, b = ids(2)
    steps = [cmd(CreateOrganization(TENANT, "Acme")), cmd(SetQuota(quota)), create(a, "one"), create(b, "two"),
             cmd(DeleteService(a))]
    state, envelopes = run(steps)
    _, more = run(saga(a, op(steps[2])), state)  # the creation of `a` completes after the deletion was queued
    envelopes += more
    tenants, services, published = {}, {}, Published()
    fold(processor(tenants, services, envelopes[:-4], published), envelopes[:-4])
    assert [(al.kind, al.state) for al in published] == [("quota_high", "raised")]

    restarted = processor(tenants, services, envelopes, Published())
    for offset in range(len(envelopes) - 4):  # up to the committed offset: state only
        restarted.replay(0, offset, str(offset).encode())
    assert restarted.publish == [] and restarted.quota[TENANT].episode is not None
    for offset in range(len(envelopes) - 6, len(envelopes)):  # Faust resumes at most a little earlier
        _, record = restarted.event(0, offset, str(offset).encode())
        record()
    assert restarted.publish == []  # the quota episode goes on; nothing said twice


def test_the_processor_judges_each_sample_once_and_stores_the_watch():
    tenants, services, published = {}, {}, Published()
    p = processor(tenants, services, [], published)
    topic = f"dbaas.metrics.{TENANT}"
    for s in (sample(T0, 0.85), sample(T0, 0.85), sample(T0 + S, 0.5), sample(T0 + S, 0.5)):
        p.sample(topic, SVC.encode(), encoded(s), [])
    assert [(al.kind, al.state) for al in published] == [("storage_high", "raised"), ("storage_high", "resolved")]
    assert ServiceWatch.from_json(services[SVC]).last_sampled_at == T0 + S

    p.sample("dbaas.metrics.globex", SVC.encode(), encoded(sample(T0 + 2 * S, 0.99)), [])  # not its topic
    assert len(published) == 2


def test_the_processor_forwards_an_outcome_fact_and_judges_it_once_though_delivered_twice():
    steps = [cmd(CreateOrganization(TENANT, "Acme")), create(SVC, "orders")]
    state, envelopes = run(steps)
    state, more = run(saga(SVC, op(steps[-1]), "Failed", reason="no capacity"), state)
    envelopes += more
    tenants, services, published = {}, {}, Published()
    p = processor(tenants, services, envelopes, published)
    facts = fold(p, envelopes)
    assert [(f.what, f.name) for f in facts] == [("failed", "orders")]  # named from the fold
    assert [fact_of(e) is not None for e in envelopes].count(True) == 1
    for f in facts + facts:  # delivered twice
        p.fact(json.dumps(f.to_json()).encode())
    assert [(al.kind, al.state) for al in published] == [("operation_failed", "raised")]
    assert 'service "orders"' in published[0].message and "no capacity" in published[0].message


def test_an_organizations_entry_holds_its_quota_marks_only_whatever_its_services():
    """The entry is a changelog record written when a quota alert is published: it must not grow
    with the organization's services (an earlier version kept each forwarded sequence in it)."""
    quota = Quota(2, ResourceLimit(cpu=100.0, memory_gb=1000, storage_gb=100000))
    a, b = ids(2)
    steps = [cmd(CreateOrganization(TENANT, "Acme")), cmd(SetQuota(quota)), create(a, "one"), create(b, "two")]
    _, envelopes = run(steps)
    legacy = {"marks": {}, "forwarded": {str(i): 3 for i in range(1000)}}
    tenants, services, published = {TENANT: legacy}, {}, Published()
    facts = fold(processor(tenants, services, envelopes, published), envelopes)
    assert [al.kind for al in published] == ["quota_high"] and facts == []
    assert list(tenants[TENANT]) == ["marks"] and len(tenants[TENANT]["marks"]) == 1


def test_a_watch_made_by_a_sample_is_named_from_the_fold():
    steps = [cmd(CreateOrganization(TENANT, "Acme")), create(SVC, "orders")]
    _, envelopes = run(steps)
    tenants, services, published = {}, {}, Published()
    p = processor(tenants, services, envelopes, published)
    assert fold(p, envelopes) == [] and services == {}  # nothing forwarded, no watch yet
    p.sample(f"dbaas.metrics.{TENANT}", SVC.encode(), encoded(sample(T0, 0.85)), [])
    assert [(al.kind, al.state) for al in published] == [("storage_high", "raised")]
    assert published[0].message.startswith(f'service "orders" ({SVC}) uses 85%')
    assert ServiceWatch.from_json(services[SVC]).name == "orders"
