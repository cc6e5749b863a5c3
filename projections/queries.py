"""Read queries over the live read models: filters, keyset pagination, single-row lookups.

Owns the SQL of the query side and the opaque pagination cursor (base64url JSON of the last row's
`created_at` and `id`; pages are ordered by that pair, so inserts never shift a page). Returns
plain dicts; raises `NotFound` and `InvalidCursor`. Imports `projections.tables` and `.errors`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, Table, func, select, tuple_

from events import STEPS
from projections.errors import InvalidCursor, NotFound
from projections.tables import Tables

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class ServiceFilter:
    tenant: str | None = None
    engine: str | None = None
    pop: str | None = None
    status: str | None = None
    name: str | None = None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps({"c": created_at.isoformat(), "i": row_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        created_at, row_id = datetime.fromisoformat(data["c"]), data["i"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidCursor(f"cursor {cursor!r} was not issued by this API; pass back the "
                            "next_cursor of the previous page unchanged, or omit it for the first page") from None
    if not isinstance(row_id, str) or created_at.tzinfo is None:
        raise InvalidCursor(f"cursor {cursor!r} was not issued by this API; omit it for the first page")
    return created_at, row_id


def _page(conn: Connection, table: Table, query: Select[Any], limit: int, cursor: str | None) -> Page:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    key = tuple_(table.c.created_at, table.c.id)
    if cursor is not None:
        query = query.where(key > tuple_(*decode_cursor(cursor)))
    rows = [dict(r._mapping) for r in conn.execute(
        query.order_by(table.c.created_at, table.c.id).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None)


def list_organizations(conn: Connection, tables: Tables, limit: int = DEFAULT_LIMIT,
                       cursor: str | None = None, tenants: Collection[str] | None = None) -> Page:
    """`tenants`: only these organizations (None: all)."""
    t = tables.organizations
    query = select(t) if tenants is None else select(t).where(t.c.id.in_(list(tenants)))
    return _page(conn, t, query, limit, cursor)


def list_services(conn: Connection, tables: Tables, filters: ServiceFilter = ServiceFilter(),
                  limit: int = DEFAULT_LIMIT, cursor: str | None = None,
                  tenants: Collection[str] | None = None) -> Page:
    """`tenants`: only services of these organizations (None: all)."""
    t = tables.services
    query = select(t) if tenants is None else select(t).where(t.c.tenant_id.in_(list(tenants)))
    for column, value in (("tenant_id", filters.tenant), ("engine", filters.engine), ("pop", filters.pop),
                          ("status", filters.status), ("name", filters.name)):
        if value is not None:
            query = query.where(t.c[column] == value)
    return _page(conn, t, query, limit, cursor)


def get_service(conn: Connection, tables: Tables, service_id: str) -> dict[str, Any]:
    t = tables.services
    row = conn.execute(select(t).where(t.c.id == service_id)).first()
    if row is None:
        raise NotFound(f"service {service_id} not found")
    return dict(row._mapping)


def tenant_of(conn: Connection, table: Table, row_id: str) -> str | None:
    """The organization of the row `row_id` of `table` (a service or an operation); None when unknown."""
    return conn.execute(select(table.c.tenant_id).where(table.c.id == row_id)).scalar()


def operation_fingerprint(conn: Connection, tables: Tables, operation_id: str) -> str | None:
    """The payload fingerprint of the command that started `operation_id`; None when unknown."""
    t = tables.operations
    return conn.execute(select(t.c.command_fingerprint).where(t.c.id == operation_id)).scalar()


def get_operation(conn: Connection, tables: Tables, operation_id: str) -> dict[str, Any]:
    t = tables.operations
    row = conn.execute(select(t).where(t.c.id == operation_id)).first()
    if row is None:
        raise NotFound(f"operation {operation_id} not found: no such operation, or its command was "
                       "accepted moments ago and is not projected yet (retry shortly)")
    values = dict(row._mapping)
    columns = (values.pop("render_step"), values.pop("commit_step"), values.pop("report_step"))
    values["steps"] = [{"name": name, **step} for name, step in zip(STEPS, columns, strict=True) if step]
    compensation = values.pop("compensation")
    values["compensation"] = {"name": "revert", **compensation} if compensation else None
    return values


def get_organization(conn: Connection, tables: Tables, slug: str) -> dict[str, Any]:
    t = tables.organizations
    row = conn.execute(select(t).where(t.c.id == slug)).first()
    if row is None:
        raise NotFound(f"organization {slug} not found")
    return dict(row._mapping)


def members(conn: Connection, tables: Tables, tenant: str) -> list[dict[str, Any]]:
    t = tables.members
    rows = conn.execute(select(t.c.subject, t.c.role, t.c.created_at, t.c.updated_at)
                        .where(t.c.tenant_id == tenant, t.c.role.is_not(None)).order_by(t.c.subject))
    return [dict(r._mapping) for r in rows]


def memberships(conn: Connection, tables: Tables, subject: str) -> list[dict[str, Any]]:
    t = tables.members
    rows = conn.execute(select(t.c.tenant_id, t.c.role).where(t.c.subject == subject, t.c.role.is_not(None))
                        .order_by(t.c.tenant_id))
    return [dict(r._mapping) for r in rows]


def usage(conn: Connection, tables: Tables, tenant: str) -> list[dict[str, Any]]:
    """Per (engine, pop): services and their cpu, memory and storage times replicas, counting what
    holds quota — neither deleted services nor failed ones (a failed creation holds none)."""
    t = tables.services
    rows = conn.execute(
        select(t.c.engine, t.c.pop, func.count().label("services"),
               func.sum(t.c.cpu * t.c.replicas).label("cpu"),
               func.sum(t.c.memory_gb * t.c.replicas).label("memory_gb"),
               func.sum(t.c.storage_gb * t.c.replicas).label("storage_gb"))
        .where(t.c.tenant_id == tenant, t.c.status.not_in(("Deleted", "Failed")))
        .group_by(t.c.engine, t.c.pop))
    return [dict(r._mapping) for r in rows]


# -- backups ------------------------------------------------------------------------------------
RUNNING = "Running"
REQUESTED = "Requested"


def backup_status(stored: str, step: int) -> str:
    """A backup's status as read: a Requested backup whose claim was rendered is Running (the
    events of a backup's render and of its deletion's render are the same, so it is not stored)."""
    return RUNNING if stored == REQUESTED and step >= 1 else stored


def _backup(row: Any) -> dict[str, Any]:
    values = dict(row._mapping)
    values["status"] = backup_status(values["status"], values.pop("step"))
    return values


def list_backups(conn: Connection, tables: Tables, service_id: str, status: str | None = None,
                 limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """A service's backups, newest first: those of `status`, or every one but the deleted ones."""
    t = tables.backups
    query = select(t).where(t.c.service_id == service_id)
    match status:
        case None:
            query = query.where(t.c.status != "Deleted")
        case "Running":
            query = query.where(t.c.status == REQUESTED, t.c.step >= 1)
        case "Requested":
            query = query.where(t.c.status == REQUESTED, t.c.step == 0)
        case _:
            query = query.where(t.c.status == status)
    rows = conn.execute(query.order_by(t.c.requested_at.desc(), t.c.id.desc()).limit(limit))
    return [_backup(r) for r in rows]


def get_backup(conn: Connection, tables: Tables, backup_id: str) -> dict[str, Any] | None:
    t = tables.backups
    row = conn.execute(select(t).where(t.c.id == backup_id)).first()
    return None if row is None else _backup(row)


def restorable_backups(conn: Connection, tables: Tables, service_id: str) -> list[dict[str, Any]]:
    """A service's completed backups (what its recovery window is made of), oldest first."""
    t = tables.backups
    rows = conn.execute(select(t.c.id, t.c.taken_at, t.c.pitr_from)
                        .where(t.c.service_id == service_id, t.c.status == "Completed", t.c.taken_at.is_not(None))
                        .order_by(t.c.taken_at, t.c.id))
    return [dict(r._mapping) for r in rows]


def failed_scheduled_backups(conn: Connection, tables: Tables, service_id: str,
                             limit: int = 100) -> list[dict[str, Any]]:
    """A service's scheduled backups that failed (the schedule's gaps), newest first."""
    t = tables.backups
    rows = conn.execute(select(t.c.id, t.c.slot, t.c.reason, t.c.requested_at)
                        .where(t.c.service_id == service_id, t.c.status == "Failed", t.c.slot.is_not(None))
                        .order_by(t.c.requested_at.desc(), t.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]
