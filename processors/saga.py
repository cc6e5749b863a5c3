"""The service saga process (`python -m processors.saga`): the composition root that builds the
real ports — the Kafka consumer of `dbaas.events` and `dbaas.pop.status`, the registry decoders,
the chart renderer (`gitops.helm.Renderer`: Helm in one long-lived process), the GitOps
committer, the signed command publisher, the dead-letter producer, the keyring and the clock —
and runs the service saga's policy (`processors.sagas.service`: what to do) with the saga runner
(`processors.sagas.runner`: doing it, with one retry and timeout policy).

What the saga does: for every `OperationStarted` it renders the service's manifests (action apply:
the service chart, rendered as `helm template` renders it; delete: the file's removal), records
the render, commits to
`tenants/{tenant}/{pop}/{service}.yaml` with `Operation-Id:`/`Correlation-Id:` trailers (and
`Trace-Id:` while tracing is on) and records the commit; it relays every verified PoP report as
`RecordPopReport`; it reverts the commit of a failed or cancelled operation that asks for
compensation; and it times out operations whose PoP does not report in time
(`DBAAS_SAGA_STEP_TIMEOUTS`). Outcomes travel as system commands
through `dbaas.commands`, so the command processor stays the only writer of events.

May import: everything the saga needs to talk to Kafka, the registry, git and helm; the decisions
stay in `processors.sagas.service`.
"""
from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

import events
from commands import CommandEnvelope
from events import (
    BackupDeletionRequested,
    BackupRequested,
    CdcDisableRequested,
    CdcEnableRequested,
    Envelope,
    OperationStarted,
)
from gitops import backups, cdc, helm, layout, manifests
from gitops.committer import GitOpsCommitter
from processors.sagas.errors import REASON_MAX, Verdict, classify, error_name, refusal_reason  # noqa: F401
from processors.sagas.runner import LAG, SagaRunner
from processors.sagas.service import (  # noqa: F401  (the saga's public names, as before)
    DEFAULT_TIMEOUTS,
    SAGA_ACTOR,
    SagaState,
    pop_report_timeout,
    revert_operation_id,
    step_command_id,
)
from runtime import kafka, topics
from runtime.deadletter import dead_letter
from runtime.kafka import KafkaAccess, access_from_env
from runtime.publisher import Publisher
from runtime.settings import env, read
from runtime.signing import Keyring, Signer
from schemas.catalog import KUBERNETES_POPS
from schemas.registry import EVENTS_SUBJECT, POP_STATUS_SUBJECT, Registry, Serde

log = structlog.get_logger("saga")


def parse_timeouts(text: str | None) -> dict[str, int]:
    """`render=120,commit=300,pop-report=1800,pop-report@lagos=3600` (any subset) over the
    defaults; `pop-report@<pop>` sets the wait for one PoP's reports."""
    timeouts = dict(DEFAULT_TIMEOUTS)
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        step, _, seconds = item.partition("=")
        known = step in DEFAULT_TIMEOUTS or (step.startswith("pop-report@") and len(step) > len("pop-report@"))
        if not known or not seconds.strip().isdigit() or int(seconds) <= 0:
            raise ValueError(f"DBAAS_SAGA_STEP_TIMEOUTS: {item!r} is not <step>=<seconds> with a step "
                             f"among {', '.join(DEFAULT_TIMEOUTS)} (or pop-report@<pop>) and a positive "
                             "whole number of seconds")
        timeouts[step] = int(seconds)
    return timeouts


def _workdir(environ) -> Path:
    return Path(environ.get("DBAAS_STATE_DIR") or "/tmp/dbaas-saga") / "gitops-work"


@dataclass(frozen=True)
class SagaSettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    gitops_remote: str = env("DBAAS_GITOPS_REMOTE")
    workdir: Path = env("DBAAS_STATE_DIR", compose=_workdir)  # its clone of the GitOps repository
    # the platform key its commands are signed with
    signer: Signer = env("DBAAS_SIGNING_KEY", compose=Signer.from_env, hint="the platform's key", repr=False)
    keyring: Path = env("DBAAS_KEYRING", parse=Path)  # the PoPs' public keys, to verify their reports
    events_topic: str = env("DBAAS_EVENTS_TOPIC", "dbaas.events")
    commands_topic: str = env("DBAAS_COMMANDS_TOPIC", "dbaas.commands")
    pop_status_topic: str = env("DBAAS_POP_STATUS_TOPIC", "dbaas.pop.status")
    group_id: str = env("DBAAS_SAGA_GROUP", "dbaas-service-saga")
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)
    timeouts: dict[str, int] = env("DBAAS_SAGA_STEP_TIMEOUTS", dict(DEFAULT_TIMEOUTS), parse=parse_timeouts)
    backup_bucket: str = env("DBAAS_S3_BUCKET", "dbaas-backups")  # where the PoPs store backups

    @classmethod
    def from_env(cls) -> SagaSettings:
        return read(cls)


# -- the real ports --------------------------------------------------------------------------
def chart_values(e: OperationStarted, tenant: str, bucket: str = "dbaas-backups") -> dict:
    values = {"tenant": tenant, "serviceId": e.service_id, "name": e.name, "engine": e.engine,
              "engineVersion": e.engine_version, "pop": e.pop, "cpu": e.resources.cpu,
              "memoryGi": e.resources.memory_gb, "storageGi": e.resources.storage_gb,
              "replicas": e.resources.replicas, "deletionProtection": e.deletion_protection,
              "labels": dict(e.labels)}
    if e.restore is not None:  # only a creation carries it (`decide`): a restore never runs twice
        r = e.restore
        values["restore"] = backups.restore_values(
            source_tenant=tenant, source_service_id=r.source_service_id, source_engine=r.source_engine,
            backup_id=r.backup_id, target_time=r.to_time,
            location={"bucket": bucket, "prefix": f"tenants/{tenant}/backups"})
    return values


LOCAL_POP = "local"
# Input messages taken at most at once: the commits a batch's operations ask for are made together
# (one git commit), so a full batch makes fewer, larger commits when the saga is behind.
BATCH = 500


def cdc_topic_settings(engine: str, pop: str) -> cdc.TopicSettings:
    """How Connect creates a connector's topics: its engine's CDC pattern in the topic spec, with
    the PoP's profile (`local`: one replica; the Kubernetes PoPs: production)."""
    profile = "local" if pop == LOCAL_POP else "production"
    _, patterns, replication_factor = topics.load(profile)
    [pattern] = [p for name, p in patterns.items() if name.startswith(f"dbaas.cdc.{engine}.")]
    return cdc.TopicSettings(pattern["partitions"], replication_factor, dict(pattern["config"]))


def kube_pop_files(repo_url: str, tenant: str, e: OperationStarted, renderer: helm.Renderer | None = None,
                   application: tuple[str, str] | None = None) -> dict[str, str | None]:
    """What a commit for a Kubernetes PoP writes besides the service's file:

    - the Argo CD Application of (tenant, PoP) (``argocd/applications/<tenant>-<pop>.yaml``, a child
      of the app-of-apps), syncing ``tenants/<tenant>/<pop>`` into namespace ``tenant-<tenant>`` of
      the PoP's cluster — the same bytes every time, so only the first commit adds it (``application``:
      it, rendered before);
    - the deletion record (``tenants/<tenant>/<pop>/deletions/<service>.yaml``): a ConfigMap naming
      the deleting operation, written by a deletion and removed by the next creation of the name.
      Argo CD applies it before it prunes the claim (PruneLast), so the PoP operator, finalizing the
      claim, knows which operation it reports Deleted for."""
    files: dict[str, str | None] = dict([application or application_file(repo_url, tenant, e.pop, renderer)])
    record = layout.deletion_record_path(tenant, e.pop, e.name)
    if e.action == "delete":
        files[record] = manifests.dump_all([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"dbaas-deletion-{e.name}", "namespace": f"tenant-{tenant}",
                         "labels": {"app.kubernetes.io/part-of": "dbaas", "dbaas.io/service-id": e.service_id,
                                    "dbaas.io/deletion-record": "true"}},
            "data": {"serviceId": e.service_id, "operationId": e.operation_id}}])
    else:
        files[record] = None
    return files


def application_file(repo_url: str, tenant: str, pop: str, renderer: helm.Renderer | None = None
                     ) -> tuple[str, str]:
    """The (tenant, PoP) Argo CD Application's path and manifests (``dbaas-argocd-apps`` chart)."""
    values = {"repoURL": repo_url, "applications": [{"tenant": tenant, "pop": pop}]}
    docs = (renderer.render if renderer else helm.render)(helm.ARGOCD_APPS_CHART, values, release_name="apps",
                                                          namespace="argocd")
    return layout.application_path(docs[0]["metadata"]["name"]), manifests.dump_all(docs)


def backup_deletion_record(tenant: str, e: BackupDeletionRequested) -> dict[str, str | None]:
    """The record of a backup's deletion in a Kubernetes PoP
    (``tenants/<tenant>/<pop>/deletions/backups/<backup>.yaml``): a ConfigMap naming the deleting
    operation, applied before the DatabaseBackup is pruned, so the PoP operator, finalizing it,
    knows which operation it reports Deleted for. Backup ids are never reused: it stays, as a
    record, until the tenant's folder goes."""
    return {layout.backup_deletion_record_path(tenant, e.pop, e.backup_id): manifests.dump_all([{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"dbaas-backup-deletion-{e.backup_id}", "namespace": f"tenant-{tenant}",
                     "labels": {"app.kubernetes.io/part-of": "dbaas", "dbaas.io/backup-id": e.backup_id,
                                "dbaas.io/deletion-record": "true"}},
        "data": {"backupId": e.backup_id, "operationId": e.operation_id}}])}


class HelmRenderer:
    """Renders with Helm's charts through one long-lived `helm.Renderer` (the same bytes as
    `helm template`, without a process per render); `close` stops it."""

    def __init__(self, bucket: str = "dbaas-backups", repo_url: str | None = None,
                 renderer: helm.Renderer | None = None):
        self.bucket = bucket
        self.repo_url = repo_url  # the GitOps repository's URL for Argo CD Applications
        self.renderer = renderer or helm.Renderer()
        # (tenant, PoP) -> its Argo CD Application: the same for every operation there (values: the
        # repository, the tenant and the PoP), so rendered once per saga process
        self._applications: dict[tuple[str, str], tuple[str, str]] = {}

    def close(self) -> None:
        self.renderer.close()

    def render_backup(self, tenant_id: str, e: BackupRequested | BackupDeletionRequested
                      ) -> tuple[str, str | None] | tuple[str, str | None, dict[str, str | None]]:
        """A backup's claim path and manifests (None: remove them, for a deletion); a deletion in a
        Kubernetes PoP also writes its deletion record (``backup_deletion_record``)."""
        path = layout.backup_path(tenant_id, e.pop, e.backup_id)
        if isinstance(e, BackupDeletionRequested):
            if e.pop in KUBERNETES_POPS:
                return path, None, backup_deletion_record(tenant_id, e)
            return path, None
        content = backups.render_backup(
            self.renderer, tenant=tenant_id, pop=e.pop, engine=e.engine, service_id=e.service_id,
            service_name=e.service_name, backup_id=e.backup_id,
            destination={"bucket": self.bucket, "prefix": f"tenants/{tenant_id}/backups/{e.backup_id}"},
            encryption_key_id=None, kek_id=None, pitr=e.pitr,
            # the cluster learns which operation it runs from the DatabaseBackup (no commit trailers there)
            operation_id=e.operation_id if e.pop in KUBERNETES_POPS else None)
        return path, content

    def render_connector(self, tenant_id: str, e: CdcEnableRequested | CdcDisableRequested) -> tuple[str, str | None]:
        """A service's CDC connector path and KafkaConnector (None: remove it, to disable)."""
        path = layout.cdc_path(tenant_id, e.pop, e.service_id)
        if isinstance(e, CdcDisableRequested):
            return path, None
        return path, cdc.render_connector(
            tenant=tenant_id, pop=e.pop, engine=e.engine, service_id=e.service_id, service_name=e.service_name,
            connector=e.connector, tables=e.tables, topic=cdc_topic_settings(e.engine, e.pop),
            kubernetes=e.pop != LOCAL_POP)

    def prefetch(self, started: Sequence[tuple[str, OperationStarted]]) -> None:
        """Ask the renderer for these operations' manifests now (tenant, event): it renders them
        while the saga handles what comes before; `render` takes the answers."""
        for tenant_id, e in started:
            if e.action != "delete":
                try:
                    values = self._values(tenant_id, e)
                except (TypeError, ValueError, AttributeError):
                    continue  # `render` reports it
                self.renderer.prefetch(helm.SERVICE_CHART, values, e.name, f"tenant-{tenant_id}")

    def forget(self) -> None:
        """Drop what was prefetched and not rendered."""
        self.renderer.forget()

    def _values(self, tenant_id: str, e: OperationStarted) -> dict:
        values = chart_values(e, tenant_id, self.bucket)
        if e.pop in KUBERNETES_POPS:  # the cluster learns which operation it runs from the claim (no trailers there)
            values["operation"] = {"id": e.operation_id}
        return values

    def render(self, tenant_id: str, e: OperationStarted
               ) -> tuple[str, str | None] | tuple[str, str | None, dict[str, str | None]]:
        """The service's path in the repository and its manifests (None: remove them); in a
        Kubernetes PoP also the other files of the same commit (``kube_pop_files``)."""
        path = layout.pop_service_path(tenant_id, e.pop, e.name)
        kube = e.pop in KUBERNETES_POPS
        content = None
        if e.action != "delete":
            content = manifests.dump_all(self.renderer.render(helm.SERVICE_CHART, self._values(tenant_id, e),
                                                              release_name=e.name, namespace=f"tenant-{tenant_id}"))
        if not kube or not self.repo_url:
            return path, content
        key = (tenant_id, e.pop)
        if key not in self._applications:
            self._applications[key] = application_file(self.repo_url, tenant_id, e.pop, self.renderer)
        return path, content, kube_pop_files(self.repo_url, tenant_id, e, application=self._applications[key])


class KafkaSource:
    def __init__(self, settings: SagaSettings):
        self.settings = settings
        self.events_topic = settings.events_topic
        # cooperative-sticky: a rebalance hands over only the partitions that change owner, so an
        # instance replays (`SagaRunner.adopt`) only those, not every partition it keeps
        self.consumer = Consumer(kafka.consumer_config(settings.kafka, settings.group_id,
                                                       **{"partition.assignment.strategy": "cooperative-sticky"}))

    def replay(self, partitions: Collection[int] | None = None) -> Iterator[Message]:
        reader = kafka.reader(self.settings.kafka, f"{self.settings.group_id}-scan")
        try:
            starts = kafka.whole_topic(reader, self.settings.events_topic)
            if partitions is not None:
                starts = [tp for tp in starts if tp.partition in partitions]
            yield from kafka.read_to_end(reader, starts)
        finally:
            reader.close()

    def subscribe(self, runner: SagaRunner) -> None:
        """Join the saga's group on both inputs. The event partitions it is given are adopted by
        `runner` (their deadlines rebuilt from the log), those taken away released. A PoP report
        needs no state (it is verified and relayed as a command), so whichever instance holds its
        partition of `dbaas.pop.status` relays it."""
        events_topic = self.settings.events_topic
        count = len(self.consumer.list_topics(events_topic, timeout=30).topics[events_topic].partitions)

        def partition_of(tenant: str) -> int:
            return kafka.partition_for(tenant.encode(), count)

        def of_events(partitions: list[TopicPartition]) -> list[int]:
            return [tp.partition for tp in partitions if tp.topic == events_topic]

        self.consumer.subscribe(
            [events_topic, self.settings.pop_status_topic],
            on_assign=lambda _c, parts: runner.adopt(of_events(parts), partition_of),
            on_revoke=lambda _c, parts: runner.release(of_events(parts), partition_of),
            on_lost=lambda _c, parts: runner.release(of_events(parts), partition_of))

    def poll(self) -> list[Message]:
        messages = kafka.messages(self.consumer.consume(BATCH, timeout=0.2))
        self._observe_lag()
        return messages

    def _observe_lag(self) -> None:
        """Messages behind per assigned partition of both inputs (cached watermarks: no round trip)."""
        for tp in self.consumer.position(self.consumer.assignment()):
            _, high = self.consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            if tp.offset >= 0 and high is not None and high >= 0:
                LAG.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    def commit(self, msg: Message) -> None:
        self.consumer.commit(message=msg, asynchronous=False)

    def close(self) -> None:
        self.consumer.close()


class SerdeDecoder:
    def __init__(self, registry_url: str):
        registry = Registry(registry_url)
        self.events = Serde(registry, EVENTS_SUBJECT)
        self.reports = Serde(registry, POP_STATUS_SUBJECT)

    def event(self, value: bytes | None) -> Envelope:
        return events.decode(self.events.decode, value)

    def report(self, value: bytes | None) -> Mapping[str, Any]:
        return self.reports.decode(value)


class PublishedCommands:
    """Commands handed to the producer as they come; `flush` waits until the broker has them all
    (the runner calls it before committing a batch's offsets). One idempotent producer keeps them
    in order per tenant, so an operation's records are judged in the order they were sent."""

    def __init__(self, publisher: Publisher, timeout: float = 30.0):
        self.publisher = publisher
        self.timeout = timeout
        self._sent: list[Future] = []

    def send(self, command: CommandEnvelope) -> None:
        self._sent.append(self.publisher.publish_async(command))

    def flush(self) -> None:
        sent, self._sent = self._sent, []
        for future in sent:
            future.result(self.timeout)  # raises the PublishError of a command the broker refused


class KafkaDeadLetters:
    """Input copied to `<its topic>.dlq`; flushed, so its offset is committed only once it is there."""

    def __init__(self, publisher: Publisher):
        self.producer = publisher.producer

    def send(self, msg: Message, reason: str, code: str | None) -> None:
        dead_letter(self.producer, f"{msg.topic()}.dlq", msg, reason, code)
        if self.producer.flush(30):
            raise RuntimeError(f"a dead letter for {msg.topic()} was not delivered in time")


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(seconds)


def run(settings: SagaSettings, stop: threading.Event) -> None:
    committer = GitOpsCommitter(settings.gitops_remote, settings.workdir, "dbaas saga", "saga@dbaas.local")
    committer.apply(layout.bootstrap_files(settings.gitops_remote), "Bootstrap the GitOps layout",
                    operation_id="bootstrap", correlation_id="bootstrap")
    publisher = Publisher(settings.kafka, settings.registry_url, settings.commands_topic, signer=settings.signer)
    source = KafkaSource(settings)
    renderer = HelmRenderer(settings.backup_bucket, settings.gitops_remote)
    runner = SagaRunner(SagaState.start(settings.timeouts), source=source, decoder=SerdeDecoder(settings.registry_url),
                        git=committer, renderer=renderer, commands=PublishedCommands(publisher),
                        dead_letters=KafkaDeadLetters(publisher), keys=Keyring(settings.keyring), clock=WallClock(),
                        pop_status_topic=settings.pop_status_topic)
    try:
        source.subscribe(runner)  # each partition's deadlines are rebuilt when it is assigned
        log.info("started", remote=settings.gitops_remote, timeouts=settings.timeouts, group=settings.group_id)
        runner.loop(stop)
    finally:
        source.close()
        publisher.close()
        renderer.close()
        log.info("stopped")


def main() -> int:
    from runtime import process

    return process.main("saga", SagaSettings.from_env, run)


if __name__ == "__main__":
    raise SystemExit(main())
