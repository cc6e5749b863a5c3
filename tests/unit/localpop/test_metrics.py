"""The local PoP's service metrics (`operators.localpop.metrics`): rates from counter differences,
the records a reading becomes, limits, the Redis key tally's estimates, the claim's storage, and a
round of samples over fake samplers and a fake publisher."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from operators.localpop.claims import parse_claim, storage_quantity
from operators.localpop.metrics import (
    KeyTally,
    Rates,
    Reading,
    ServiceMetrics,
    Target,
    effective_limit,
    per_second,
    record,
    scaled_limit,
)
from operators.localpop.provisioners import ServerUnavailable, service_identifier

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=15)


@pytest.mark.parametrize("previous, value, at, expected", [
    (None, 100, T0, None),  # the first reading: no rate yet
    ((T0, 100), 250, T0 + S, 10.0),  # 150 in 15 s
    ((T0, 100), 100, T0 + S, 0.0),
    ((T0, 100), 40, T0 + S, None),  # went backwards: a restart or a reset of the statistics
    ((T0, 100), 200, T0, None),  # no time passed
    ((T0, 100), None, T0 + S, None),  # not measured
])
def test_rates_come_from_the_difference_of_two_readings(previous, value, at, expected):
    assert per_second(previous, value, at) == expected


def test_rates_per_service_and_counter_start_again_after_a_reset():
    rates = Rates()
    assert rates.rate("a", "tx", 1000, T0) is None
    assert rates.rate("b", "tx", 5, T0) is None
    assert rates.rate("a", "tx", 1300, T0 + S) == 20.0
    assert rates.rate("a", "tx", 10, T0 + 2 * S) is None  # reset: the new value is the next base
    assert rates.rate("a", "tx", 25, T0 + 3 * S) == 1.0
    rates.keep_only(["b"])
    assert rates.rate("a", "tx", 40, T0 + 4 * S) is None  # forgotten
    assert rates.rate("b", "tx", 65, T0 + 4 * S) == 1.0


def test_a_reading_becomes_a_service_metrics_record():
    rates = Rates()
    target = Target("acme", "svc-1", "yugabyte", 32 * 2**20)
    first = record(target, Reading(3, 8_000_000, 20, transactions=500), "local", T0, rates)
    second = record(target, Reading(4, 9_000_000, 20, transactions=800), "local", T0 + S, rates)
    assert first == {"tenant_id": "acme", "service_id": "svc-1", "engine": "yugabyte", "pop": "local",
                     "sampled_at": T0, "connections": 3, "max_connections": 20, "transactions_per_s": None,
                     "ops_per_s": None, "storage_bytes": 8_000_000, "storage_limit_bytes": 32 * 2**20,
                     "storage_estimated": False, "keys": None}
    assert second["transactions_per_s"] == 20.0 and second["ops_per_s"] is None


def test_limits():
    assert scaled_limit(10 * 2**30, 1.0) == 10 * 2**30
    assert scaled_limit(2**30, 1 / 32) == 32 * 2**20
    assert scaled_limit(None, 0.5) is None
    assert effective_limit(20, 197) == 20  # the role's limit under the server's
    assert effective_limit(-1, 197) == 197  # PostgreSQL's -1: no limit of its own
    assert effective_limit(0, None) is None


@pytest.mark.parametrize("text, expected", [("10Gi", 10 * 2**30), ("500Mi", 500 * 2**20), ("1.5Gi", 3 * 2**29),
                                            ("2G", 2 * 10**9), ("1073741824", 2**30), ("ten", None), (None, None)])
def test_storage_quantities(text, expected):
    assert storage_quantity(text) == expected


def test_a_claim_carries_its_storage():
    text = """\
apiVersion: dbaas.io/v1alpha1
kind: ServiceClaim
metadata: {name: orders}
spec: {tenant: acme, serviceId: s1, name: orders, engine: yugabyte, pop: local,
       resources: {cpu: "1", memory: 2Gi, storage: 1Gi}}
"""
    assert parse_claim(text).storage_bytes == 2**30
    assert parse_claim(text.replace("storage: 1Gi", "storage: lots")).storage_bytes is None


def test_the_key_tally_counts_by_prefix_and_extrapolates_what_it_did_not_visit():
    a, b = service_identifier("acme", "a"), service_identifier("acme", "b")
    tally = KeyTally([a, b], sample_keys=2)
    for i in range(4):
        tally.see(0, f"{a}:k{i}")
    tally.see(0, f"{b}:k0")
    tally.see(0, "s_other:k")  # another service's, not asked for
    tally.see(0, "noprefix")
    tally.scanned(0, complete=True, visited=7, size=7)
    tally.see(1, f"{a}:x")
    tally.scanned(1, complete=False, visited=10, size=40)  # a quarter of db1 visited: its count x4
    measure = tally.to_measure(0)
    assert measure == {a: [f"{a}:k0", f"{a}:k1"], b: [f"{b}:k0"]}
    tally.measured(a, [100, 300])
    tally.measured(b, [50])
    assert tally.result(b) == (1, 50, False)
    keys, size, estimated = tally.result(a)
    assert (keys, estimated) == (8, True)  # 4 in db0, 1 seen in a quarter of db1
    assert size == 200 * 8  # 200 bytes a key on average, times the keys


class FakeSampler:
    def __init__(self, readings=None, error=None):
        self.readings, self.error, self.asked = readings or {}, error, []

    def read(self, targets):
        self.asked.append([t.service_id for t in targets])
        if self.error:
            raise self.error
        return {sid: r for sid, r in self.readings.items() if sid in {t.service_id for t in targets}}


class FakePublisher:
    def __init__(self):
        self.records = []

    def publish(self, records):
        self.records += records
        return len(records)

    def close(self):
        pass


def test_a_round_samples_each_engine_once_and_skips_a_server_that_does_not_answer():
    pg = FakeSampler({"p1": Reading(1, 10), "p2": Reading(2, 20)})
    redis = FakeSampler(error=ServerUnavailable("Redis at 127.0.0.1:6379 is not reachable"))
    out = FakePublisher()
    round_ = ServiceMetrics({"yugabyte": pg, "dragonfly": redis}, out, "local", 15, lambda: T0)
    targets = [Target("acme", "p1", "yugabyte", 100), Target("acme", "p2", "yugabyte"),
               Target("acme", "r1", "dragonfly"), Target("acme", "m1", "vitess")]  # vitess: no sampler
    assert round_.sample(targets) == 2
    assert pg.asked == [["p1", "p2"]] and redis.asked == [["r1"]]
    assert [(r["service_id"], r["storage_bytes"], r["storage_limit_bytes"]) for r in out.records] == [
        ("p1", 10, 100), ("p2", 20, None)]


def test_rounds_are_paced_by_the_interval():
    out = FakePublisher()
    round_ = ServiceMetrics({"yugabyte": FakeSampler({"p1": Reading(1, 10)})}, out, "local", 3600, lambda: T0)
    assert round_.maybe_sample([Target("acme", "p1", "yugabyte")]) == 1
    assert round_.maybe_sample([Target("acme", "p1", "yugabyte")]) is None
    assert ServiceMetrics({}, out, "local", 0, lambda: T0).maybe_sample([]) is None  # 0: no metrics
