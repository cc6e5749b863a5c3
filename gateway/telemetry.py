"""Service metrics and alerts over HTTP, read through the read port (`projections.reads`).

`GET /services/{id}/metrics?since=&until=&step=`: the service's samples downsampled into buckets of
`step` (average and maximum of each measure per bucket, `projections.series`), and the latest
sample. `GET /organizations/{id}/alerts?state=&limit=`: the organization's alerts, newest first.
Both need a role in the organization (`READ_PERMISSIONS["metrics"]`, `["alerts"]`); a service of an
organization the caller has no role in does not exist for it (404).
"""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from gateway.access import Reads, require_read
from gateway.auth import Identity, current_identity
from projections.series import MAX_POINTS, Bucket, Sample, default_step, downsample

router = APIRouter(tags=["telemetry"])
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such service or organization among yours"}}
_DURATION = re.compile(r"^(?P<n>[0-9]+)(?P<unit>s|m|h|d)?$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
RETENTION = timedelta(days=3)  # the samples' (dbaas.metrics.{tenant}'s) retention


def duration(text: str) -> timedelta | None:
    """`90`, `90s`, `15m`, `2h`, `3d` -> the duration; None when it is not one."""
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    return timedelta(seconds=int(match["n"]) * _UNITS[match["unit"]])


def moment(text: str, now: datetime, field: str) -> datetime:
    """An RFC 3339 time (UTC when it names no zone), or a duration ago (`1h`)."""
    ago = duration(text)
    if ago is not None:
        return now - ago
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _invalid(field, f"{field} {text[:40]!r} is neither an RFC 3339 time nor a duration ago "
                              "(e.g. 2026-05-01T12:00:00Z, 90m, 6h, 2d)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["query", field], "type": "invalid", "msg": message}])


class Stat(BaseModel):
    avg: float | None
    max: float | None


class Point(BaseModel):
    start: datetime = Field(description="the bucket's start (buckets are aligned on multiples of step)")
    samples: int
    connections: Stat
    transactions_per_s: Stat
    ops_per_s: Stat
    storage_bytes: Stat
    storage_limit_bytes: int | None
    max_connections: int | None


class Latest(BaseModel):
    sampled_at: datetime
    connections: int
    max_connections: int | None
    transactions_per_s: float | None
    ops_per_s: float | None
    storage_bytes: int
    storage_limit_bytes: int | None
    storage_used: float | None = Field(description="storage_bytes / storage_limit_bytes")
    storage_estimated: bool
    keys: int | None


class Metrics(BaseModel):
    service_id: str
    name: str
    engine: str
    since: datetime
    until: datetime
    step_seconds: int
    latest: Latest | None = Field(description="the newest sample in the range; null: none")
    points: list[Point] = Field(description="oldest first; buckets without samples are left out")


class AlertState(StrEnum):
    OPEN = "open"
    ALL = "all"


class AlertOut(BaseModel):
    alert_id: str
    tenant_id: str
    service_id: str | None
    kind: str
    severity: str
    state: str = Field(description="raised | resolved")
    message: str
    raised_at: datetime
    resolved_at: datetime | None
    source: str
    updated_at: datetime


class AlertPage(BaseModel):
    items: list[AlertOut]


def _point(b: Bucket) -> Point:
    return Point(start=b.start, samples=b.samples, connections=Stat(**vars(b.connections)),
                 transactions_per_s=Stat(**vars(b.transactions_per_s)), ops_per_s=Stat(**vars(b.ops_per_s)),
                 storage_bytes=Stat(**vars(b.storage_bytes)), storage_limit_bytes=b.storage_limit_bytes,
                 max_connections=b.max_connections)


def _latest(s: Sample) -> Latest:
    used = s.storage_bytes / s.storage_limit_bytes if s.storage_limit_bytes else None
    return Latest(**vars(s), storage_used=used)


@router.get("/services/{service_id}/metrics", response_model=Metrics, responses=_NOT_FOUND)
def get_metrics(service_id: str, request: Request, reads: Reads,
                since: Annotated[str, Query(description="RFC 3339 time, or a duration ago (90m, 6h, 2d)")] = "1h",
                until: Annotated[str | None, Query(description="RFC 3339 time, or a duration ago; default now")] = None,
                step: Annotated[str | None, Query(
                    description="bucket width: seconds, or 30s, 5m, 1h; default: a usual width giving at most "
                                "120 buckets")] = None,
                identity: Identity = Depends(current_identity)) -> Metrics:
    """The service's metrics as its PoP samples them (connections, transactions or operations per
    second, storage against the service's size), averaged and maximised per bucket of `step`."""
    missing = f"no service {service_id}"
    tenant = reads.service_tenant(service_id)
    if tenant is None:
        raise HTTPException(404, missing)
    require_read(request, reads, identity, tenant, "metrics", missing=missing)
    now = datetime.now(UTC)
    start, end = moment(since, now, "since"), moment(until, now, "until") if until else now
    if end <= start:
        raise _invalid("until", "until must be after since")
    start = max(start, now - RETENTION)  # the samples are kept as long as their topic keeps them
    width = duration(step) if step else default_step(end - start)
    if width is None or width.total_seconds() < 1:
        raise _invalid("step", f"step {step!r} is not a duration of at least a second (e.g. 60, 30s, 5m, 1h)")
    if (end - start) / width > MAX_POINTS:
        raise _invalid("step", f"step {step} gives more than {MAX_POINTS} buckets over the range: choose a wider one")
    facts = reads.backup_facts(service_id)
    samples = reads.service_samples(service_id, start, end)
    return Metrics(service_id=service_id, name=facts.name if facts else "", engine=facts.engine if facts else "",
                   since=start, until=end, step_seconds=int(width.total_seconds()),
                   latest=_latest(samples[-1]) if samples else None,
                   points=[_point(b) for b in downsample(samples, width)])


@router.get("/organizations/{org}/alerts", response_model=AlertPage, responses=_NOT_FOUND)
def list_alerts(org: str, request: Request, reads: Reads,
                state: Annotated[AlertState, Query(description="open: raised and not resolved; all: also the "
                                                               "resolved ones of the last 30 days")] = AlertState.ALL,
                limit: Annotated[int, Query(ge=1, le=1000, description="at most this many, newest first")] = 100,
                identity: Identity = Depends(current_identity)) -> AlertPage:
    """The organization's alerts (its services' storage, connections and failed operations, its
    quota, missed or failed backups), newest first, each in its latest state."""
    require_read(request, reads, identity, org, "alerts")
    items = reads.alerts(org, state is AlertState.OPEN, limit)
    return AlertPage(items=[AlertOut(**vars(a)) for a in items])
