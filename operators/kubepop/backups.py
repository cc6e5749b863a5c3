"""How the PoP operator judges a ``DatabaseBackup`` (``dbaas.io/v1alpha1``, chart ``dbaas-backup``)
and the engine operator's own backup resource rendered with it, and what it reports: the records
and report shape are the local PoP's (``operators.localpop.backupplan``: ``WantedBackup``,
``BackupRecord``, ``taken`` / ``take_failed`` / ``dropped`` and ``report``), so a backup in a
Kubernetes PoP reaches the control plane exactly as one in PoP local does.

| engine | engine resource | Completed when | Failed when | source of the fields |
|---|---|---|---|---|
| yugabyte | Backup (``operator.yugabyte.io/v1alpha1``, same name as the DatabaseBackup) | ``status.message`` is ``Backup State: Completed`` | ``Backup State: Failed``, ``Stopped`` or ``Skipped`` | yugabyte-k8s-operator CRD ``backups.operator.yugabyte.io``: status has only ``message``, ``resourceUUID``, ``taskUUID``; YBA's operator status updater writes ``message`` as ``"Backup State: " + Backup.BackupState`` (InProgress, Completed, Failed, Skipped, Stopped, Stopping, Deleted, DeleteInProgress, QueuedForDeletion, FailedToDelete) and ``resourceUUID`` as YBA's backup UUID |
| vitess, scylla, dragonfly, aerospike, mongodb | none | never | at once, reason ``Unsupported`` | their operators have no one-shot backup kind (``docs/backups.md``): nothing in the cluster would take the backup, so it fails promptly instead of timing out |

Any other ``Backup State`` (or none yet) is ``Progressing``. A Completed report's details are what
``commands.decide`` reads (``taken_at``, ``size_bytes``, ``location``, ``dek_id``, ``kek_id``,
``consistency``, ``tables``): the time the operator saw the backup complete, the
DatabaseBackup's destination (``s3://bucket/prefix``), size 0 (YBA does not publish one in the
resource), the data-key ids of ``spec.encryption`` (empty: YBA seals with the object store's
server-side encryption, ``Backup.spec.sse``) and the engine backup's identity under
``consistency``.

Pure: no I/O, no clock. May import: the standard library and ``operators.localpop``'s pure modules.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from operators.localpop.backupplan import WantedBackup

GROUP, VERSION, PLURAL = "dbaas.io", "v1alpha1", "databasebackups"
YB_BACKUP = ("operator.yugabyte.io", "v1alpha1", "backups")
ENGINE_BACKUPS = {"yugabyte": YB_BACKUP}  # the engines whose operator takes a one-shot backup

State = Literal["Completed", "Progressing", "Failed"]
YB_COMPLETED = {"Completed"}
YB_FAILED = {"Failed", "Stopped", "Skipped"}
YB_PREFIX = "Backup State: "


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str  # stable, CamelCase
    message: str


def assess_yugabyte(obj: Mapping[str, Any] | None) -> Verdict:
    """The state of YugabyteDB's Backup resource ``obj`` (None: it does not exist yet)."""
    if obj is None:
        return Verdict("Progressing", "EngineBackupMissing", "the engine's Backup resource does not exist yet")
    message = str((obj.get("status") or {}).get("message") or "")
    state = message[len(YB_PREFIX):].strip() if message.startswith(YB_PREFIX) else ""
    if state in YB_COMPLETED:
        return Verdict("Completed", "BackupCompleted", "YugabyteDB Anywhere completed the backup")
    if state in YB_FAILED:
        return Verdict("Failed", f"Backup{state}", f"YugabyteDB Anywhere reports the backup {state}")
    return Verdict("Progressing", "BackupInProgress", f"the backup is {state or message or 'not reported yet'}")


def assess(engine: str, engine_backup: Mapping[str, Any] | None) -> Verdict:
    """The state of a backup of an ``engine`` service, from the engine's backup resource."""
    if engine == "yugabyte":
        return assess_yugabyte(engine_backup)
    return Verdict("Failed", "Unsupported", f"{engine} backups are not taken in Kubernetes PoPs: its operator "
                   "has no one-shot backup resource (docs/backups.md)")


def wanted(obj: Mapping[str, Any], operation_id: str, pop: str) -> WantedBackup:
    """The local PoP's view of a DatabaseBackup, so its record and report are built the same way."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    labels = meta.get("labels") or {}
    problem = None
    if labels.get("dbaas.io/pop") not in (None, pop):
        problem = f"the DatabaseBackup is for PoP {labels['dbaas.io/pop']!r} but was applied in PoP {pop!r}"
    return WantedBackup(path=f"{meta.get('namespace')}/{meta.get('name')}", tenant=str(spec.get("tenant", "")),
                        backup_id=str(spec.get("backupId", "")),
                        service_id=str(labels.get("dbaas.io/service-id", "")), engine=str(spec.get("engine", "")),
                        pitr=bool(spec.get("pitr")), operation_id=operation_id, correlation_id=None, commit="",
                        problem=problem)


def location(spec: Mapping[str, Any]) -> str:
    dest = spec.get("destination") or {}
    if dest.get("bucket"):
        prefix = str(dest.get("prefix") or "").strip("/")
        return f"s3://{dest['bucket']}/{prefix}" if prefix else f"s3://{dest['bucket']}"
    return f"file://{dest.get('path', '')}"


def details(obj: Mapping[str, Any], engine_backup: Mapping[str, Any] | None, now: datetime) -> str:
    """The Completed report's details (JSON) for DatabaseBackup ``obj``."""
    spec = obj.get("spec") or {}
    enc = spec.get("encryption") or {}
    consistency: dict[str, Any] = {"method": "engine-operator"}
    if engine_backup is not None:
        em = engine_backup.get("metadata") or {}
        consistency["engine_backup"] = f"{engine_backup.get('apiVersion')}/{engine_backup.get('kind')} {em.get('name')}"
        uuid = (engine_backup.get("status") or {}).get("resourceUUID")
        if uuid:
            consistency["engine_backup_uuid"] = uuid
    return json.dumps({"taken_at": now.isoformat(), "size_bytes": 0, "location": location(spec),
                       "dek_id": enc.get("keyId", ""), "kek_id": enc.get("kekId", ""),
                       "consistency": consistency, "tables": {}}, sort_keys=True)


def status(verdict: Verdict, generation: int | None, at: str, loc: str | None) -> dict[str, Any]:
    """The DatabaseBackup's ``status``: its phase and one ``Ready`` condition (no times but ``at``)."""
    phase = {"Completed": "Completed", "Failed": "Failed", "Progressing": "Running"}[verdict.state]
    cond: dict[str, Any] = {"type": "Ready", "status": "True" if verdict.state == "Completed" else "False",
                            "reason": verdict.reason, "message": verdict.message}
    out: dict[str, Any] = {"phase": phase, "conditions": [cond]}
    if generation is not None:
        out["observedGeneration"] = generation
        cond["observedGeneration"] = generation
    if verdict.state == "Completed":
        out["completedAt"] = at
        if loc:
            out["location"] = loc
    return out
