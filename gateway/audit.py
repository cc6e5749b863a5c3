"""An organization's audit trail and its past.

`GET /organizations/{id}/audit` reads the tenant's `dbaas.audit.{tenant}` topic (read_committed)
from `since` (default: the last 24 hours) to `until` or the end of the log now, with filters on
actor, action, kind and outcome; records come oldest first, at most `limit`, and `next_since` is
where to continue. `GET /organizations/{id}/replay?until=` rebuilds the organization's read models
as of a moment from the event log (`projections.timetravel`). Both need org-owner or org-admin.
"""
from __future__ import annotations

import functools
import json
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from confluent_kafka import KafkaException, TopicPartition
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from events import Envelope
from gateway.access import Reads, require_read
from gateway.auth import Identity, current_identity
from projections import timetravel
from projections.reads import ReadModel
from projections.snapshots import Snapshot
from runtime import kafka as kafka_reader
from schemas import audit_topic
from schemas.registry import AUDIT_SUBJECT, EVENTS_SUBJECT, Registry, Serde

router = APIRouter(tags=["audit"])
MAX_LIMIT = 1000


class AuditRecord(BaseModel):
    audit_id: str
    occurred_at: datetime
    kind: str = Field(description="command (a judged command) | event")
    action: str
    outcome: str | None = Field(description="accepted | rejected, for kind command")
    actor: str | None
    reason_code: str | None
    message: str | None
    correlation_id: str
    command_id: str
    operation_id: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditRecord]
    next_since: datetime | None = Field(description="pass as `since` to continue (the page was full)")


class Replay(BaseModel):
    organization: str
    until: datetime
    events: int = Field(description="events that occurred up to `until`")
    read_models: dict[str, list[dict[str, Any]]]


class EventLog:
    """The API's reader of the event log and the audit trails, one per process: its registry client
    and serdes are made on first use (the API starts without the registry) and then kept, so a
    request costs no registration nor schema lookup. Also `projections.api.History`: a replay starts
    from the organization's latest snapshot before the moment when `snapshots` (the read port) has
    one, and reads only the log after it."""

    def __init__(self, kafka: kafka_reader.KafkaAccess | str, registry_url: str, snapshots: ReadModel | None = None):
        self.kafka = kafka
        self.registry = Registry(registry_url)
        self.snapshots = snapshots
        self.readers = timetravel.Readers(kafka)

    @functools.cached_property
    def events(self) -> Serde:
        return Serde(self.registry, EVENTS_SUBJECT)

    @functools.cached_property
    def audit(self) -> Serde:
        return Serde(self.registry, AUDIT_SUBJECT)

    def tenant_events(self, tenant: str, after: Snapshot | None = None) -> list[Envelope]:
        return timetravel.tenant_events(self.readers, self.events, tenant, after=after)

    def replay(self, tenant: str, until: datetime) -> tuple[dict[str, dict[str, dict[str, Any]]], int]:
        """The organization's rows at `until` and how many of its events occurred up to then."""
        snapshot = self.snapshots.snapshot(tenant, until) if self.snapshots is not None else None
        envelopes = self.tenant_events(tenant, snapshot)
        counted = sum(1 for e in envelopes if e.occurred_at <= until) + (snapshot.events if snapshot else 0)
        return timetravel.replay(envelopes, until, snapshot.rows if snapshot else None), counted

    def rows(self, tenant: str, until: datetime) -> dict[str, dict[str, dict[str, Any]]]:
        return self.replay(tenant, until)[0]

    def row(self, tenant: str, read_model: str, row_id: str, until: datetime) -> dict[str, Any] | None:
        snapshot = (self.snapshots.snapshot(tenant, until, read_model, row_id)
                    if self.snapshots is not None else None)
        envelopes = self.tenant_events(tenant, snapshot)
        rows = timetravel.replay(envelopes, until, snapshot.rows if snapshot else None, only=(read_model, row_id))
        return rows[read_model].get(row_id)

    def close(self) -> None:
        self.readers.close()
        self.registry.close()


def read_audit(log: EventLog, tenant: str, since: datetime, until: datetime | None,
               match, limit: int) -> list[dict[str, Any]]:
    serde = log.audit
    topic = audit_topic(tenant)
    consumer = kafka_reader.reader(log.kafka, "dbaas-audit-reader")
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        since_ms = max(0, int(since.timestamp() * 1000))  # negative times are Kafka's special offsets
        starts = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in meta.partitions], timeout=30)
        found: list[dict[str, Any]] = []
        for msg in kafka_reader.read_to_end(consumer, starts):
            record = serde.decode(msg.value())
            at = record["occurred_at"]
            if at >= since and (until is None or at <= until) and match(record):
                found.append(record)
        found.sort(key=lambda r: (r["occurred_at"], r["audit_id"]))
        return found[:limit + 1]
    finally:
        consumer.close()


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(400, f"{name} needs a time zone, e.g. 2026-11-29T10:00:00Z")
    return value


@router.get("/organizations/{org}/audit", response_model=AuditPage)
def get_audit(org: str, request: Request, reads: Reads, identity: Identity = Depends(current_identity),
              since: Annotated[datetime | None, Query(description="ISO 8601; default 24 hours ago")] = None,
              until: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None,
              actor: str | None = None, action: str | None = None,
              kind: Annotated[str | None, Query(pattern="^(command|event)$")] = None,
              outcome: Annotated[str | None, Query(pattern="^(accepted|rejected)$")] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100) -> AuditPage:
    require_read(request, reads, identity, org, "audit")
    since = _aware(since, "since") or datetime.now(timezone.utc) - timedelta(hours=24)
    until = _aware(until, "until")
    wanted = {"actor": actor, "action": action, "kind": kind, "outcome": outcome}

    def match(record: dict[str, Any]) -> bool:
        return all(v is None or record[k] == v for k, v in wanted.items())

    try:
        records = read_audit(request.app.state.event_log, org, since, until, match, limit)
    except KafkaException as exc:
        raise HTTPException(503, f"the audit trail cannot be read right now: {exc}") from None
    page, more = records[:limit], len(records) > limit
    items = [AuditRecord(**{**r, "details": json.loads(r["details"])}) for r in page]
    return AuditPage(items=items, next_since=page[-1]["occurred_at"] if more else None)


@router.get("/organizations/{org}/replay", response_model=Replay)
def replay(org: str, request: Request, reads: Reads,
           until: Annotated[datetime, Query(description="ISO 8601 with a zone")], identity: Identity = Depends(current_identity)) -> Replay:
    require_read(request, reads, identity, org, "audit")
    until = _aware(until, "until")
    rows, events = request.app.state.event_log.replay(org, until)
    for row in rows["services"].values():
        row.pop("credentials", None)  # encrypted, yet never served here
    return Replay(organization=org, until=until, events=events,
                  read_models={name: sorted(table.values(), key=lambda r: r["id"]) for name, table in rows.items()})
