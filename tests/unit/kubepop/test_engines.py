"""Every engine operator's status, as the upstream CRD defines it, maps to Ready / Progressing /
Failed with a stable reason (operators.kubepop.engines), and the platform knows where each is
reached. One row per case, with why it matters."""
from __future__ import annotations

import pytest

from operators.kubepop import engines
from operators.kubepop.operator import conditions, outcome
from operators.localpop.plan import Record


def _obj(status=None, generation=2, name="orders-1a2b3c4d", namespace="tenant-acme"):
    obj = {"metadata": {"name": name, "namespace": namespace, "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def _scylla(available, progressing, degraded, observed=2):
    def c(t, v):
        return {"type": t, "status": v}
    return _obj({"observedGeneration": observed, "conditions": [c("Available", available), c("Progressing", progressing),
                                                               c("Degraded", degraded)]})


CASES = [
    # engine, resource, state, reason, why
    ("yugabyte", _obj({"universeState": "Ready"}), "Ready", "UniverseReady", "the universe says Ready"),
    ("yugabyte", _obj({"universeState": "Creating"}), "Progressing", "UniverseNotReady", "still creating"),
    ("yugabyte", _obj({"universeState": "Error creating universe"}), "Failed", "UniverseFailed", "an error state"),
    ("yugabyte", _obj(), "Progressing", "UniverseNotReady", "no status yet"),
    ("vitess", _obj({"observedGeneration": 2, "keyspaces": {"main": {"desiredShards": 1, "readyShards": 1,
                     "desiredTablets": 3, "readyTablets": 3}}, "cells": {"zone1": {"gatewayAvailable": "True"}}}),
     "Ready", "ClusterReady", "tablets and vtgate ready"),
    ("vitess", _obj({"observedGeneration": 2, "keyspaces": {"main": {"desiredShards": 1, "readyShards": 1,
                     "desiredTablets": 3, "readyTablets": 2}}, "cells": {"zone1": {"gatewayAvailable": "True"}}}),
     "Progressing", "TabletsNotReady", "a tablet short"),
    ("vitess", _obj({"observedGeneration": 2, "keyspaces": {"main": {"desiredTablets": 1, "readyTablets": 1}},
                     "cells": {"zone1": {"gatewayAvailable": "False"}}}),
     "Progressing", "GatewayUnavailable", "no vtgate"),
    ("vitess", _obj({"observedGeneration": 1, "keyspaces": {}}), "Progressing", "GenerationNotObserved",
     "an older spec was observed (a scale not yet seen)"),
    ("scylla", _scylla("True", "False", "False"), "Ready", "Available", "the CRD's rule for a finished rollout"),
    ("scylla", _scylla("True", "True", "False"), "Progressing", "RolloutInProgress", "still rolling out"),
    ("scylla", _scylla("False", "False", "True"), "Failed", "Degraded", "degraded"),
    ("scylla", _scylla("True", "False", "False", observed=1), "Progressing", "GenerationNotObserved",
     "available, but for the previous spec"),
    ("dragonfly", _obj({"phase": "ready"}), "Ready", "InstanceReady", "ready phase"),
    ("dragonfly", _obj({"phase": "ready", "isRollingUpdate": True}), "Progressing", "InstanceNotReady",
     "ready but rolling an update"),
    ("dragonfly", _obj({"phase": "resources-created"}), "Progressing", "InstanceNotReady", "not configured yet"),
    ("aerospike", _obj({"phase": "Completed"}), "Ready", "ReconcileCompleted", "phase enum Completed"),
    ("aerospike", _obj({"phase": "InProgress"}), "Progressing", "ReconcileInProgress", "phase enum InProgress"),
    ("aerospike", _obj({"phase": "Error"}), "Failed", "ReconcileError", "phase enum Error"),
    ("mongodb", _obj({"phase": "Running"}), "Ready", "ReplicaSetRunning", "phase Running"),
    ("mongodb", _obj({"phase": "Pending", "message": "waiting for members"}), "Progressing", "ReplicaSetPending",
     "phase Pending"),
    ("mongodb", _obj({"phase": "Failed", "message": "bad config"}), "Failed", "ReplicaSetFailed", "phase Failed"),
]


@pytest.mark.parametrize("engine, obj, state, reason, why", CASES, ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_engine_status_maps_to_a_state_with_a_stable_reason(engine, obj, state, reason, why):
    verdict = engines.assess(engine, obj)
    assert (verdict.state, verdict.reason) == (state, reason), why


def test_every_engine_is_mapped_and_a_missing_resource_is_progressing():
    assert set(engines.ASSESS) == set(engines.ENGINES) == {"yugabyte", "vitess", "scylla", "dragonfly",
                                                            "aerospike", "mongodb"}
    assert {c[0] for c in CASES} == set(engines.ENGINES)
    for engine in engines.ENGINES:
        assert engines.assess(engine, None).reason == "EngineResourceMissing"


@pytest.mark.parametrize("engine, status, endpoint", [
    ("scylla", {}, "orders-1a2b3c4d-client.tenant-acme.svc:9042"),
    ("vitess", {"gatewayServiceName": "orders-vtgate-abc"}, "orders-vtgate-abc.tenant-acme.svc:3306"),
    ("yugabyte", {"sqlEndpoints": ["yb-tserver.tenant-acme.svc:5433"]}, "yb-tserver.tenant-acme.svc:5433"),
    ("dragonfly", {}, "orders-1a2b3c4d.tenant-acme.svc:6379"),
    ("aerospike", {}, "orders-1a2b3c4d.tenant-acme.svc:3000"),
    ("mongodb", {}, "orders-1a2b3c4d-svc.tenant-acme.svc:27017"),
])
def test_each_engine_is_reached_where_its_operator_exposes_it(engine, status, endpoint):
    assert engines.endpoint(engine, _obj(status)) == endpoint


def _record(op="op-1", action="apply", phase="Ready"):
    return Record(path="ns/n", tenant="acme", service_id="s", name="n", engine="scylla", action=action,
                  operation_id=op, correlation_id=None, commit="", phase=phase, observed_at="2026-01-01T00:00:00")


@pytest.mark.parametrize("previous, op, state, expected, why", [
    (None, "op-1", "Ready", "Ready", "first outcome of an operation is recorded"),
    (None, "op-1", "Progressing", None, "nothing to report while progressing"),
    (_record(), "op-1", "Ready", None, "one report per operation: a Ready again changes nothing"),
    (_record(phase="Failed"), "op-1", "Ready", None, "the first outcome stands (the platform compensates)"),
    (_record(), "op-2", "Ready", "Ready", "a new operation (a scale) is reported again"),
    (_record(), "op-2", "Failed", "Failed", "a failed scale is reported"),
])
def test_one_outcome_is_recorded_per_operation(previous, op, state, expected, why):
    assert outcome(previous, op, engines.Assessment(state, "R", "m")) == expected, why


def test_conditions_are_synced_and_ready_without_times():
    conds = conditions(True, engines.Assessment("Ready", "Available", "ok"), 3)
    assert conds == [{"type": "Synced", "status": "True", "reason": "EngineResourceFound",
                      "message": "the engine resource exists", "observedGeneration": 3},
                     {"type": "Ready", "status": "True", "reason": "Available", "message": "ok",
                      "observedGeneration": 3}]
    missing = conditions(False, engines.assess("scylla", None), 1)
    assert [(c["status"], c["reason"]) for c in missing] == [("False", "EngineResourceMissing"),
                                                            ("False", "EngineResourceMissing")]
