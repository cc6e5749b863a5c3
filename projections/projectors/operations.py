"""The `operations` read model: the durable record of every judged command.

OperationAccepted starts an operation in state Accepted (Succeeded at once when it has no steps,
e.g. CreateOrganization); CommandRejected records a Failed operation with the reason code, field
and message (its id is the payload's `operation_id`; its target aggregate is unknown, so
`aggregate_id` stays NULL). `requested_by` is the envelope's `actor_subject`. A backup and a
backup's deletion are operations with the same three steps as a service's, reported on the
backup's events (`BackupClaimRendered`, `BackupClaimCommitted`, then `BackupCompleted` or
`BackupDeleted`, or `BackupFailed` at the step that failed); a restore is a service creation.
Enabling and disabling CDC likewise, on the connector's events (`CdcConnectorRendered`,
`CdcConnectorCommitted`, then `CdcConnectorRegistered` or `CdcDisabled`, or `CdcConnectorFailed`).
Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from typing import Any

from events import (
    STEPS,
    BackupClaimCommitted,
    BackupClaimRendered,
    BackupCompleted,
    BackupClaimReverted,
    BackupDeleted,
    BackupFailed,
    CdcConnectorCommitted,
    CdcConnectorFailed,
    CdcConnectorRegistered,
    CdcConnectorRendered,
    CdcDisabled,
    CommandRejected,
    Envelope,
    OperationAccepted,
    OperationCancelled,
    OperationStarted,
    ServiceClaimCommitted,
    ServiceClaimRendered,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
    SubscriptionFailed,
    SubscriptionGranted,
    SubscriptionRevoked,
)
from projections.projectors import Change, Handler

NAME = "operations"
ACCEPTED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "Accepted", "Running", "Succeeded", "Failed", "Cancelled"
STEP_COLUMNS = ("render_step", "commit_step", "report_step")
FAILED_STEP = dict(zip(STEPS, STEP_COLUMNS, strict=True))  # a timeout's step -> its column


def _started(env: Envelope) -> dict[str, Any]:
    return {
        "tenant_id": env.tenant_id,
        "done_steps": 0,
        "render_step": None,
        "commit_step": None,
        "report_step": None,
        "compensation": None,
        "requested_by": env.actor_subject,
        "correlation_id": env.correlation_id,
        "trace_id": None,  # the event's trace, from its Kafka header: set by `projections.batch`
        "created_at": env.occurred_at,
        "updated_at": env.occurred_at,
    }


def _accepted(env: Envelope) -> Change:
    e: OperationAccepted = env.payload  # type: ignore[assignment]
    return Change(e.operation_id, env.sequence, {
        **_started(env),
        "type": e.operation_type,
        "aggregate_id": e.aggregate_id,
        "state": SUCCEEDED if e.total_steps == 0 else ACCEPTED,
        "total_steps": e.total_steps,
        "command_fingerprint": e.command_fingerprint,
        "reason_code": None,
        "field": None,
        "message": None,
    }, creates=True)


def _rejected(env: Envelope) -> Change:
    e: CommandRejected = env.payload  # type: ignore[assignment]
    return Change(e.operation_id, env.sequence, {
        **_started(env),
        "type": e.command_type,
        "aggregate_id": None,
        "state": FAILED,
        "total_steps": 0,
        "command_fingerprint": e.command_fingerprint,
        "reason_code": e.reason_code,
        "field": e.field,
        "message": e.message,
    }, creates=True)


def _step(env: Envelope, done: int, column: str, ref: str | None, state: str = RUNNING,
          step_state: str = "Done", **more: Any) -> Change:
    """A step of a running operation, reported on the service's events (versioned by its sequence)."""
    return Change(env.payload.operation_id, env.sequence, {  # type: ignore[union-attr]
        "state": state, "done_steps": done, "updated_at": env.occurred_at,
        column: {"state": step_state, "ref": ref, "at": env.occurred_at.isoformat()}, **more,
    })


def _operation_started(env: Envelope) -> Change:
    return Change(env.payload.operation_id, env.sequence,  # type: ignore[union-attr]
                  {"state": RUNNING, "updated_at": env.occurred_at})


def _rendered(env: Envelope) -> Change:
    e: ServiceClaimRendered | BackupClaimRendered = env.payload  # type: ignore[assignment]
    return _step(env, 1, "render_step", e.digest)


def _committed(env: Envelope) -> Change:
    e: ServiceClaimCommitted | BackupClaimCommitted = env.payload  # type: ignore[assignment]
    return _step(env, 2, "commit_step", e.sha)


def _ready(env: Envelope) -> Change:
    e: ServiceReady = env.payload  # type: ignore[assignment]
    return _step(env, 3, "report_step", e.endpoint, state=SUCCEEDED)


def _deleted(env: Envelope) -> Change:
    return _step(env, 3, "report_step", None, state=SUCCEEDED)


def _backup_completed(env: Envelope) -> Change:
    e: BackupCompleted = env.payload  # type: ignore[assignment]
    return _step(env, 3, "report_step", e.location, state=SUCCEEDED)


def _failed(env: Envelope) -> Change:
    """The failed step is marked Failed; the steps before it are done. A service's or a backup's
    failure alike (both carry the step, the code, the reason and whether a commit is reverted)."""
    e: ServiceFailed | BackupFailed = env.payload  # type: ignore[assignment]
    failed_step = FAILED_STEP[e.step]
    done = STEP_COLUMNS.index(failed_step)
    more = {"compensation": {"state": "Pending", "ref": None, "at": env.occurred_at.isoformat()}} \
        if e.compensate else {}
    return _step(env, done, failed_step, None, state=FAILED, step_state="Failed",
                 reason_code=e.code, message=e.reason, **more)


def _cdc_reported(env: Envelope) -> Change:
    e: CdcConnectorRegistered | CdcDisabled = env.payload  # type: ignore[assignment]
    return _step(env, 3, "report_step", e.connector, state=SUCCEEDED)


def _cdc_failed(env: Envelope) -> Change | None:
    """A CDC operation failed at its step; a connector that stayed failed after it ran is no
    failure of the operation that set it up (it is the connector's state, and an alert)."""
    e: CdcConnectorFailed = env.payload  # type: ignore[assignment]
    if e.code == "connector_failed":
        return None
    failed_step = FAILED_STEP[e.step]
    return _step(env, STEP_COLUMNS.index(failed_step), failed_step, None, state=FAILED, step_state="Failed",
                 reason_code=e.code, message=e.reason)


def _cancelled(env: Envelope) -> Change:
    e: OperationCancelled = env.payload  # type: ignore[assignment]
    values: dict[str, Any] = {"state": CANCELLED, "updated_at": env.occurred_at, "reason_code": "cancelled",
                              "message": "cancelled by request" + (
                                  "; its GitOps change is being reverted" if e.compensate else "")}
    if e.compensate:
        values["compensation"] = {"state": "Pending", "ref": None, "at": env.occurred_at.isoformat()}
    return Change(e.operation_id, env.sequence, values)


def _reverted(env: Envelope) -> Change:
    e: ServiceClaimReverted = env.payload  # type: ignore[assignment]
    return Change(e.operation_id, env.sequence, {
        "updated_at": env.occurred_at,
        "compensation": {"state": "Done", "ref": e.sha, "at": env.occurred_at.isoformat()}})


def _subscription_done(env: Envelope) -> Change:
    """A subscription's one step (granted or revoked on the broker), recorded as the report step."""
    return _step(env, 1, "report_step", None, state=SUCCEEDED)


def _subscription_failed(env: Envelope) -> Change:
    e: SubscriptionFailed = env.payload  # type: ignore[assignment]
    return _step(env, 0, "report_step", None, state=FAILED, step_state="Failed", reason_code="failed",
                 message=e.reason)


HANDLERS: dict[type, Handler] = {
    OperationAccepted: _accepted,
    CommandRejected: _rejected,
    OperationStarted: _operation_started,
    ServiceClaimRendered: _rendered,
    ServiceClaimCommitted: _committed,
    ServiceReady: _ready,
    ServiceDeleted: _deleted,
    ServiceFailed: _failed,
    OperationCancelled: _cancelled,
    ServiceClaimReverted: _reverted,
    BackupClaimRendered: _rendered,
    BackupClaimCommitted: _committed,
    BackupCompleted: _backup_completed,
    BackupDeleted: _deleted,
    BackupFailed: _failed,
    BackupClaimReverted: _reverted,
    CdcConnectorRendered: _rendered,
    CdcConnectorCommitted: _committed,
    CdcConnectorRegistered: _cdc_reported,
    CdcDisabled: _cdc_reported,
    CdcConnectorFailed: _cdc_failed,
    SubscriptionGranted: _subscription_done,
    SubscriptionRevoked: _subscription_done,
    SubscriptionFailed: _subscription_failed,
}
