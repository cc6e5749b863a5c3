"""Helpers of the projection integration tests: an event-log builder, topics, databases, a runner thread.

Events are built directly as `events.Envelope`s (sequences per aggregate, ids and times derived from
a counter) and produced in the Confluent wire format through the registry, key = tenant id.
"""
from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError

from events import (
    BackupClaimCommitted,
    BackupClaimRendered,
    BackupDeletionRequested,
    BackupPolicySet,
    BackupRequested,
    CommandRejected,
    Envelope,
    Event,
    OperationAccepted,
    OrganizationCreated,
    Resources,
    ServiceDeleted,
    ServiceDeletionRequested,
    ServiceRequested,
    ServiceScaleRequested,
    to_avro,
)
from projections.runner import run
from projections.settings import Settings, sqlalchemy_url
from runtime.kafka import KafkaAccess
from schemas.registry import EVENTS_SUBJECT, Registry, Serde

T0 = datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)
SMALL = Resources(cpu=0.5, memory_gb=1, storage_gb=10, replicas=1)
LARGE = Resources(cpu=2.0, memory_gb=8, storage_gb=50, replicas=3)


@dataclass
class EventLog:
    """Builds a valid event log: per-aggregate gap-free sequences, one OperationAccepted per command."""

    envelopes: list[Envelope] = field(default_factory=list)
    sequences: dict[tuple[str, str, str], int] = field(default_factory=dict)
    clock: int = 0

    def _emit(self, tenant: str, command_id: str, changes: list[tuple[str, str, Event]], actor: str,
              operation_id: str | None = None) -> None:
        for aggregate_type, aggregate_id, payload in changes:
            key = (tenant, aggregate_type, aggregate_id)
            self.sequences[key] = self.sequences.get(key, 0) + 1
            self.clock += 1
            self.envelopes.append(Envelope(
                event_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{key}/{self.sequences[key]}")),
                tenant_id=tenant, aggregate_type=aggregate_type, aggregate_id=aggregate_id,
                sequence=self.sequences[key], occurred_at=T0 + timedelta(seconds=self.clock),
                command_id=command_id, correlation_id=f"corr-{command_id}", causation_id=command_id,
                payload=payload, actor_subject=actor, operation_id=operation_id))

    def _accepted(self, tenant: str, change: tuple[str, str, Event], command_type: str, steps: int,
                  actor: str) -> str:
        command_id = str(uuid.uuid4())
        start = OperationAccepted(command_id, command_type, change[1], steps, f"fp-{command_id[:8]}")
        self._emit(tenant, command_id, [change, ("operation", command_id, start)], actor)
        return command_id

    def organization(self, tenant: str, display_name: str, owner: str = "alice") -> str:
        return self._accepted(tenant, ("organization", tenant, OrganizationCreated(tenant, display_name, owner)),
                              "CreateOrganization", 0, owner)

    def service(self, tenant: str, service_id: str, name: str, *, engine: str = "yugabyte", pop: str = "local",
                resources: Resources = SMALL, labels: dict[str, str] | None = None, actor: str = "alice") -> str:
        payload = ServiceRequested(service_id, name, engine, "2.25", pop, "small", resources, False,
                                   labels or {})
        return self._accepted(tenant, ("service", service_id, payload), "CreateService", 3, actor)

    def scale(self, tenant: str, service_id: str, old: Resources, new: Resources, actor: str = "alice") -> str:
        return self._accepted(tenant, ("service", service_id, ServiceScaleRequested(service_id, old, new)),
                              "ScaleService", 2, actor)

    def delete(self, tenant: str, service_id: str, actor: str = "alice") -> str:
        return self._accepted(tenant, ("service", service_id, ServiceDeletionRequested(service_id)),
                              "DeleteService", 2, actor)

    def service_deleted(self, tenant: str, service_id: str, operation_id: str) -> None:
        """The PoP reported the deletion `operation_id` done."""
        self._emit(tenant, str(uuid.uuid4()), [("service", service_id, ServiceDeleted(operation_id, service_id))],
                   "system:saga", operation_id)

    def backup_policy(self, tenant: str, service_id: str, *, schedule: str | None = "0 3 * * *",
                      retain_count: int = 7, retain_days: int = 30, pitr: bool = True, actor: str = "alice") -> str:
        policy = BackupPolicySet(service_id, schedule, retain_count, retain_days, pitr)
        return self._accepted(tenant, ("service", service_id, policy), "SetBackupPolicy", 0, actor)

    def backup(self, tenant: str, service_id: str, backup_id: str, *, name: str = "orders",
               engine: str = "yugabyte", pop: str = "local", slot: str | None = None, pitr: bool = False,
               actor: str = "alice") -> str:
        """A backup accepted (the scheduler's when `slot` is given); the operation id."""
        command_id = str(uuid.uuid4())
        requested = BackupRequested(backup_id, command_id, service_id, name, engine, pop, slot, pitr)
        start = OperationAccepted(command_id, "BackupService", backup_id, 3, f"fp-{command_id[:8]}")
        self._emit(tenant, command_id, [("backup", backup_id, requested), ("operation", command_id, start)], actor,
                   command_id)
        return command_id

    def delete_backup(self, tenant: str, backup_id: str, service_id: str, *, pop: str = "local",
                      reason: str = "requested", actor: str = "alice") -> str:
        command_id = str(uuid.uuid4())
        requested = BackupDeletionRequested(backup_id, command_id, service_id, pop, reason)
        start = OperationAccepted(command_id, "DeleteBackup", backup_id, 3, f"fp-{command_id[:8]}")
        self._emit(tenant, command_id, [("backup", backup_id, requested), ("operation", command_id, start)], actor,
                   command_id)
        return command_id

    def backup_steps(self, tenant: str, backup_id: str, operation_id: str, *ends: Event,
                     rendered: bool = True, committed: bool = True) -> None:
        """The saga's and the PoP's reports on a backup operation: rendered, committed, then `ends`."""
        steps: list[Event] = [BackupClaimRendered(backup_id, operation_id, "ab" * 32)] if rendered else []
        if committed:
            steps.append(BackupClaimCommitted(backup_id, operation_id, f"tenants/{tenant}/local/backups/{backup_id}.yaml",
                                              "c0ffee"))
        for event in [*steps, *ends]:
            self._emit(tenant, str(uuid.uuid4()), [("backup", backup_id, event)], "system:saga", operation_id)

    def reject(self, tenant: str, command_type: str, reason_code: str, field_name: str | None, message: str,
               actor: str = "bob") -> str:
        command_id = str(uuid.uuid4())
        payload = CommandRejected(command_id, command_type, reason_code, field_name, message, "fp-x")
        self._emit(tenant, command_id, [("operation", command_id, payload)], actor)
        return command_id


def create_topic(bootstrap: KafkaAccess, prefix: str, partitions: int = 3) -> str:
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AdminClient(bootstrap.client())  # kept alive until the topic exists
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def delete_topics(bootstrap: KafkaAccess, names: list[str]) -> None:
    if names:
        admin = AdminClient(bootstrap.client())
        for future in admin.delete_topics(names).values():
            future.result(30)


def produce(bootstrap: KafkaAccess, registry_url: str, topic: str, envelopes: list[Envelope]) -> None:
    registry = Registry(registry_url)
    try:
        serde = Serde(registry, EVENTS_SUBJECT)
        produce_raw(bootstrap, topic, [(e.tenant_id.encode(), serde.encode(to_avro(e))) for e in envelopes])
    finally:
        registry.close()


def produce_in_transaction(bootstrap: KafkaAccess, registry_url: str, topic: str, envelopes: list[Envelope],
                           commit: bool = True) -> None:
    """Produce like the command processor does: in one Kafka transaction, committed or aborted."""
    registry = Registry(registry_url)
    producer = Producer({**bootstrap.client(), "transactional.id": f"test-{uuid.uuid4()}"})
    try:
        serde = Serde(registry, EVENTS_SUBJECT)
        producer.init_transactions(30)
        producer.begin_transaction()
        for e in envelopes:
            producer.produce(topic, key=e.tenant_id.encode(), value=serde.encode(to_avro(e)))
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    finally:
        registry.close()


def produce_raw(bootstrap: KafkaAccess, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**bootstrap.client(), "enable.idempotence": True, "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def end_offsets(bootstrap: KafkaAccess, topic: str) -> dict[int, int]:
    consumer = Consumer({**bootstrap.client(), "group.id": f"probe-{uuid.uuid4()}",
                         "isolation.level": "read_committed"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        consumer.close()


def consume_all(bootstrap: KafkaAccess, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    from tests.conftest import wait_for

    consumer = Consumer({**bootstrap.client(), "group.id": f"probe-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list[Any] = []
    try:
        def poll() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
            return len(got) >= count
        wait_for(poll, timeout=timeout, interval=0, what=f"{count} records on {topic}")
    finally:
        consumer.close()
    return got


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """A new, empty database on the platform's PostgreSQL; dropped afterwards. Yields its DSN."""
    name = f"projections_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _db = admin_dsn.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def engine_for(dsn: str) -> Engine:
    return create_engine(sqlalchemy_url(dsn))


def positions_of(engine: Engine, topic: str) -> dict[tuple[str, int], int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT projection, partition, next_offset FROM projection_positions "
                                 "WHERE topic = :t"), {"t": topic})
        return {(r.projection, r.partition): r.next_offset for r in rows}


def caught_up(engine: Engine, topic: str, ends: dict[int, int],
              projections: tuple[str, ...] = ("organizations", "services", "operations", "members", "backups"),
              ) -> bool:
    try:
        stored = positions_of(engine, topic)
    except ProgrammingError:  # the runner has not created its tables yet
        return False
    return all(stored.get((name, p), 0) >= end for name in projections for p, end in ends.items() if end)


def dump(engine: Engine, table: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(f'SELECT * FROM "{table}" ORDER BY id'))]


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[threading.Event]:
    """`projections.runner.run` in a thread; stopped and joined on exit, its exception re-raised."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run(settings, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="projector", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the runner did not stop within 60 s"
    if failure:
        raise failure[0]
