"""The `backups` read model: one row per backup of a service, from the events of its aggregate
("backup", backup id).

`status` is what the events say the backup is (Requested, Completed, Failed, Deleting, Deleted;
`BackupFailed` carries the status it leaves: Failed, or Completed when a deletion failed) and
`step` the steps done of the operation in flight on it (1 rendered, 2 committed, 3 ended): the
render of a backup's own claim and the render of its deletion are the same event, so "Running" is
read, not stored — a Requested backup with a step done (`projections.queries.backup_status`).
`operation_id` is the operation that took the backup, `deletion_operation_id` the last one asked
to delete it. Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

import json
from typing import Any

from events import (
    BackupClaimCommitted,
    BackupClaimRendered,
    BackupCompleted,
    BackupDeleted,
    BackupDeletionRequested,
    BackupFailed,
    BackupRequested,
    BackupStatus,
    Envelope,
)
from projections.projectors import Change, Handler

NAME = "backups"


def _requested(env: Envelope) -> Change:
    e: BackupRequested = env.payload  # type: ignore[assignment]
    return Change(e.backup_id, env.sequence, {
        "tenant_id": env.tenant_id,
        "service_id": e.service_id,
        "service_name": e.service_name,
        "engine": e.engine,
        "pop": e.pop,
        "status": BackupStatus.REQUESTED.value,
        "step": 0,
        "slot": e.slot,
        "pitr": e.pitr,
        "operation_id": e.operation_id,
        "deletion_operation_id": None,
        "requested_at": env.occurred_at,
        "taken_at": None,
        "pitr_from": None,
        "size_bytes": None,
        "location": None,
        "dek_id": None,
        "kek_id": None,
        "consistency": None,
        "tables": None,
        "reason": None,
        "deletion_reason": None,
        "created_at": env.occurred_at,
        "updated_at": env.occurred_at,
    }, creates=True)


def _step(env: Envelope, step: int, **values: Any) -> Change:
    return Change(env.payload.backup_id, env.sequence,  # type: ignore[union-attr]
                  {"step": step, "updated_at": env.occurred_at, **values})


def _rendered(env: Envelope) -> Change:
    return _step(env, 1)


def _committed(env: Envelope) -> Change:
    return _step(env, 2)


def _json(text: str) -> Any:
    """The PoP's JSON documents (consistency point, tables), kept as JSON; text that is not JSON is
    kept as a string rather than refused."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _completed(env: Envelope) -> Change:
    e: BackupCompleted = env.payload  # type: ignore[assignment]
    return _step(env, 3, status=BackupStatus.COMPLETED.value, taken_at=e.taken_at, pitr_from=e.pitr_from,
                 size_bytes=e.size_bytes, location=e.location, dek_id=e.dek_id, kek_id=e.kek_id,
                 consistency=_json(e.consistency), tables=_json(e.tables))


def _failed(env: Envelope) -> Change:
    e: BackupFailed = env.payload  # type: ignore[assignment]
    return _step(env, 3, status=e.status, reason=e.reason)


def _deletion_requested(env: Envelope) -> Change:
    e: BackupDeletionRequested = env.payload  # type: ignore[assignment]
    return _step(env, 0, status=BackupStatus.DELETING.value, deletion_operation_id=e.operation_id,
                 deletion_reason=e.reason, reason=None)


def _deleted(env: Envelope) -> Change:
    return _step(env, 3, status=BackupStatus.DELETED.value)


HANDLERS: dict[type, Handler] = {
    BackupRequested: _requested,
    BackupClaimRendered: _rendered,
    BackupClaimCommitted: _committed,
    BackupCompleted: _completed,
    BackupFailed: _failed,
    BackupDeletionRequested: _deletion_requested,
    BackupDeleted: _deleted,
}
