"""The read side of the HTTP API: a FastAPI router over the read models (mounted under /api/v1).

Owns the response models (so the OpenAPI document is complete) and the routes `GET /organizations`,
`GET /services`, `GET /services/{id}`, `GET /operations/{id}`. The router does no authentication
nor tenant scoping: the gateway does, and passes the tenant filter. The SQLAlchemy engine arrives
through the dependency `get_engine`, which the app overrides (`app.dependency_overrides`), or is
bound by `make_router(engine)`; nothing connects at import time.
Imports fastapi, pydantic, `events` (status vocabulary) and `projections.queries`.
"""


from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from events import ServiceStatus
from projections import queries
from projections.errors import InvalidCursor, NotFound
from projections.tables import build_tables


class Organization(BaseModel):
    id: str = Field(description="the tenant slug")
    display_name: str
    owner: str = Field(description="subject of the creator, the org-owner")
    created_at: datetime
    updated_at: datetime


class Resources(BaseModel):
    cpu: float = Field(description="cores")
    memory_gb: int
    storage_gb: int
    replicas: int


class BackupPolicy(BaseModel):
    schedule: str | None = Field(description="five-field cron (UTC); null: no scheduled backups")
    retain_count: int = Field(description="backups kept; 0: no limit by count")
    retain_days: int = Field(description="days a backup is kept; 0: no limit by age")
    pitr: bool = Field(description="the log is archived: restorable to any time of the recovery window")
    set_at: datetime


class RestoreOrigin(BaseModel):
    source_service_id: str
    source_engine: str
    backup_id: str | None = Field(None, description="the backup restored; null for a point in time")
    to_time: datetime | None = Field(None, description="the point in time restored; null for a backup")


class ChangeStream(BaseModel):
    status: str = Field(description="Enabling | Running | Failed | Disabling | Disabled")
    connector: str = Field(description="the Debezium connector's name in the service's PoP")
    tables: list[str] = Field(description="the tables captured; empty: every table")
    topic_prefix: str = Field(description="its topics: <prefix>.<table> (yugabyte), <prefix>.<keyspace>.<table> …")
    operation_id: str = Field(description="the last operation on it")
    reason: str | None = Field(None, description="why it failed")
    at: datetime


class Service(BaseModel):
    id: str
    tenant_id: str
    name: str
    engine: str
    engine_version: str
    pop: str
    size: str
    resources: Resources
    status: ServiceStatus
    deletion_protection: bool
    labels: dict[str, str]
    created_at: datetime
    updated_at: datetime
    last_operation_id: str
    backup_policy: BackupPolicy | None = Field(None, description="null: none set (no scheduled backups)")
    restored_from: RestoreOrigin | None = Field(None, description="where a restored service's data came from")
    cdc: ChangeStream | None = Field(None, description="its change data capture; null: never enabled")
    deleted_at: datetime | None = None


class OperationStep(BaseModel):
    name: str
    state: str
    ref: str | None = Field(None, description="external reference: git SHA, connector name, backup location")
    at: datetime | None = None


class TraceLink(BaseModel):
    trace_id: str = Field(description="the W3C trace id of the request that started the operation")
    url: str | None = Field(None, description="the trace in the tracing UI; null when the API knows no UI")


class Operation(BaseModel):
    id: str
    tenant_id: str
    type: str = Field(description="the command's record name, e.g. CreateService")
    aggregate_id: str | None = Field(description="organization slug or service id; null when rejected")
    state: str = Field(description="Accepted | Running | Succeeded | Failed | Cancelled")
    reason_code: str | None
    field: str | None
    message: str | None
    done_steps: int
    total_steps: int
    steps: list[OperationStep]
    compensation: OperationStep | None = Field(
        None, description="the revert of a failed or cancelled operation's GitOps change (state Pending | Done)")
    requested_by: str | None
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    trace: TraceLink | None = Field(
        None, description="the operation's trace (every process it went through), when tracing was on")


class OrganizationPage(BaseModel):
    items: list[Organization]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class ServicePage(BaseModel):
    items: list[Service]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class ErrorBody(BaseModel):
    detail: str


@dataclass(frozen=True)
class Scope:
    """The organizations a caller may read: `tenants` None = all (a trusted, internal caller)."""

    tenants: frozenset[str] | None
    subject: str | None = None  # the caller: it also sees the operations it requested anywhere

    def allows(self, tenant: str | None) -> bool:
        return self.tenants is None or tenant in self.tenants


UNRESTRICTED = Scope(None)


class History(Protocol):
    """One organization's read-model rows as they stood at a moment (`projections.timetravel`)."""

    def rows(self, tenant: str, until: datetime) -> dict[str, dict[str, dict[str, Any]]]: ...

    def row(self, tenant: str, read_model: str, row_id: str, until: datetime) -> dict[str, Any] | None:
        """One row of `rows(tenant, until)[read_model]` (None: there was none)."""


def get_history() -> History | None:
    """The app overrides this with a `History` over the event log; None: no time travel here."""
    return None


def get_tracing_url() -> str | None:
    """The app overrides this with the tracing UI's base URL (Jaeger); None: trace ids without links."""
    return None


def get_scope() -> Scope:
    """The app overrides this dependency with the caller's organizations (see the gateway)."""
    raise RuntimeError("projections.api.get_scope is not configured: the app must say whose reads these are")


def get_engine() -> Engine:
    """The app overrides this dependency with its engine (or use `make_router(engine)`)."""
    raise RuntimeError("projections.api.get_engine is not configured: set "
                       "app.dependency_overrides[projections.api.get_engine], or mount make_router(engine)")


def _service(row: dict[str, Any]) -> Service:
    resources = Resources(**{k: row[k] for k in ("cpu", "memory_gb", "storage_gb", "replicas")})
    cdc = row.get("cdc")
    if cdc is not None:
        cdc = {**cdc, "tables": row.get("cdc_tables") or [],
               "topic_prefix": f"dbaas.cdc.{row['engine']}.{row['tenant_id']}"}
    return Service(resources=resources, restored_from=row.get("restore"), cdc=cdc,
                   **{k: v for k, v in row.items() if k in Service.model_fields and k not in ("restored_from", "cdc")})


Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT, description="page size")]
Cursor = Annotated[str | None, Query(description="the next_cursor of the previous page")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
_BAD_CURSOR: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}}


def make_router(engine: Engine | None = None) -> APIRouter:
    """The read routes; bound to `engine`, or to the overridable `get_engine` dependency."""
    provide: Callable[[], Engine] = (lambda: engine) if engine is not None else get_engine
    Db = Annotated[Engine, Depends(provide)]
    # Bound to an engine (an internal use): every organization; otherwise the app's scope.
    Viewer = Annotated[Scope, Depends((lambda: UNRESTRICTED) if engine is not None else get_scope)]
    Past = Annotated[History | None, Depends(get_history)]
    TracingUrl = Annotated[str | None, Depends(get_tracing_url)]
    tables = build_tables()
    router = APIRouter(tags=["read models"])

    @router.get("/organizations", response_model=OrganizationPage, responses=_BAD_CURSOR)
    def list_organizations(db: Db, scope: Viewer, limit: Limit = queries.DEFAULT_LIMIT,
                           cursor: Cursor = None) -> OrganizationPage:
        with db.connect() as conn, _client_errors():
            page = queries.list_organizations(conn, tables, limit, cursor, scope.tenants)
        return OrganizationPage(items=[Organization(**r) for r in page.items], next_cursor=page.next_cursor)

    @router.get("/services", response_model=ServicePage, responses=_BAD_CURSOR)
    def list_services(
        db: Db,
        scope: Viewer,
        tenant: Annotated[str | None, Query(description="organization slug")] = None,
        org: Annotated[str | None, Query(description="alias of tenant")] = None,
        engine: str | None = None,
        pop: str | None = None,
        status: ServiceStatus | None = None,
        name: str | None = None,
        limit: Limit = queries.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> ServicePage:
        if tenant and org and tenant != org:
            raise HTTPException(400, f"tenant={tenant!r} and org={org!r} disagree; pass one of them")
        filters = queries.ServiceFilter(tenant or org, engine, pop, status.value if status else None, name)
        if filters.tenant is not None and not scope.allows(filters.tenant):
            raise HTTPException(404, f"no organization {filters.tenant} among yours")
        with db.connect() as conn, _client_errors():
            page = queries.list_services(conn, tables, filters, limit, cursor, scope.tenants)
        return ServicePage(items=[_service(r) for r in page.items], next_cursor=page.next_cursor)

    @router.get("/services/{service_id}", response_model=Service, responses=_NOT_FOUND)
    def get_service(db: Db, scope: Viewer, history: Past, service_id: Annotated[str, Path()],
                    as_of: Annotated[datetime | None, Query(
                        description="answer as the read model stood at this moment (ISO 8601), "
                                    "replayed from the event log")] = None) -> Service:
        with db.connect() as conn, _client_errors():
            row = queries.get_service(conn, tables, service_id)
        if not scope.allows(row["tenant_id"]):
            raise HTTPException(404, f"service {service_id} not found")
        if as_of is None:
            return _service(row)
        if history is None:
            raise HTTPException(501, "time travel is not configured on this API")
        if as_of.tzinfo is None:
            raise HTTPException(400, "as_of needs a time zone, e.g. 2026-11-29T10:00:00Z")
        then = history.row(row["tenant_id"], "services", service_id, as_of)
        if then is None:
            raise HTTPException(404, f"service {service_id} did not exist at {as_of.isoformat()}")
        return _service(then)

    @router.get("/operations/{operation_id}", response_model=Operation, responses=_NOT_FOUND)
    def get_operation(db: Db, scope: Viewer, tracing_url: TracingUrl,
                      operation_id: Annotated[str, Path()]) -> Operation:
        with db.connect() as conn, _client_errors():
            row = queries.get_operation(conn, tables, operation_id)
        if not (scope.allows(row["tenant_id"]) or (scope.subject and row["requested_by"] == scope.subject)):
            raise HTTPException(404, f"operation {operation_id} not found")
        trace_id = row.pop("trace_id", None)
        trace = TraceLink(trace_id=trace_id, url=f"{tracing_url.rstrip('/')}/trace/{trace_id}"
                          if tracing_url else None) if trace_id else None
        return Operation(**row, trace=trace)

    return router


@contextmanager
def _client_errors() -> Iterator[None]:
    """Map the query errors a client caused to HTTP answers."""
    try:
        yield
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except InvalidCursor as exc:
        raise HTTPException(400, str(exc)) from exc


router = make_router()
