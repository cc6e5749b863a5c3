"""The backup scheduler on the test platform: a service's every-minute backup policy makes the
schedulers — the launcher's and a second one started here, with a short deadline — ask for the
backup of the first slot after the policy, under the id derived from the service and the slot; the
command processor judges it once, however many times it is sent. The slot's backup does not
complete by the second scheduler's deadline: it raises an alert on `dbaas.alerts.{tenant}`, and
resolves it (same alert id) when the PoP reports the backup completed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

import events
from commands import Actor, CommandEnvelope
from commands.records import BackupService, SetBackupPolicy
from events import (
    BackupClaimCommitted,
    BackupCompleted,
    BackupPolicySet,
    BackupRequested,
    CommandRejected,
    OperationAccepted,
)
from processors.sagas.schedule import (
    SCHEDULER_ACTOR,
    alert_id_for,
    at_or_after,
    backup_command_id,
    backup_id_for,
    slot_text,
)
from schemas import alerts_topic
from schemas.registry import ALERTS_SUBJECT, EVENTS_SUBJECT, Registry, Serde
from tests.conftest import REPO, wait_for
from tests.integration.conftest import operation

EVERY_MINUTE = "* * * * *"
DEADLINE = 5  # seconds the second scheduler gives a slot's backup


class Tail:
    """One topic read from its start and followed; decoded records of interest kept in order."""

    def __init__(self, stack, topic: str, subject: str, key: bytes | None = None):
        self.serde = Serde(Registry(stack.registry), subject)
        self.key = key
        self.records: list = []
        self.consumer = Consumer({**stack.kafka.client(), "group.id": f"test-{uuid.uuid4()}",
                                  "enable.auto.commit": False, "isolation.level": "read_committed"})
        wait_for(lambda: topic in AdminClient(stack.kafka.client()).list_topics(timeout=10).topics,
                 timeout=120, what=f"topic {topic}")
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in parts])

    def read(self) -> list:
        for msg in self.consumer.consume(1000, timeout=0.5):
            if msg.error() or (self.key is not None and msg.key() != self.key):
                continue
            self.records.append(self.serde.decode(msg.value()))
        return self.records

    def until(self, predicate, what: str, timeout: float = 120):
        return wait_for(lambda: predicate(self.read()), timeout=timeout, interval=0.1, what=what)

    def close(self) -> None:
        self.consumer.close()


def _scheduler(stack, log_path) -> subprocess.Popen:
    """A second scheduler beside the launcher's: the platform's key, a short tick and deadline."""
    secrets = json.loads((stack.home / "secrets.json").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO), **stack.kafka_env("scheduler"),
           "DBAAS_REGISTRY_URL": stack.registry, "DBAAS_SIGNING_KEY_ID": "platform",
           "DBAAS_SIGNING_KEY": secrets["signing_key_platform"], "DBAAS_METRICS_PORT": "0",
           "DBAAS_SCHEDULER_TICK_SECONDS": "1", "DBAAS_SCHEDULER_MISSED_AFTER": str(DEADLINE),
           "DBAAS_SCHEDULER_WAIT_FOR_NEXT_SLOT": "false"}
    return subprocess.Popen([sys.executable, "-m", "processors.scheduler"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log_path.open("w"))


def _policy(stack, org: str, service_id: str, schedule: str | None) -> str:
    """alice sets the service's backup policy (through the gateway's key, as the API will)."""
    command = CommandEnvelope(str(uuid.uuid4()), org, Actor(stack.principal("alice"), ("org-owner",)),
                              datetime.now(UTC), str(uuid.uuid4()), SetBackupPolicy(service_id, schedule, 0, 0, False))
    publisher = stack.publisher()
    try:
        publisher.publish(command)
    finally:
        publisher.close()
    return command.command_id


def test_a_slot_is_judged_once_with_two_schedulers_and_its_missed_deadline_alerted_then_resolved(
        api, org, stack, tmp_path):
    assert stack.status["components"]["scheduler"]["state"] == "healthy", "the launcher's scheduler runs"
    created = api.post("/services", json={"org": org, "name": "orders", "engine": "yugabyte", "pop": "frankfurt",
                                          "size": "small"}).json()
    service_id = created["service_id"]
    operation(api, created["operation_id"], lambda o: o["done_steps"] == 2, "the creation committed")
    stack.report("frankfurt", org, service_id, created["operation_id"], "Ready", endpoint="orders.svc:5433")
    operation(api, created["operation_id"], lambda o: o["state"] == "Succeeded", "the service Ready")

    log_path = tmp_path / "scheduler.log"
    second = _scheduler(stack, log_path)
    log = Tail(stack, "dbaas.events", EVENTS_SUBJECT, key=org.encode())
    try:
        wait_for(lambda: '"started"' in log_path.read_text(), timeout=120, what="the second scheduler replayed the log")
        policy_command = _policy(stack, org, service_id, EVERY_MINUTE)
        [policy] = log.until(lambda rs: [e for e in map(events.from_avro, rs) if e.command_id == policy_command
                                         and isinstance(e.payload, BackupPolicySet)], "the policy set")
        slot = slot_text(at_or_after(EVERY_MINUTE, policy.occurred_at))
        backup_id, command_id = backup_id_for(service_id, slot), backup_command_id(service_id, slot)

        def of_slot(records):
            evs = [events.from_avro(r) for r in records]
            return [e for e in evs if e.command_id == command_id] or None

        judged = log.until(of_slot, f"the backup of slot {slot}", timeout=120)
        # a third sender of the same slot (as a scheduler restarted before seeing it judged would)
        duplicate = CommandEnvelope(command_id, org, SCHEDULER_ACTOR, datetime.now(UTC), command_id,
                                    BackupService(service_id, backup_id, slot))
        publisher = stack.publisher(holder="platform")
        try:
            publisher.publish(duplicate)
        finally:
            publisher.close()

        # the second scheduler's deadline passes: it raises the missed slot's alert
        alerts = Tail(stack, alerts_topic(org), ALERTS_SUBJECT)
        alert_id = alert_id_for(org, service_id, "backup_slot_missed", slot)
        [raised] = alerts.until(lambda rs: [r for r in rs if r["alert_id"] == alert_id and r["state"] == "raised"],
                                "the missed slot's alert", timeout=60)[:1]
        assert raised["tenant_id"] == org and raised["service_id"] == service_id and raised["source"] == "scheduler"
        assert raised["severity"] == "warning" and slot in raised["message"]
        assert raised["raised_at"] == datetime.fromisoformat(slot) + timedelta(seconds=DEADLINE)

        evs = [e for e in (events.from_avro(r) for r in log.read()) if e.command_id == command_id]
        requested = [e.payload for e in evs if isinstance(e.payload, BackupRequested)]
        assert len(requested) == 1, f"the slot was judged once: {[type(e.payload).__name__ for e in evs]}"
        assert requested[0].backup_id == backup_id and requested[0].slot == slot
        assert [type(e.payload) for e in evs].count(OperationAccepted) == 1
        assert not [e for e in evs if isinstance(e.payload, CommandRejected)], "a repeat is no conflict"
        assert judged and judged[0].actor_subject == SCHEDULER_ACTOR.subject

        # the PoP reports the backup stored: the alert is resolved under the same id
        operation_of = requested[0].operation_id
        log.until(lambda rs: any(isinstance(e.payload, BackupClaimCommitted) and e.payload.backup_id == backup_id
                                 for e in map(events.from_avro, rs)), "the backup's claim committed")
        taken = datetime.now(UTC).replace(microsecond=0)
        stack.report("frankfurt", org, service_id, operation_of, "Completed", backup_id=backup_id,
                     details=json.dumps({"taken_at": taken.isoformat(), "size_bytes": 2048,
                                         "location": f"s3://dbaas-backups/tenants/{org}/backups/{backup_id}",
                                         "dek_id": "dek-1", "kek_id": "kek-1"}))
        log.until(lambda rs: any(isinstance(e.payload, BackupCompleted) and e.payload.backup_id == backup_id
                                 for e in map(events.from_avro, rs)), "the backup completed")
        [resolved] = alerts.until(lambda rs: [r for r in rs if r["alert_id"] == alert_id
                                              and r["state"] == "resolved"], "the alert resolved", timeout=60)[:1]
        assert resolved["raised_at"] == raised["raised_at"] and resolved["resolved_at"] is not None
        alerts.close()

        senders = [path for path in (log_path, stack.home / "logs" / "scheduler.log") if path.exists()
                   and any(json.loads(line).get("command_id") == command_id
                           for line in path.read_text().splitlines() if line.startswith("{"))]
        assert senders, "a scheduler sent the slot's backup"
    finally:
        _policy(stack, org, service_id, None)  # the launcher's scheduler stops backing it up
        log.close()
        second.send_signal(signal.SIGTERM)
        code = second.wait(60)
    assert code == 0, f"the scheduler stops cleanly on SIGTERM:\n{log_path.read_text()[-3000:]}"
