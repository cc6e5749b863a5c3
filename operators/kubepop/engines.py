"""How the PoP operator judges each engine operator's resource: one mapping per engine from the
status fields of the upstream CRD (``deploy/crds/engines``, see its SOURCES.md) to one of
``Ready``, ``Progressing`` or ``Failed`` with a stable CamelCase reason, plus where a service of
that engine is reached.

| engine | resource | Ready when | Failed when | source of the fields |
|---|---|---|---|---|
| yugabyte | YBUniverse | ``status.universeState`` is ``Ready`` | ``universeState`` names an error or failure | yugabyte-k8s-operator CRD: ``universeState`` ("Ready", "Creating", "Editing", "Deleting"), ``sqlEndpoints`` |
| vitess | VitessCluster | observed generation current, every keyspace's ``readyShards``/``readyTablets`` equal the desired ones and every cell's ``gatewayAvailable`` is ``True`` | never: the CRD has no failure state (a stuck cluster times out in the saga) | vitess-operator CRD: ``observedGeneration``, ``keyspaces.*``, ``cells.*.gatewayAvailable``, ``gatewayServiceName`` |
| scylla | ScyllaCluster | observed generation current and conditions ``Available=True``, ``Progressing=False``, ``Degraded=False`` (the CRD's own rule for a finished rollout) | ``Degraded=True`` with the generation observed | scylla-operator CRD: ``observedGeneration``, ``conditions`` |
| dragonfly | Dragonfly | ``status.phase`` is ``ready`` and no rolling update | never: the CRD's phases are ready, configuring-replication, resources-created | dragonfly-operator CRD: ``phase``, ``isRollingUpdate`` |
| aerospike | AerospikeCluster | ``status.phase`` is ``Completed`` | ``phase`` is ``Error`` | aerospike-kubernetes-operator CRD: ``phase`` enum InProgress, Completed, Error |
| mongodb | MongoDBCommunity | ``status.phase`` is ``Running`` | ``phase`` is ``Failed`` (``message`` says why) | mongodb-kubernetes CRD: ``phase``, ``message``, ``mongoUri`` |

A resource without status (the engine operator has not seen it yet) is ``Progressing``.

Pure: no I/O. May import: the standard library.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["Ready", "Progressing", "Failed"]


@dataclass(frozen=True)
class Engine:
    api_version: str
    kind: str
    plural: str
    port: int
    username: str
    secret_key: str  # the credentials Secret's key the engine resource reads its password from


ENGINES: dict[str, Engine] = {
    "yugabyte": Engine("operator.yugabyte.io/v1alpha1", "YBUniverse", "ybuniverses", 5433, "yugabyte",
                       "ysqlPassword"),
    "vitess": Engine("planetscale.com/v2", "VitessCluster", "vitessclusters", 3306, "dbaas", "password"),
    "scylla": Engine("scylla.scylladb.com/v1", "ScyllaCluster", "scyllaclusters", 9042, "cassandra", "password"),
    "dragonfly": Engine("dragonflydb.io/v1alpha1", "Dragonfly", "dragonflies", 6379, "default", "password"),
    "aerospike": Engine("asdb.aerospike.com/v1", "AerospikeCluster", "aerospikeclusters", 3000, "admin", "password"),
    "mongodb": Engine("mongodbcommunity.mongodb.com/v1", "MongoDBCommunity", "mongodbcommunity", 27017, "dbaas",
                      "password"),
}


@dataclass(frozen=True)
class Assessment:
    state: State
    reason: str  # stable, CamelCase
    message: str


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}


def _generation_observed(obj: Mapping[str, Any]) -> bool:
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    return generation is None or (observed is not None and observed >= generation)


def _yugabyte(obj: Mapping[str, Any]) -> Assessment:
    state = str((obj.get("status") or {}).get("universeState") or "")
    if state == "Ready":
        return Assessment("Ready", "UniverseReady", "the universe is Ready")
    if "error" in state.lower() or "fail" in state.lower():
        return Assessment("Failed", "UniverseFailed", f"the universe is {state}")
    return Assessment("Progressing", "UniverseNotReady", f"the universe is {state or 'not reported yet'}")


def _vitess(obj: Mapping[str, Any]) -> Assessment:
    status = obj.get("status") or {}
    if not _generation_observed(obj) or not status:
        return Assessment("Progressing", "GenerationNotObserved", "the operator has not observed this spec yet")
    keyspaces = status.get("keyspaces") or {}
    for name, ks in sorted(keyspaces.items()):
        if (ks.get("readyShards") or 0) < (ks.get("desiredShards") or 0) or (
                ks.get("readyTablets") or 0) < (ks.get("desiredTablets") or 0):
            return Assessment("Progressing", "TabletsNotReady",
                              f"keyspace {name}: {ks.get('readyTablets') or 0}/{ks.get('desiredTablets') or 0} "
                              "tablets ready")
    cells = status.get("cells") or {}
    if not keyspaces or not cells or any(c.get("gatewayAvailable") != "True" for c in cells.values()):
        return Assessment("Progressing", "GatewayUnavailable", "no vtgate is available in every cell yet")
    return Assessment("Ready", "ClusterReady", "every keyspace's tablets are ready and vtgate is available")


def _scylla(obj: Mapping[str, Any]) -> Assessment:
    conds = _conditions(obj.get("status") or {})
    if not _generation_observed(obj) or not conds:
        return Assessment("Progressing", "GenerationNotObserved", "the operator has not observed this spec yet")
    if conds.get("Degraded", {}).get("status") == "True":
        return Assessment("Failed", "Degraded", conds["Degraded"].get("message") or "the cluster is degraded")
    if (conds.get("Available", {}).get("status") == "True" and conds.get("Progressing", {}).get("status") == "False"):
        return Assessment("Ready", "Available", "the cluster is available and its rollout finished")
    return Assessment("Progressing", "RolloutInProgress",
                      conds.get("Progressing", {}).get("message") or "the rollout is in progress")


def _dragonfly(obj: Mapping[str, Any]) -> Assessment:
    status = obj.get("status") or {}
    phase = status.get("phase") or ""
    if phase == "ready" and not status.get("isRollingUpdate"):
        return Assessment("Ready", "InstanceReady", "the instance is ready to serve requests")
    return Assessment("Progressing", "InstanceNotReady", f"the instance is {phase or 'not reported yet'}"
                      + (" (rolling update)" if status.get("isRollingUpdate") else ""))


def _aerospike(obj: Mapping[str, Any]) -> Assessment:
    phase = (obj.get("status") or {}).get("phase") or ""
    if phase == "Completed":
        return Assessment("Ready", "ReconcileCompleted", "the cluster is reconciled")
    if phase == "Error":
        return Assessment("Failed", "ReconcileError", "the operator reports an error reconciling the cluster")
    return Assessment("Progressing", "ReconcileInProgress", f"the cluster is {phase or 'not reported yet'}")


def _mongodb(obj: Mapping[str, Any]) -> Assessment:
    status = obj.get("status") or {}
    phase = status.get("phase") or ""
    if phase == "Running":
        return Assessment("Ready", "ReplicaSetRunning", "the replica set is running")
    if phase == "Failed":
        return Assessment("Failed", "ReplicaSetFailed", status.get("message") or "the replica set failed")
    return Assessment("Progressing", "ReplicaSetPending", status.get("message") or f"the replica set is "
                      f"{phase or 'not reported yet'}")


ASSESS = {"yugabyte": _yugabyte, "vitess": _vitess, "scylla": _scylla, "dragonfly": _dragonfly,
          "aerospike": _aerospike, "mongodb": _mongodb}


def assess(engine: str, obj: Mapping[str, Any] | None) -> Assessment:
    """The state of ``engine``'s resource ``obj`` (None: it does not exist yet)."""
    if obj is None:
        return Assessment("Progressing", "EngineResourceMissing", "the engine resource does not exist yet")
    return ASSESS[engine](obj)


def endpoint(engine: str, obj: Mapping[str, Any]) -> str:
    """``host:port`` a tenant's clients reach the service at, inside the PoP's cluster network."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    name, namespace, port = meta.get("name", ""), meta.get("namespace", ""), ENGINES[engine].port
    if engine == "yugabyte" and status.get("sqlEndpoints"):
        return str(status["sqlEndpoints"][0])
    service = {"scylla": f"{name}-client", "vitess": status.get("gatewayServiceName") or f"{name}-vtgate",
               "mongodb": f"{name}-svc"}.get(engine, name)
    return f"{service}.{namespace}.svc:{port}"
