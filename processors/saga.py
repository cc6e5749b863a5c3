"""The service saga: makes each started operation true in the GitOps repository, and turns PoP
status reports into the commands that finish operations.

For every `OperationStarted` on `dbaas.events` it renders the service's manifests with the real
`helm template` (action apply) or plans their removal (action delete), records the render, commits
to `tenants/{tenant}/{pop}/{service}.yaml` with `Operation-Id:`/`Correlation-Id:` trailers, and
records the commit. For every report on `dbaas.pop.status` it sends `RecordPopReport`.

Outcomes travel as system commands through `dbaas.commands`, so the command processor stays the
only writer of events (gap-free sequences, one judge). Every effect is safe to repeat: command ids
are derived from (operation, step), a commit is looked up by its Operation-Id before committing
again, and content-identical commits never happen. So offsets are committed after the effects
(at least once), and a saga killed anywhere resumes from the log.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from prometheus_client import Counter, Histogram

import events
from commands import (
    Actor,
    CommandEnvelope,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
)
from commands.publisher import Publisher
from events import Envelope, OperationStarted
from gitops import helm, layout, manifests
from gitops.committer import GitOpsCommitter
from gitops.errors import GitOpsError
from processors.deadletter import dead_letter
from schemas.errors import PoisonMessage
from schemas.registry import EVENTS_SUBJECT, POP_STATUS_SUBJECT, Registry, Serde

SAGA_ACTOR = Actor("system:saga", ("system",))
STEP_NAMESPACE = uuid.UUID("8f4c2b1e-7d3a-4e55-9b61-2a0c9e7d4f10")

STEPS = Counter("dbaas_saga_steps_total", "Saga steps recorded", ["step", "action"])
STEP_SECONDS = Histogram("dbaas_saga_step_seconds", "Time to render and commit one operation",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
REPORTS = Counter("dbaas_pop_reports_total", "PoP status reports forwarded", ["phase"])
RETRIES = Counter("dbaas_saga_retries_total", "Transient failures retried", ["error"])

log = structlog.get_logger("saga")


@dataclass(frozen=True)
class SagaSettings:
    kafka: str
    registry_url: str
    gitops_remote: str
    workdir: Path
    events_topic: str = "dbaas.events"
    commands_topic: str = "dbaas.commands"
    pop_status_topic: str = "dbaas.pop.status"
    group_id: str = "dbaas-service-saga"
    metrics_port: int = 0

    @classmethod
    def from_env(cls) -> "SagaSettings":
        env = os.environ
        state = Path(env.get("DBAAS_STATE_DIR", "/tmp/dbaas-saga"))
        return cls(env["DBAAS_KAFKA_BOOTSTRAP"], env["DBAAS_REGISTRY_URL"], env["DBAAS_GITOPS_REMOTE"],
                   state / "gitops-work", env.get("DBAAS_EVENTS_TOPIC", cls.events_topic),
                   env.get("DBAAS_COMMANDS_TOPIC", cls.commands_topic),
                   env.get("DBAAS_POP_STATUS_TOPIC", cls.pop_status_topic),
                   env.get("DBAAS_SAGA_GROUP", cls.group_id), int(env.get("DBAAS_METRICS_PORT", "0")))


def step_command_id(operation_id: str, step: str) -> str:
    """The same step of the same operation always has the same command id: the processor judges it once."""
    return str(uuid.uuid5(STEP_NAMESPACE, f"{operation_id}/{step}"))


def chart_values(e: OperationStarted, tenant: str) -> dict:
    return {"tenant": tenant, "serviceId": e.service_id, "name": e.name, "engine": e.engine,
            "engineVersion": e.engine_version, "pop": e.pop, "cpu": e.resources.cpu,
            "memoryGi": e.resources.memory_gb, "storageGi": e.resources.storage_gb,
            "replicas": e.resources.replicas, "deletionProtection": e.deletion_protection,
            "labels": dict(e.labels)}


class ServiceSaga:
    def __init__(self, settings: SagaSettings):
        self.settings = settings
        registry = Registry(settings.registry_url)
        self.events = Serde(registry, EVENTS_SUBJECT)
        self.reports = Serde(registry, POP_STATUS_SUBJECT)
        self.publisher = Publisher(settings.kafka, settings.registry_url, settings.commands_topic)
        self.committer = GitOpsCommitter(settings.gitops_remote, settings.workdir, "dbaas saga",
                                         "saga@dbaas.local")
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka, "group.id": settings.group_id,
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })

    def run(self, stop) -> None:
        self.committer.apply(layout.bootstrap_files(self.settings.gitops_remote), "Bootstrap the GitOps layout",
                             operation_id="bootstrap", correlation_id="bootstrap")
        self.consumer.subscribe([self.settings.events_topic, self.settings.pop_status_topic])
        log.info("started", remote=self.settings.gitops_remote)
        try:
            while not stop.is_set():
                for msg in self.consumer.consume(100, timeout=0.2):
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF or msg.error().retriable():
                            continue
                        raise KafkaException(msg.error())
                    self._handle_with_retries(msg, stop)
                    self.consumer.commit(message=msg, asynchronous=False)
        finally:
            self.consumer.close()
            self.publisher.close()
            log.info("stopped")

    def _handle_with_retries(self, msg: Message, stop) -> None:
        delay = 0.5
        while True:
            try:
                return self._handle(msg)
            except (GitOpsError, OSError) as exc:
                if isinstance(exc, GitOpsError) and not exc.transient:
                    raise
                RETRIES.labels(type(exc).__name__).inc()
                log.warning("transient failure, retrying", error=str(exc), retry_in=delay)
                if stop.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    def _handle(self, msg: Message) -> None:
        try:
            if msg.topic() == self.settings.pop_status_topic:
                return self._report(self.reports.decode(msg.value()))
            env = events.from_avro(self.events.decode(msg.value()))
        except (PoisonMessage, events.EventError, TypeError, KeyError) as exc:
            log.warning("undecodable input dead-lettered", topic=msg.topic(), reason=str(exc))
            dead_letter(self.publisher.producer, f"{msg.topic()}.dlq", msg, str(exc))
            return None
        if isinstance(env.payload, OperationStarted):
            structlog.contextvars.bind_contextvars(correlation_id=env.correlation_id,
                                                   operation_id=env.payload.operation_id)
            try:
                self._advance(env, env.payload)
            finally:
                structlog.contextvars.unbind_contextvars("correlation_id", "operation_id")
        return None

    def _advance(self, env: Envelope, e: OperationStarted) -> None:
        started = time.perf_counter()
        path = layout.pop_service_path(env.tenant_id, e.pop, e.name)
        if e.action == "delete":
            content = None
        else:
            docs = helm.render(helm.SERVICE_CHART, chart_values(e, env.tenant_id), release_name=e.name,
                               namespace=f"tenant-{env.tenant_id}")
            content = manifests.dump_all(docs)
        digest = hashlib.sha256((content or "").encode()).hexdigest()
        self._send(env, "render", e.action, RecordServiceClaimRendered(e.service_id, e.operation_id, digest))
        sha = self.committer.find_commit(e.operation_id)
        if sha is None:
            verb = "Remove" if content is None else "Apply"
            result = self.committer.apply({path: content}, f"{verb} {env.tenant_id}/{e.name} in {e.pop}",
                                          operation_id=e.operation_id, correlation_id=env.correlation_id)
            sha = result.sha
        self._send(env, "commit", e.action,
                   RecordServiceClaimCommitted(e.service_id, e.operation_id, e.pop, path, sha))
        STEP_SECONDS.observe(time.perf_counter() - started)
        log.info("operation committed, awaiting the PoP", path=path, sha=sha, action=e.action)

    def _send(self, env: Envelope, step: str, action: str, payload) -> None:
        operation_id = payload.operation_id
        self.publisher.publish(CommandEnvelope(
            command_id=step_command_id(operation_id, step), tenant_id=env.tenant_id, actor=SAGA_ACTOR,
            issued_at=datetime.now(timezone.utc), correlation_id=env.correlation_id, payload=payload,
            causation_id=env.event_id))
        STEPS.labels(step, action).inc()

    def _report(self, r: dict) -> None:
        payload = RecordPopReport(r["service_id"], r["operation_id"], r["pop"], r["phase"], r["endpoint"],
                                  r["reason"], r.get("credentials"))
        self.publisher.publish(CommandEnvelope(
            command_id=step_command_id(r["operation_id"], f"report/{r['report_id']}"), tenant_id=r["tenant_id"],
            actor=Actor(f"system:pop:{r['pop']}", ("system",)), issued_at=datetime.now(timezone.utc),
            correlation_id=r["report_id"], payload=payload))
        REPORTS.labels(r["phase"]).inc()


def main() -> int:
    from runtime import logs, metrics, signals

    logs.configure("saga")
    settings = SagaSettings.from_env()
    stop = signals.stop_event()
    metrics.serve(settings.metrics_port)
    ServiceSaga(settings).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
