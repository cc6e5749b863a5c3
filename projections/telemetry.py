"""The telemetry read models: services' metric samples (`service_metrics`) and alerts (`alerts`),
fed from the per-organization topics `dbaas.metrics.{tenant}` and `dbaas.alerts.{tenant}`.

`TelemetryProjector` is a second consumer of the projector process, *subscribed* to the patterns
`^dbaas\\.metrics\\..*` and `^dbaas\\.alerts\\..*` (a new organization's topics are found within
`topic.metadata.refresh.interval.ms`, 5 s) in a consumer group of its own whose offsets are
committed to Kafka after the rows: at least once, and every write is idempotent — a sample is
named by (service id, sampled_at) and inserted once; an alert is one row per alert id whose latest
state wins, a resolution never undone by a late `raised` of the same id. A sample counts only when
its signature is a PoP key speaking for the sample's PoP (when a keyring is given); others are
skipped and counted.

Retention follows the topics': samples older than `SAMPLE_RETENTION` (3 days) and alerts resolved
more than `ALERT_RETENTION` (30 days) ago are deleted every `RETENTION_EVERY` seconds.
Imports SQLAlchemy, confluent-kafka, `schemas`, `runtime` and `projections.series`.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from prometheus_client import Counter, CollectorRegistry
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    and_,
    delete,
    select,
)
from sqlalchemy.dialects.postgresql import insert

from projections.errors import TransientError
from projections.series import Sample
from runtime import kafka
from runtime.signing import Keyring, Unverified
from schemas import PoisonMessage
from schemas.registry import ALERTS_SUBJECT, METRICS_SUBJECT, Registry, RegistryUnavailable, Serde

log = structlog.get_logger("projections.telemetry")

PATTERNS = ("^dbaas\\.metrics\\..*", "^dbaas\\.alerts\\..*")
SAMPLE_RETENTION = timedelta(days=3)  # dbaas.metrics.{tenant}'s retention
ALERT_RETENTION = timedelta(days=30)  # dbaas.alerts.{tenant}'s retention, from the resolution
RETENTION_EVERY = 300.0
MAX_SAMPLES = 20_000  # samples one read returns at most (3 days of one service every 15 s: 17,280)
STATE_RANK = {"raised": 0, "resolved": 1}


# -- tables --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TelemetryTables:
    metadata: MetaData
    samples: Table
    alerts: Table


def build_tables() -> TelemetryTables:
    metadata = MetaData()
    samples = Table(
        "service_metrics", metadata,
        Column("service_id", Text, nullable=False),
        Column("sampled_at", DateTime(timezone=True), nullable=False),
        Column("tenant_id", Text, nullable=False),
        Column("engine", Text, nullable=False),
        Column("pop", Text, nullable=False),
        Column("connections", Integer, nullable=False),
        Column("max_connections", Integer),
        Column("transactions_per_s", Double),
        Column("ops_per_s", Double),
        Column("storage_bytes", BigInteger, nullable=False),
        Column("storage_limit_bytes", BigInteger),
        Column("storage_estimated", Boolean, nullable=False),
        Column("keys", BigInteger),
        PrimaryKeyConstraint("service_id", "sampled_at", name="service_metrics_pkey"),
    )
    Index("ix_service_metrics_sampled", samples.c.sampled_at)
    alerts = Table(
        "alerts", metadata,
        Column("alert_id", Text, nullable=False),
        Column("tenant_id", Text, nullable=False),
        Column("service_id", Text),
        Column("kind", Text, nullable=False),
        Column("severity", Text, nullable=False),
        Column("state", Text, nullable=False),
        Column("message", Text, nullable=False),
        Column("raised_at", DateTime(timezone=True), nullable=False),
        Column("resolved_at", DateTime(timezone=True)),
        Column("source", Text, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),  # when the latest record was projected
        PrimaryKeyConstraint("alert_id", name="alerts_pkey"),
    )
    Index("ix_alerts_tenant", alerts.c.tenant_id, alerts.c.raised_at)
    return TelemetryTables(metadata, samples, alerts)


TABLES = build_tables()


def create_tables(engine: Engine, tables: TelemetryTables = TABLES) -> TelemetryTables:
    from projections.tables import create_lock

    with engine.begin() as conn:
        create_lock(conn)
        tables.metadata.create_all(conn, checkfirst=True)
    return tables


# -- writing -------------------------------------------------------------------------------------
def sample_row(r: dict[str, Any]) -> dict[str, Any]:
    return {"service_id": r["service_id"], "sampled_at": r["sampled_at"], "tenant_id": r["tenant_id"],
            "engine": r["engine"], "pop": r["pop"], "connections": r["connections"],
            "max_connections": r.get("max_connections"), "transactions_per_s": r.get("transactions_per_s"),
            "ops_per_s": r.get("ops_per_s"), "storage_bytes": r["storage_bytes"],
            "storage_limit_bytes": r.get("storage_limit_bytes"),
            "storage_estimated": bool(r.get("storage_estimated")), "keys": r.get("keys")}


def alert_row(r: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"alert_id": r["alert_id"], "tenant_id": r["tenant_id"], "service_id": r.get("service_id"),
            "kind": r["kind"], "severity": r["severity"], "state": r["state"], "message": r["message"],
            "raised_at": r["raised_at"], "resolved_at": r.get("resolved_at"), "source": r["source"],
            "updated_at": now}


def latest_alerts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per alert id: the latest record of each, a resolution winning over a later `raised`."""
    kept: dict[str, dict[str, Any]] = {}
    for row in rows:
        have = kept.get(row["alert_id"])
        if have is None or STATE_RANK.get(row["state"], 0) >= STATE_RANK.get(have["state"], 0):
            kept[row["alert_id"]] = row
    return list(kept.values())


def write(conn: Connection, tables: TelemetryTables, samples: list[dict], alerts: list[dict]) -> None:
    if samples:
        unique = {(r["service_id"], r["sampled_at"]): r for r in samples}
        conn.execute(insert(tables.samples).on_conflict_do_nothing(), list(unique.values()))
    for row in latest_alerts(alerts):  # one statement per alert: rows of one id never meet in one
        stmt = insert(tables.alerts).values(**row)
        t = tables.alerts
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[t.c.alert_id],
            set_={name: stmt.excluded[name] for name in row if name != "alert_id"},
            where=~and_(t.c.state == "resolved", stmt.excluded.state == "raised")))


def expire(conn: Connection, tables: TelemetryTables, now: datetime) -> tuple[int, int]:
    """Delete samples and resolved alerts past their retention; how many of each."""
    gone = conn.execute(delete(tables.samples).where(tables.samples.c.sampled_at < now - SAMPLE_RETENTION))
    old = conn.execute(delete(tables.alerts).where(tables.alerts.c.state == "resolved",
                                                   tables.alerts.c.resolved_at < now - ALERT_RETENTION))
    return gone.rowcount or 0, old.rowcount or 0


# -- reading -------------------------------------------------------------------------------------
def read_samples(conn: Connection, tables: TelemetryTables, service_id: str, since: datetime,
                 until: datetime | None = None) -> list[Sample]:
    t = tables.samples
    query = select(t.c.sampled_at, t.c.connections, t.c.max_connections, t.c.transactions_per_s, t.c.ops_per_s,
                   t.c.storage_bytes, t.c.storage_limit_bytes, t.c.storage_estimated, t.c["keys"]).where(
        t.c.service_id == service_id, t.c.sampled_at >= since)
    if until is not None:
        query = query.where(t.c.sampled_at <= until)
    rows = conn.execute(query.order_by(t.c.sampled_at.desc()).limit(MAX_SAMPLES)).all()
    return [Sample(*row) for row in reversed(rows)]


def read_alerts(conn: Connection, tables: TelemetryTables, tenant: str, open_only: bool, limit: int,
                now: datetime) -> list[dict[str, Any]]:
    t = tables.alerts
    query = select(t).where(t.c.tenant_id == tenant)
    if open_only:
        query = query.where(t.c.state == "raised")
    else:
        query = query.where((t.c.resolved_at.is_(None)) | (t.c.resolved_at >= now - ALERT_RETENTION))
    rows = conn.execute(query.order_by(t.c.raised_at.desc(), t.c.alert_id).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


# -- the projector -------------------------------------------------------------------------------
class TelemetryProjector:
    """Consumes the metrics and alerts topics into their read models; `step` handles one batch."""

    def __init__(self, engine: Engine, registry: Registry, bootstrap: kafka.KafkaAccess | str, *, keyring: Keyring | None,
                 group: str = "dbaas-telemetry", metrics_registry: CollectorRegistry | None = None,
                 tables: TelemetryTables = TABLES, batch_size: int = 500):
        self.engine = engine
        self.tables = tables
        self.keyring = keyring
        self.batch_size = batch_size
        self.samples_serde = Serde(registry, METRICS_SUBJECT)
        self.alerts_serde = Serde(registry, ALERTS_SUBJECT)
        self.consumer = Consumer(kafka.consumer_config(bootstrap, group, **{
            "topic.metadata.refresh.interval.ms": 5000, "enable.partition.eof": False}))
        self.consumer.subscribe(list(PATTERNS))
        self.projected = Counter("dbaas_telemetry_projected_total", "Samples and alerts projected, by outcome",
                                 ["kind", "outcome"], registry=metrics_registry)
        for kind in ("sample", "alert"):
            for outcome in ("applied", "skipped"):
                self.projected.labels(kind, outcome)
        self._expire_at = 0.0

    def step(self, timeout: float = 0.0) -> int:
        """Project one batch (what the consumer holds, up to `batch_size`); the messages handled."""
        # a pattern no topic matches yet (no organization has alerts yet) is reported as an error
        batch = kafka.messages([m for m in self.consumer.consume(self.batch_size, timeout)
                                if m.error() is None or m.error().code() != KafkaError.UNKNOWN_TOPIC_OR_PART])
        if batch:
            try:
                samples, alerts = self._decode(batch)
                with self.engine.begin() as conn:
                    write(conn, self.tables, samples, alerts)
            except RegistryUnavailable as exc:
                kafka.rewind(self.consumer, batch)  # read again on the next try
                raise TransientError(str(exc)) from exc
            except Exception:
                kafka.rewind(self.consumer, batch)
                raise
            self.consumer.commit(offsets=_next_offsets(batch), asynchronous=False)
            self.projected.labels("sample", "applied").inc(len(samples))
            self.projected.labels("alert", "applied").inc(len(alerts))
        self._expire()
        return len(batch)

    def _decode(self, batch: list[Message]) -> tuple[list[dict], list[dict]]:
        samples, alerts = [], []
        now = datetime.now(UTC)
        for msg in batch:
            topic = msg.topic()
            metrics = topic.startswith("dbaas.metrics.")
            try:
                record = (self.samples_serde if metrics else self.alerts_serde).decode(msg.value() or b"")
            except PoisonMessage as exc:
                self._skip("sample" if metrics else "alert", topic, exc.reason)
                continue
            tenant = topic.split(".", 2)[2]
            if record.get("tenant_id") != tenant:
                self._skip("sample" if metrics else "alert", topic, f"a record of {record.get('tenant_id')!r}")
                continue
            if metrics:
                problem = self._unverified(msg, record)
                if problem is not None:
                    self._skip("sample", topic, problem)
                    continue
                samples.append(sample_row(record))
            else:
                alerts.append(alert_row(record, now))
        return samples, alerts

    def _unverified(self, msg: Message, record: dict) -> str | None:
        if self.keyring is None:
            return None
        try:
            key = self.keyring.verify(msg.topic(), msg.key(), msg.value(), msg.headers())
        except Unverified as exc:
            return exc.reason
        if key.kind != "pop" or key.pop != record["pop"]:
            return f"key {key.key_id!r} does not speak for PoP {record['pop']!r}"
        return None

    def _skip(self, kind: str, topic: str, reason: str) -> None:
        self.projected.labels(kind, "skipped").inc()
        log.warning("telemetry record skipped", topic=topic, reason=reason)

    def _expire(self) -> None:
        if time.monotonic() < self._expire_at:
            return
        self._expire_at = time.monotonic() + RETENTION_EVERY
        with self.engine.begin() as conn:
            samples, alerts = expire(conn, self.tables, datetime.now(UTC))
        if samples or alerts:
            log.info("telemetry past retention deleted", samples=samples, alerts=alerts)

    def close(self) -> None:
        self.consumer.close()


def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        last[(m.topic(), m.partition())] = max(last.get((m.topic(), m.partition()), -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]
