"""Judging change data capture: enabling and disabling a service's change stream, and the steps the
saga and the PoP report about its connector.

A service has at most one connector (`events.Cdc`, events of the service's own aggregate) and
one CDC operation on it at a time. Enabling renders a Strimzi `KafkaConnector` and commits it to
GitOps; the PoP registers it with its Kafka Connect and reports it `Running` (or `Failed`);
disabling removes the file and the PoP removes the connector with what it holds in the database
(replication slot, publication) and reports `Removed`. After it ran, a `Failed` report about the
enabling operation is the PoP saying the connector stayed failed through its restarts; a later
`Running` report says it recovered.

Deleting a service disables its CDC first: the deletion emits the connector's removal, on an
operation id derived from the deletion's, before its own events, so the saga commits the
connector's removal before the service's and the PoP drops the connector before the database.

Pure: called by `commands.decide`; no I/O.
May import: the standard library, `events`, `commands.catalog`, `commands.records`,
`commands.validation`.
"""
from __future__ import annotations

import hashlib
import uuid

from commands.catalog import CDC_ENGINES
from commands.records import DisableCdc, EnableCdc, RecordCdcCommitted, RecordCdcReport, RecordCdcStepFailed
from commands.validation import Problem
from events import (
    Cdc,
    CdcConnectorCommitted,
    CdcConnectorFailed,
    CdcConnectorRegistered,
    CdcConnectorRendered,
    CdcDisabled,
    CdcDisableRequested,
    CdcEnableRequested,
    CdcStatus,
    Event,
    Service,
    ServiceStatus,
    TenantState,
)

Change = tuple[str, str, Event]
CDC_NAMESPACE = uuid.UUID("5b0e6a52-3c1f-4f7e-9d2a-6a1c0f3e8b27")
AGGREGATE = "service"  # its events are the service's: one sequence, one read-model row


def connector_name(tenant_id: str, service_id: str) -> str:
    """The connector's name in its PoP (a KafkaConnector's name: a DNS-1123 label), stable per
    service and revealing nothing about the tenant, like the local PoP's role names. Its
    replication slot and publication are named after it (`-` as `_`)."""
    digest = hashlib.sha256(f"{tenant_id}/{service_id}".encode()).hexdigest()[:20]
    return f"cdc-{digest}"


def disable_operation_id(deletion_operation_id: str) -> str:
    """The operation that removes a deleted service's connector: its own id (a GitOps commit is
    looked up by its Operation-Id trailer, so it must not share the deletion's)."""
    return str(uuid.uuid5(CDC_NAMESPACE, f"{deletion_operation_id}/cdc"))


def enable(state: TenantState, service: Service | None, c: EnableCdc, op: str) -> list[Change] | Problem:
    if service is None:
        return _not_found(state, c.service_id)
    if service.engine not in CDC_ENGINES:
        return Problem("unsupported", "engine", f'engine {service.engine} has no change-data-capture source '
                       f'(no Debezium connector reads it): service "{service.name}" cannot stream its changes; '
                       f"CDC is offered for {', '.join(CDC_ENGINES)}")
    if service.status is ServiceStatus.DELETING:
        return Problem("conflict", "service_id", f'service "{service.name}" is being deleted')
    if not service.provisioned:
        return Problem("conflict", "service_id", f'service "{service.name}" is not ready yet '
                       f"({service.status.value}); enable CDC once it is Ready")
    if service.engine == "scylla" and not c.tables:
        return Problem("invalid", "tables", "ScyllaDB streams the changes of tables whose CDC log is on: name "
                       "them (keyspace.table)")
    current = state.cdc.get(c.service_id)
    if current is not None and current.in_flight:
        return _busy(service, current)
    name = connector_name(state.tenant_id, c.service_id)
    return [(AGGREGATE, c.service_id, CdcEnableRequested(c.service_id, op, service.name, service.engine,
                                                         service.pop, name, tuple(c.tables)))]


def disable(state: TenantState, service: Service | None, c: DisableCdc, op: str) -> list[Change] | Problem:
    if service is None:
        return _not_found(state, c.service_id)
    current = state.cdc.get(c.service_id)
    if current is None or not current.holds_connector:
        return Problem("conflict", "service_id", f'CDC is not enabled on service "{service.name}"')
    if current.in_flight:
        return _busy(service, current)
    return [_disable(service, current, op, "requested")]


def on_deletion(state: TenantState, service: Service, deletion_op: str) -> list[Change]:
    """The connector's removal that goes before a service's deletion (none when it has none, or
    when its removal is already under way)."""
    current = state.cdc.get(service.service_id)
    if current is None or not current.holds_connector or current.status is CdcStatus.DISABLING:
        return []
    return [_disable(service, current, disable_operation_id(deletion_op), "service_deleted")]


def rendered(state: TenantState, service_id: str, operation_id: str, digest: str) -> list[Change] | Problem:
    return _step(state, service_id, operation_id, 1, CdcConnectorRendered(service_id, operation_id, digest))


def committed(state: TenantState, c: RecordCdcCommitted) -> list[Change] | Problem:
    """Recorded once. A commit that changed nothing (the repository held the connector as asked)
    gets no PoP report: the operation ends at once."""
    changes = _step(state, c.service_id, c.operation_id, 2,
                    CdcConnectorCommitted(c.service_id, c.operation_id, c.path, c.sha, c.changed))
    if isinstance(changes, Problem) or not changes or c.changed:
        return changes
    cdc = state.cdc[c.service_id]
    if cdc.status is CdcStatus.DISABLING:
        return [*changes, (AGGREGATE, c.service_id, CdcDisabled(c.service_id, c.operation_id, cdc.connector))]
    return [*changes, (AGGREGATE, c.service_id, CdcConnectorRegistered(c.service_id, c.operation_id, cdc.connector))]


def report(state: TenantState, service: Service | None, c: RecordCdcReport) -> list[Change] | Problem:
    cdc = state.cdc.get(c.service_id)
    if cdc is None:
        return Problem("not_found", "service_id", f"service {c.service_id} has no CDC connector")
    pop = service.pop if service is not None else None
    if pop is not None and c.pop != pop:
        return Problem("forbidden", "pop", f"PoP {c.pop} reported on the connector of service {c.service_id}, "
                       f"which runs in PoP {pop}: a PoP reports only on its own connectors")
    if c.operation_id != cdc.operation_id:
        return []  # about an earlier operation on the connector
    here = (AGGREGATE, c.service_id)
    why = f"the PoP {c.pop} reported: {c.reason or 'a failure without a reason'}"
    match cdc.status, c.phase:
        case CdcStatus.ENABLING, "Running" if cdc.step >= 2:
            return [(*here, CdcConnectorRegistered(c.service_id, c.operation_id, cdc.connector))]
        case CdcStatus.ENABLING, "Failed" if cdc.step >= 2:
            return [(*here, CdcConnectorFailed(c.service_id, c.operation_id, cdc.connector, why, "pop_failed",
                                               "pop-report"))]
        case CdcStatus.RUNNING, "Failed":  # it ran, then stayed failed through the PoP's restarts
            return [(*here, CdcConnectorFailed(c.service_id, c.operation_id, cdc.connector, why,
                                               "connector_failed", "pop-report"))]
        case CdcStatus.FAILED, "Running" if cdc.step >= 2:  # recovered
            return [(*here, CdcConnectorRegistered(c.service_id, c.operation_id, cdc.connector))]
        case CdcStatus.DISABLING, "Removed" if cdc.step >= 2:
            return [(*here, CdcDisabled(c.service_id, c.operation_id, cdc.connector))]
        case CdcStatus.DISABLING, "Failed" if cdc.step >= 2:
            return [(*here, CdcConnectorFailed(c.service_id, c.operation_id, cdc.connector, why, "pop_failed",
                                               "pop-report"))]
    return []  # a repeated or stale report changes nothing


def step_failed(state: TenantState, c: RecordCdcStepFailed) -> list[Change] | Problem:
    cdc = state.cdc.get(c.service_id)
    if cdc is None:
        return Problem("not_found", "service_id", f"service {c.service_id} has no CDC connector")
    steps = ("render", "commit", "pop-report")
    if cdc.operation_id != c.operation_id or not cdc.in_flight or c.step not in steps \
            or steps.index(c.step) != cdc.step:
        return []
    code = "timed_out" if c.code == "timed_out" else f"{c.step}_failed"
    return [(AGGREGATE, c.service_id, CdcConnectorFailed(c.service_id, c.operation_id, cdc.connector, c.reason,
                                                         code, c.step))]


def _step(state: TenantState, service_id: str, operation_id: str, step: int, event: Event) -> list[Change] | Problem:
    cdc = state.cdc.get(service_id)
    if cdc is None:
        return Problem("not_found", "service_id", f"service {service_id} has no CDC connector")
    if cdc.operation_id != operation_id or not cdc.in_flight or cdc.step >= step:
        return []
    if cdc.step != step - 1:
        return Problem("conflict", None, f"operation {operation_id} reports step {step} before step {step - 1}")
    return [(AGGREGATE, service_id, event)]


def _disable(service: Service, current: Cdc, op: str, reason: str) -> Change:
    return (AGGREGATE, service.service_id, CdcDisableRequested(service.service_id, op, service.name, service.engine,
                                                               service.pop, current.connector, reason))


def _busy(service: Service, current: Cdc) -> Problem:
    doing = "enabled" if current.status is CdcStatus.ENABLING else "disabled"
    return Problem("conflict", "service_id", f'CDC of service "{service.name}" is being {doing} by operation '
                   f"{current.operation_id}; ask again when it ends")


def _not_found(state: TenantState, service_id: str) -> Problem:
    return Problem("not_found", "service_id", f'service {service_id} does not exist in organization '
                   f'"{state.tenant_id}"')
