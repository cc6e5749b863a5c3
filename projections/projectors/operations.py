"""The `operations` read model: the durable record of every judged command.

OperationAccepted starts an operation in state Accepted (Succeeded at once when it has no steps,
e.g. CreateOrganization); CommandRejected records a Failed operation with the reason code, field
and message (its id is the payload's `operation_id`; its target aggregate is unknown, so
`aggregate_id` stays NULL). `requested_by` is the envelope's `actor_subject`.
Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from events import CommandRejected, Envelope, OperationAccepted
from projections.projectors import Handler, dispatch, upsert
from projections.tables import Tables

ACCEPTED, SUCCEEDED, FAILED = "Accepted", "Succeeded", "Failed"


def _started(env: Envelope, operation_id: str) -> dict[str, Any]:
    return {
        "id": operation_id,
        "tenant_id": env.tenant_id,
        "done_steps": 0,
        "steps": [],
        "requested_by": env.actor_subject,
        "correlation_id": env.correlation_id,
        "created_at": env.occurred_at,
        "updated_at": env.occurred_at,
        "version": env.sequence,
    }


def _accepted(conn: Connection, tables: Tables, env: Envelope) -> None:
    e: OperationAccepted = env.payload  # type: ignore[assignment]
    upsert(conn, tables.operations, {
        **_started(env, e.operation_id),
        "type": e.operation_type,
        "aggregate_id": e.aggregate_id,
        "state": SUCCEEDED if e.total_steps == 0 else ACCEPTED,
        "total_steps": e.total_steps,
        "reason_code": None,
        "field": None,
        "message": None,
    })


def _rejected(conn: Connection, tables: Tables, env: Envelope) -> None:
    e: CommandRejected = env.payload  # type: ignore[assignment]
    upsert(conn, tables.operations, {
        **_started(env, e.operation_id),
        "type": e.command_type,
        "aggregate_id": None,
        "state": FAILED,
        "total_steps": 0,
        "reason_code": e.reason_code,
        "field": e.field,
        "message": e.message,
    })


HANDLERS: dict[type, Handler] = {
    OperationAccepted: _accepted,
    CommandRejected: _rejected,
}


def apply(conn: Connection, tables: Tables, envelope: Envelope) -> bool:
    return dispatch(HANDLERS, conn, tables, envelope)
