"""The audit writer: every event of `dbaas.events` becomes one audit record on its tenant's
`dbaas.audit.{tenant}` topic (created from the topic spec's pattern, 90 days' retention, when the
organization appears — or at the tenant's first record, whichever comes first).

A judged command is recorded by the event that judged it: `OperationAccepted` (kind command,
outcome accepted) or `CommandRejected` (outcome rejected, with the reason code and message); the
actor and correlation id travel in every event's envelope. Every other event is a record of kind
event. Credentials are left out of the details, even encrypted.

Exactly once: the records of a batch and the consumer offsets past it are committed in one Kafka
transaction (stable transactional id), so a crash replays the batch and read_committed readers
never see a record twice.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter, Gauge

from events import legacy_principal
from runtime import kafka
from runtime import topics as topic_spec
from runtime.deadletter import dead_letter
from runtime.kafka import KafkaAccess, access_from_env, instance_transactional_id
from runtime.settings import env, read
from schemas import AUDIT_TOPIC_PATTERN as AUDIT_PATTERN
from schemas import audit_topic, short_name
from schemas.errors import PoisonMessage
from schemas.registry import AUDIT_SUBJECT, EVENTS_SUBJECT, Registry, Serde

REDACTED = "<redacted>"
SECRET_FIELDS = frozenset({"credentials", "password", "token", "sealed_password"})

RECORDS = Counter("dbaas_audit_records_total", "Audit records written", ["kind"])
TOPICS = Counter("dbaas_audit_topics_created_total", "Per-tenant audit topics created")
LAG = Gauge("dbaas_audit_lag", "Events not yet audited", ["partition"])
DEAD_LETTERED = Counter("dbaas_audit_dead_lettered_total",
                        "Messages of the event log that are no event, dead-lettered")
log = structlog.get_logger("audit")


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if k in SECRET_FIELDS and v is not None else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def decode(read: Callable[[bytes], dict[str, Any]], data: bytes | None) -> dict[str, Any]:
    """Bytes of `dbaas.events` -> the audit record of the event; raises only `PoisonMessage`."""
    event = read(data or b"")
    try:
        return record_of(event)
    except (TypeError, KeyError, ValueError) as exc:
        raise PoisonMessage(f"not an event record: {type(exc).__name__}: {exc}") from exc


def record_of(event: dict[str, Any]) -> dict[str, Any]:
    """The audit record of one event, from its decoded Avro record (no domain objects are built:
    the writer reads every event of the platform, so it stays on the plain dicts). Envelopes of
    version 1 named bare subjects: the actor is the principal it was (`events.legacy_principal`)."""
    name, fields = event["payload"]
    actor = event.get("actor_subject")
    if actor and event.get("schema_version", 1) < 2:
        actor = legacy_principal(actor)
    action = short_name(name)
    kind, outcome, reason, message = "event", None, None, None
    if action == "OperationAccepted":
        kind, outcome, action = "command", "accepted", fields["operation_type"]
    elif action == "CommandRejected":
        kind, outcome, action = "command", "rejected", fields["command_type"]
        reason, message = fields["reason_code"], fields["message"]
    return {
        "audit_id": event["event_id"], "tenant_id": event["tenant_id"], "occurred_at": event["occurred_at"],
        "kind": kind, "action": action, "outcome": outcome, "actor": actor,
        "reason_code": reason, "message": message, "correlation_id": event["correlation_id"],
        "command_id": event["command_id"], "operation_id": fields.get("operation_id") or event.get("operation_id") or event["command_id"],
        "aggregate_type": event["aggregate_type"], "aggregate_id": event["aggregate_id"],
        "sequence": event["sequence"],
        "details": json.dumps({"event": short_name(name), **_redact(fields)}, sort_keys=True, default=str),
    }


@dataclass(frozen=True)
class AuditSettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    events_topic: str = env("DBAAS_EVENTS_TOPIC", "dbaas.events")
    group_id: str = env("DBAAS_AUDIT_GROUP", "dbaas-audit")
    transactional_id: str = env("DBAAS_AUDIT_TXN_ID", "dbaas-audit-0", compose=instance_transactional_id(
        "DBAAS_AUDIT_TXN_ID", "dbaas-audit"))  # one per instance, stable across its restarts
    profile: str = env("DBAAS_TOPIC_PROFILE", "local")
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)

    @classmethod
    def from_env(cls) -> AuditSettings:
        return read(cls)


class AuditWriter:
    def __init__(self, settings: AuditSettings):
        self.settings = settings
        registry = Registry(settings.registry_url)
        self.events = Serde(registry, EVENTS_SUBJECT)
        self.audit = Serde(registry, AUDIT_SUBJECT)
        self.admin = AdminClient(kafka.admin_config(settings.kafka))
        self.known: set[str] = set()
        self.consumer = Consumer(kafka.consumer_config(settings.kafka, settings.group_id))
        self.producer = Producer(kafka.transactional_config(settings.kafka, settings.transactional_id))

    def run(self, stop) -> None:
        self.producer.init_transactions(30)
        self.consumer.subscribe([self.settings.events_topic])
        log.info("started", events=self.settings.events_topic)
        try:
            while not stop.is_set():
                # Large batches: each transaction spans the audit topics of every tenant in it.
                batch = kafka.messages(self.consumer.consume(2000, timeout=0.25))
                if batch:
                    self._write(batch)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            log.info("stopped")

    def _write(self, batch: list[Message]) -> None:
        decoded: list[tuple[Message, dict[str, Any] | str]] = []
        for msg in batch:
            try:
                decoded.append((msg, decode(self.events.decode, msg.value())))
            except PoisonMessage as exc:
                decoded.append((msg, str(exc)))
        self._ensure_topics({r["tenant_id"] for _, r in decoded if isinstance(r, dict)})
        self.producer.begin_transaction()
        try:
            for msg, record in decoded:
                if isinstance(record, str):
                    dead_letter(self.producer, f"{self.settings.events_topic}.dlq", msg, f"not an event: {record}")
                    DEAD_LETTERED.inc()
                    continue
                self.producer.produce(audit_topic(record["tenant_id"]), key=record["aggregate_id"].encode(),
                                      value=self.audit.encode(record),
                                      headers=[("correlation-id", record["correlation_id"].encode())])
                RECORDS.labels(record["kind"]).inc()
            self.producer.send_offsets_to_transaction(self.consumer.position(self.consumer.assignment()),
                                                      self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and hasattr(err, "fatal") and err.fatal():
                raise
            log.warning("audit transaction aborted; the batch is written again", error=str(exc))
            self.producer.abort_transaction(30)
            kafka.rewind(self.consumer, batch)
            return
        for partition, behind in kafka.lag(self.consumer).items():
            LAG.labels(str(partition)).set(behind)

    def _ensure_topics(self, tenants: set[str]) -> None:
        """Create the audit topics of tenants not seen yet (a new organization's first event)."""
        missing = tenants - self.known
        if not missing:
            return
        existing = self.admin.list_topics(timeout=30).topics
        specs = []
        for tenant in missing:
            try:
                spec = topic_spec.topic_for(AUDIT_PATTERN, self.settings.profile, tenant=tenant)
            except topic_spec.TopicSpecError as exc:  # not a topic-safe slug: decide never accepts one
                log.error("no audit topic for this tenant id", tenant=tenant, error=str(exc))
                raise
            if spec.name not in existing:
                specs.append(spec)
        if specs:
            _, _, replication = topic_spec.load(self.settings.profile)
            report = topic_spec.apply(self.admin, specs, replication)
            for name in report.created:
                TOPICS.inc()
                log.info("audit topic created", topic=name)
        self.known |= missing


def main() -> int:
    from runtime import process

    return process.main("audit", AuditSettings.from_env, lambda settings, stop: AuditWriter(settings).run(stop))


if __name__ == "__main__":
    raise SystemExit(main())
