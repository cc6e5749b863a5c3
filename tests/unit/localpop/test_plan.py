"""The local PoP agent's pure core: desired services from claims, the converging steps, the
outcomes recorded and the reports they stand for. Given/when/then tables with a reason per case."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from operators.localpop import plan as core
from operators.localpop.claims import Claim, CommitRef, History
from operators.localpop.plan import Apply, Desired, Forget, Record, Remove, Resend

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OFFERED = ("yugabyte", "vitess", "dragonfly")
P1, P2 = "tenants/acme/local/orders.yaml", "tenants/acme/local/cache.yaml"


def desired(key_suffix: str = "1", op: str = "op-1", engine: str = "yugabyte", path: str = P1, **kw) -> Desired:
    return Desired(path=path, tenant="acme", service_id=f"svc-{key_suffix}", name="orders", engine=engine,
                   operation_id=op, correlation_id="corr", commit="c1", **kw)


def record(key_suffix: str = "1", op: str = "op-1", *, action: str = "apply", phase: str = "Ready",
           reported: bool = True, path: str = P1, engine: str = "yugabyte") -> Record:
    return Record(path=path, tenant="acme", service_id=f"svc-{key_suffix}", name="orders", engine=engine,
                  action=action, operation_id=op, correlation_id="corr", commit="c1", phase=phase,
                  observed_at=NOW.isoformat(), endpoint="127.0.0.1:5432" if phase == "Ready" else None,
                  provisioned=phase == "Ready", reported=reported)


def by_key(*items):
    return {i.key: i for i in items}


@pytest.mark.parametrize("want, have, unreadable, expected", [
    ([desired()], [], set(), [Apply]),
    ([desired(op="op-2")], [record()], set(), [Apply]),
    ([desired()], [record()], set(), []),
    ([desired()], [record(reported=False)], set(), [Resend]),
    ([desired()], [record(phase="Failed")], set(), []),
    ([], [record()], set(), [Remove]),
    ([], [record(phase="Failed")], set(), [Remove]),
    ([], [record()], {P1}, []),
    ([], [record(op="op-9", action="delete", phase="Deleted", reported=False)], set(), [Resend]),
    ([], [record(op="op-9", action="delete", phase="Deleted")], set(), [Forget]),
    ([desired(op="op-3")], [record(op="op-2", action="delete", phase="Deleted")], set(), [Apply]),
    ([desired("2", path=P1, op="op-5")], [record("1", path=P1)], set(), [Remove, Apply]),
], ids=[
    "a new claim is applied",
    "a new operation on an applied service is applied",
    "a handled and acknowledged operation needs nothing",
    "a handled operation without acknowledgement is re-sent",
    "a permanent failure is not retried until the next operation",
    "a vanished file is removed",
    "a vanished file of a failed service is removed (and reported Deleted)",
    "an unreadable file never removes what was applied from it",
    "an unacknowledged removal is re-sent",
    "an acknowledged removal is forgotten",
    "a service re-added after its removal is applied",
    "a path now holding another service removes the old one first",
])
def test_plan(want, have, unreadable, expected):
    steps = core.plan(by_key(*want), by_key(*have), unreadable)
    assert [type(s) for s in steps] == expected


def test_desired_services_refuse_what_pop_local_cannot_run_and_skip_unreadable_files():
    history = History({P1: CommitRef("c1", "op-1", "k1", "A"), P2: CommitRef("c2", None, None, "A"),
                       "tenants/acme/local/bad.yaml": CommitRef("c3", "op-3", None, "A"),
                       "tenants/evil/local/x.yaml": CommitRef("c4", "op-4", None, "A")}, {})
    claims = {
        P1: Claim("acme", "svc-1", "orders", "scylla", "local"),
        P2: Claim("acme", "svc-2", "cache", "dragonfly", "local"),
        "tenants/acme/local/bad.yaml": "not valid YAML",
        "tenants/evil/local/x.yaml": Claim("acme", "svc-3", "x", "vitess", "local"),
    }
    tenants = {path: path.split("/")[1] for path in claims}
    want, unreadable, problems = core.desired_services(claims, history, "local", OFFERED, tenants)
    assert unreadable == {"tenants/acme/local/bad.yaml"} and problems == [("tenants/acme/local/bad.yaml",
                                                                           "not valid YAML")]
    scylla, cache, foreign = want["acme/svc-1"], want["acme/svc-2"], want["acme/svc-3"]
    assert 'engine "scylla" has no local server' in scylla.problem
    assert "PoP local offers yugabyte, vitess, dragonfly" in scylla.problem
    assert (scylla.operation_id, scylla.correlation_id, scylla.reportable) == ("op-1", "k1", True)
    assert cache.problem is None and cache.operation_id == "commit:c2" and not cache.reportable
    assert "folder of tenant 'evil'" in foreign.problem


@pytest.mark.parametrize("engine, text", [
    ("yugabyte", None),
    ("mongodb", 'engine "mongodb" has no local server: PoP local offers yugabyte, vitess, dragonfly'),
    ("mysql", 'engine "mysql" is unknown: PoP local offers yugabyte, vitess, dragonfly'),
    ("", "names no engine; PoP local offers yugabyte, vitess, dragonfly"),
])
def test_refusals_name_what_the_pop_offers(engine, text):
    reason = core.refusal(engine, "local", OFFERED)
    assert reason is None if text is None else text in reason


def test_a_report_id_is_the_same_for_the_same_operation_and_phase_only():
    assert core.report_id("op-1", "Ready") == core.report_id("op-1", "Ready")
    assert len({core.report_id("op-1", "Ready"), core.report_id("op-1", "Failed"),
                core.report_id("op-2", "Ready")}) == 3
    assert uuid.UUID(core.report_id("op-1", "Ready")).version == 5


def test_outcomes_become_reports_without_credentials_unless_ready():
    ok = core.ready(desired(), "127.0.0.1:15432", NOW)
    assert (ok.phase, ok.provisioned, ok.reported) == ("Ready", True, False)
    r = core.report(ok, "local", "token")
    assert r == {"report_id": core.report_id("op-1", "Ready"), "pop": "local", "tenant_id": "acme",
                 "service_id": "svc-1", "operation_id": "op-1", "phase": "Ready", "endpoint": "127.0.0.1:15432",
                 "reason": None, "credentials": "token", "observed_at": NOW}
    bad = core.failed(desired(engine="scylla"), "no server", NOW, provisioned=False)
    assert core.report(bad, "local", "token")["credentials"] is None
    silent = core.ready(desired(reportable=False), "h:1", NOW)
    assert silent.reported  # nobody to tell: nothing waits for an acknowledgement


def test_a_removal_reports_the_deleting_commits_operation():
    applied = record()
    history = History({P1: CommitRef("c9", "op-9", "k9", "D")}, {P1: CommitRef("c9", "op-9", "k9", "D")})
    commit = core.removal(applied, history, "tip")
    gone = core.deleted(applied, commit, NOW)
    assert (gone.action, gone.phase, gone.operation_id, gone.correlation_id, gone.endpoint, gone.provisioned,
            gone.reported) == ("delete", "Deleted", "op-9", "k9", None, False, False)
    stuck = core.delete_failed(applied, commit, "server refused", NOW)
    assert (stuck.phase, stuck.reason, stuck.provisioned) == ("Failed", "server refused", True)
    assert core.removal(applied, History({}, {}), "tip") == CommitRef("tip", None, None, "D")


def test_records_round_trip_through_json_and_count_per_engine():
    records = by_key(record("1"), record("2", engine="vitess"), record("3", phase="Failed"),
                     record("4", action="delete", phase="Deleted"))
    assert {k: Record.from_json(v.to_json()) for k, v in records.items()} == records
    assert core.applied_per_engine(records) == {"yugabyte": 1, "vitess": 1}
