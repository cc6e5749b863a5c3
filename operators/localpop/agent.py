"""The local PoP agent (``python -m operators.localpop.agent``): Argo CD for PoP ``local``.

Every ``interval`` seconds it fetches the GitOps remote (read-only mirror in ``DBAAS_STATE_DIR``),
reads the ServiceClaims under ``tenants/*/local/*.yaml``, and converges the local servers on them
(``operators.localpop.plan`` decides, this module acts):

- a claim whose commit's ``Operation-Id`` was not handled yet is provisioned (idempotently) on the
  server standing in for its engine — YugabyteDB → PostgreSQL, Vitess → MariaDB, DragonflyDB →
  Redis — and reported ``Ready`` with ``host:port`` and the credentials, Fernet-encrypted with
  ``DBAAS_CREDENTIALS_KEY``; an engine without a local server, or a refusing server, is reported
  ``Failed`` with the reason; an unreachable server is retried with backoff;
- a claim file that disappeared is deprovisioned and reported ``Deleted`` with the operation of
  the commit that removed it;
- reports (``PopStatusReport`` on ``dbaas.pop.status``, key = tenant id; acks=all, idempotent
  producer) are re-sent on every sync until Kafka acknowledges them; only then does the state
  file mark them reported, so a restart neither provisions nor reports them again.

While tracing is on (``runtime.tracing``), applying or removing a claim is a span continuing the
trace named by its commit's ``Trace-Id:`` trailer (the saga's commit span), and each report is a
span under it whose context travels in the report's ``traceparent`` header (not signed, like every
header: the signature covers the topic, key and value).

Passwords are derived from ``DBAAS_LOCALPOP_PASSWORD_KEY`` (same service → same password), so
provisioning again after a crash hands out the very credentials already reported. They are never
logged, never written to the state file and never sent in clear.

Environment: DBAAS_KAFKA_BOOTSTRAP, DBAAS_REGISTRY_URL, DBAAS_GITOPS_REMOTE, DBAAS_STATE_DIR,
DBAAS_METRICS_PORT, DBAAS_DATABASE_URL (PostgreSQL admin; DBAAS_LOCALPOP_POSTGRES_URL overrides),
DBAAS_LOCALPOP_MARIADB_URL, DBAAS_LOCALPOP_REDIS_URL, DBAAS_CREDENTIALS_KEY,
DBAAS_LOCALPOP_PASSWORD_KEY, optional DBAAS_POP_STATUS_TOPIC, DBAAS_LOCALPOP_SYNC_INTERVAL,
DBAAS_LOCALPOP_METRICS_INTERVAL, DBAAS_LOCALPOP_STORAGE_SCALE, DBAAS_TOPIC_PROFILE (service metrics:
``operators.localpop.metrics``).

May import: ``runtime``, ``gitops``, ``schemas``, ``operators.localpop`` and the clients
(GitPython, confluent-kafka, cryptography) — never processors, projections, gateway or cli.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import structlog
from confluent_kafka import KafkaException
from cryptography.fernet import Fernet
from prometheus_client import Counter, Gauge, Histogram

from operators.backup.jobs import BackupJobs, JobFailed, JobRetry, build_jobs
from operators.localpop import backupplan
from operators.localpop import cdc as cdcplan
from operators.localpop import plan as core
from operators.localpop import state as state_file
from operators.localpop.backupplan import BackupRecord, Drop, ForgetBackup, Take
from operators.localpop.gitsource import GitSource, GitUnavailable, Snapshot
from operators.localpop.metrics import MetricsPublisher, ServiceMetrics, Target, build_samplers, scaled_limit
from operators.localpop.plan import Apply, Forget, Record, Remove, Resend
from operators.localpop.provisioners import (
    PROVISIONERS,
    AdminEndpoint,
    MariaDBProvisioner,
    PostgresProvisioner,
    Provisioner,
    ProvisioningError,
    ProvisioningFailed,
    RedisProvisioner,
    ServerUnavailable,
)
from operators.reporting import Reporter, encrypt_credentials, mark_acknowledged  # noqa: F401  (shared with the kube PoPs)
from runtime import connect, kafka, tracing
from runtime.kafka import KafkaAccess, access_from_env
from runtime.settings import SettingsError, env, read
from runtime.signing import Signer
from schemas.errors import SchemaError

log = structlog.get_logger("operators.localpop.agent")

POP = "local"
OFFERED: tuple[str, ...] = tuple(PROVISIONERS)  # yugabyte, vitess, dragonfly
SERVER_SETTING = {"yugabyte": "DBAAS_LOCALPOP_POSTGRES_URL (or DBAAS_DATABASE_URL)",
                  "vitess": "DBAAS_LOCALPOP_MARIADB_URL", "dragonfly": "DBAAS_LOCALPOP_REDIS_URL"}
MAX_BACKOFF = 30.0

SERVICES = Gauge("dbaas_localpop_services", "Services provisioned and Ready in the local PoP", ["engine"])
CONNECTORS = Gauge("dbaas_localpop_cdc_connectors", "CDC connectors of the local PoP by phase", ["phase"])
REPORTS = Counter("dbaas_localpop_reports_total", "Status reports acknowledged by Kafka", ["phase"])
EFFECTS = Counter("dbaas_localpop_effects_total", "Provision/deprovision calls by outcome",
                  ["action", "engine", "outcome"])
SYNC_SECONDS = Histogram("dbaas_localpop_sync_seconds", "Duration of one sync of the GitOps repository",
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SYNC_ERRORS = Counter("dbaas_localpop_sync_errors_total", "Syncs that could not read git or reach Kafka",
                      ["error"])
BACKUPS = Counter("dbaas_localpop_backups_total", "Backups taken, restores and drops by outcome",
                  ["action", "engine", "outcome"])
BACKUP_SECONDS = Histogram("dbaas_localpop_backup_seconds", "Duration of a backup or a restore", ["action"],
                           buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900))


# -- settings ----------------------------------------------------------------------------------
def _fernet_key(raw: str) -> str:
    try:
        Fernet(raw)
    except ValueError:
        raise SettingsError("is not a Fernet key (32 url-safe base64-encoded bytes); make one with "
                            "cryptography.fernet.Fernet.generate_key()") from None
    return raw


def _server(variable: str, default_port: int, fallback: str | None = None):
    """The admin endpoint a server URL variable names, or None when it is unset."""
    def compose(environ: Mapping[str, str]) -> AdminEndpoint | None:
        url = environ.get(variable) or (environ.get(fallback) if fallback else None)
        return parse_admin_url(url, variable, default_port)[0] if url else None
    return compose


def _postgres_database(environ: Mapping[str, str]) -> str | None:
    """The database the PostgreSQL admin URL names (its endpoint's errors are reported once, there)."""
    url = environ.get("DBAAS_LOCALPOP_POSTGRES_URL") or environ.get("DBAAS_DATABASE_URL")
    try:
        return (parse_admin_url(url, "DBAAS_LOCALPOP_POSTGRES_URL", 5432)[1] or None) if url else None
    except SettingsError:
        return None


def _signer(environ: Mapping[str, str]) -> Signer | None:
    try:
        return Signer.from_env(dict(environ))
    except ValueError as exc:
        raise SettingsError(f"is not an Ed25519 key: {exc}") from None


def _not_negative(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent needs, as plain values, read with `runtime.settings`. Servers left None
    are not offered: claims for their engine are reported Failed, naming the setting to add."""

    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    gitops_remote: str = env("DBAAS_GITOPS_REMOTE")
    credentials_key: str = env("DBAAS_CREDENTIALS_KEY", parse=_fernet_key, repr=False)
    password_key: bytes = env("DBAAS_LOCALPOP_PASSWORD_KEY", parse=str.encode, repr=False)
    # the PoP's own key: its reports are signed (the launcher passes it; the control plane trusts
    # its public half)
    signer: Signer | None = env("DBAAS_SIGNING_KEY", None, compose=_signer, required=True, repr=False,
                                hint="the PoP signs its reports with its own key")
    state_dir: Path = env("DBAAS_STATE_DIR", Path("/tmp/dbaas-localpop-agent"))
    postgres: AdminEndpoint | None = env(
        "DBAAS_LOCALPOP_POSTGRES_URL", None, compose=_server("DBAAS_LOCALPOP_POSTGRES_URL", 5432, "DBAAS_DATABASE_URL"),
        repr=False)
    postgres_admin_database: str = env("DBAAS_LOCALPOP_POSTGRES_URL", "postgres", compose=_postgres_database)
    mariadb: AdminEndpoint | None = env(
        "DBAAS_LOCALPOP_MARIADB_URL", None, compose=_server("DBAAS_LOCALPOP_MARIADB_URL", 3306), repr=False)
    redis: AdminEndpoint | None = env(
        "DBAAS_LOCALPOP_REDIS_URL", None, compose=_server("DBAAS_LOCALPOP_REDIS_URL", 6379), repr=False)
    pop_status_topic: str = env("DBAAS_POP_STATUS_TOPIC", "dbaas.pop.status")
    pop: str = POP
    branch: str = "main"
    interval: float = env("DBAAS_LOCALPOP_SYNC_INTERVAL", 1.0)
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)
    flush_timeout: float = 5.0
    message_timeout_ms: int = 30_000
    connect_url: str | None = env("DBAAS_CONNECT_URL", None)  # the Kafka Connect of PoP local's CDC
    # a failed connector is restarted this many times, the waits doubling up to the most, then reported
    cdc_max_restarts: int = env("DBAAS_LOCALPOP_CDC_MAX_RESTARTS", 7)
    cdc_max_backoff: float = env("DBAAS_LOCALPOP_CDC_MAX_BACKOFF", 60.0)
    # a backup or restore that keeps meeting an unavailable store or server fails after this long
    backup_retry_seconds: float = env("DBAAS_LOCALPOP_BACKUP_RETRY_SECONDS", 120.0)
    ship_interval: float = env("DBAAS_LOCALPOP_SHIP_INTERVAL", 10.0)  # archived WAL/binlogs to the store
    # service metrics: seconds between two samples of every service (0: none), and the share of a
    # claim's storage its samples count as the limit (a development setting; 1: the claim's size)
    metrics_interval: float = env("DBAAS_LOCALPOP_METRICS_INTERVAL", 15.0, parse=_not_negative)
    storage_scale: float = env("DBAAS_LOCALPOP_STORAGE_SCALE", 1.0, parse=_positive)
    topic_profile: str = env("DBAAS_TOPIC_PROFILE", "local")  # of the metrics topics it creates

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentSettings:
        return read(cls, environ)


def parse_admin_url(url: str, name: str, default_port: int) -> tuple[AdminEndpoint, str]:
    """``scheme://user:password@host:port[/database]`` → (AdminEndpoint, database or "")."""
    try:
        parts = urlsplit(url)
        port = parts.port or default_port
    except ValueError as exc:
        raise SettingsError(f"{name} is not a URL of the form scheme://user:password@host:port ({exc})") from None
    if not parts.hostname or not parts.username:
        raise SettingsError(f"{name} must name a user and a host: scheme://user:password@host:port")
    endpoint = AdminEndpoint(parts.hostname, port, unquote(parts.username), unquote(parts.password or ""))
    return endpoint, unquote(parts.path.lstrip("/"))


def build_cdc(settings: AgentSettings) -> cdcplan.LocalCdc | None:
    """PoP local's Connect operator: PostgreSQL connectors for yugabyte services (None: no Connect)."""
    if not settings.connect_url or settings.postgres is None:
        return None
    admin = PostgresProvisioner(settings.postgres, admin_database=settings.postgres_admin_database)
    databases: dict[str, cdcplan.PostgresCdc | cdcplan.MariaDbCdc] = {
        "yugabyte": cdcplan.PostgresCdc(settings.postgres, admin.connect_to)}
    if settings.mariadb is not None:
        databases["vitess"] = cdcplan.MariaDbCdc(settings.mariadb, _topic_deleter(settings.kafka))
    return cdcplan.LocalCdc(connect.client(settings.connect_url), databases, registry_url=settings.registry_url,
                            kafka=settings.kafka, clock=lambda: datetime.now(UTC),
                            max_restarts=settings.cdc_max_restarts, max_backoff=settings.cdc_max_backoff)


def _topic_deleter(bootstrap: str) -> Callable[[str], None]:
    def delete(topic: str) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(kafka.admin_config(bootstrap))
        if topic not in admin.list_topics(timeout=10).topics:
            return
        try:
            admin.delete_topics([topic], operation_timeout=30)[topic].result()
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" not in str(exc):
                raise OSError(f"topic {topic} could not be deleted: {exc}") from None
    return delete


def build_provisioners(settings: AgentSettings) -> dict[str, Provisioner]:
    """engine → provisioner, for the servers the settings name."""
    made: dict[str, Provisioner] = {}
    if settings.postgres:
        made["yugabyte"] = PostgresProvisioner(settings.postgres, admin_database=settings.postgres_admin_database,
                                               password_key=settings.password_key)
    if settings.mariadb:
        made["vitess"] = MariaDBProvisioner(settings.mariadb, password_key=settings.password_key)
    if settings.redis:
        made["dragonfly"] = RedisProvisioner(settings.redis, password_key=settings.password_key)
    return made


# -- the agent ---------------------------------------------------------------------------------
class Agent:
    """One sync = fetch git, plan, act, report. Holds no credentials beyond the tokens of
    reports still waiting for Kafka's acknowledgement."""

    def __init__(self, settings: AgentSettings, source: GitSource, reporter: Reporter,
                 provisioners: Mapping[str, Provisioner], clock: Callable[[], datetime] | None = None,
                 jobs: BackupJobs | str | None = None, metrics: ServiceMetrics | None = None,
                 cdc: cdcplan.LocalCdc | None = None):
        self.settings = settings
        self.metrics = metrics  # None: no service metrics
        self._storage: dict[str, int | None] = {}  # service key -> the storage its claim gives it
        # backups: the jobs, or why there are none (no object storage configured)
        self.jobs = jobs if jobs is not None else "object storage is not configured for the local PoP: set DBAAS_S3_*"
        self.backups_path = settings.state_dir / "localpop-backups.json"
        self.backups: dict[str, BackupRecord] = state_file.load_backups(self.backups_path)
        self._first_try: dict[str, float] = {}  # key -> monotonic time of a job's first attempt
        self._shipped_at = 0.0
        self.source = source
        self.reporter = reporter
        self.provisioners = dict(provisioners)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.state_path = settings.state_dir / "localpop-agent.json"
        self.records: dict[str, Record] = state_file.load(self.state_path)
        self._fernet = Fernet(settings.credentials_key)
        self._tokens: dict[str, str] = {}  # report id -> encrypted credentials, until acknowledged
        self._retry_at: dict[str, tuple[float, float]] = {}  # key -> (monotonic time, last delay)
        self._git_error: str | None = None
        self._problems: set[tuple[str, str]] = set()
        self.syncs = 0
        self.cdc = cdc
        self.cdc_path = settings.state_dir / "localpop-cdc.json"
        self.connectors: dict[str, cdcplan.ConnectorRecord] = state_file.load_connectors(self.cdc_path)

    @classmethod
    def build(cls, settings: AgentSettings) -> Agent:
        """The composition root: clients from settings."""
        source = GitSource(settings.gitops_remote, settings.state_dir / "gitops-mirror.git", settings.pop,
                           settings.branch)
        provisioners = build_provisioners(settings)
        metrics = None
        if settings.metrics_interval > 0:
            samplers = build_samplers(settings.postgres, settings.postgres_admin_database, settings.mariadb,
                                      settings.redis)
            publisher = MetricsPublisher(settings.kafka, settings.registry_url, settings.signer,
                                         settings.topic_profile)
            metrics = ServiceMetrics(samplers, publisher, settings.pop, settings.metrics_interval,
                                     lambda: datetime.now(UTC))
        return cls(settings, source, Reporter(settings, SYNC_ERRORS.labels("KafkaDelivery")), provisioners,
                   jobs=build_jobs(dict(os.environ), settings, provisioners), metrics=metrics,
                   cdc=build_cdc(settings))

    def close(self) -> None:
        self._acknowledge(self.reporter.close())
        self.source.close()
        if self.metrics is not None:
            self.metrics.close()

    # -- one sync ------------------------------------------------------------------------------
    def sync(self) -> None:
        started = time.perf_counter()
        snapshot = self._snapshot()
        if snapshot is not None:
            desired, unreadable, problems = core.desired_services(
                snapshot.claims, snapshot.history, self.settings.pop, OFFERED, snapshot.tenants)
            for path, problem in sorted(set(problems) - self._problems):
                log.error("ServiceClaim file ignored", path=path, reason=problem)
            self._problems = set(problems)
            self._storage = {key: d.storage_bytes for key, d in desired.items()}
            # connectors first: a service's connector goes before its database
            self._sync_cdc(snapshot)
            for step in core.plan(desired, self.records, unreadable):
                with structlog.contextvars.bound_contextvars(**_context(step)):
                    self._execute(step, snapshot)
            self._sync_backups(snapshot)
        self._ship()
        self._report()
        self._sample()
        applied = core.applied_per_engine(self.records)
        for engine in OFFERED:
            SERVICES.labels(engine).set(applied.get(engine, 0))
        SYNC_SECONDS.observe(time.perf_counter() - started)
        self.syncs += 1

    def _sample(self) -> None:
        """Service metrics of the services running here, when a round is due."""
        if self.metrics is None:
            return
        targets = [Target(r.tenant, r.service_id, r.engine,
                          scaled_limit(self._storage.get(r.key), self.settings.storage_scale))
                   for r in self.records.values() if r.action == "apply" and r.phase == "Ready" and r.provisioned]
        self.metrics.maybe_sample(targets)

    def _snapshot(self) -> Snapshot | None:
        try:
            snapshot = self.source.snapshot()
        except GitUnavailable as exc:
            SYNC_ERRORS.labels("GitUnavailable").inc()
            if self._git_error != str(exc):
                log.warning("GitOps remote unavailable; retrying every sync", error=str(exc))
            self._git_error = str(exc)
            return None
        if self._git_error is not None:
            log.info("GitOps remote readable again")
            self._git_error = None
        return snapshot

    def _execute(self, step: core.Step, snapshot: Snapshot) -> None:
        match step:
            case Apply(desired, previous):
                if self._waiting(desired.key):
                    return
                with tracing.continued("provision", desired.trace, tracing.attributes(
                        desired.operation_id, desired.tenant, "provision", engine=desired.engine,
                        service_id=desired.service_id, pop=self.settings.pop)):
                    self._apply(desired, previous)
            case Remove(record):
                if self._waiting(record.key):
                    return
                commit = core.removal(record, snapshot.history, snapshot.tip)
                with tracing.continued("deprovision", commit.trace, tracing.attributes(
                        commit.operation_id, record.tenant, "deprovision", engine=record.engine,
                        service_id=record.service_id, pop=self.settings.pop)):
                    self._remove(record, commit)
            case Resend(record):
                if record.phase == "Ready" and record.report_id not in self._tokens and not self._waiting(record.key):
                    self._recover_credentials(record)
            case Forget(record):
                del self.records[record.key]
                self._save()

    def _apply(self, d: core.Desired, previous: Record | None) -> None:
        now = self.clock()
        if previous is not None and previous.provisioned and previous.engine != d.engine:
            try:
                self._deprovision(previous)
            except ServerUnavailable as exc:
                return self._backoff(d.key, "deprovision", exc)
            except ProvisioningFailed as exc:
                return self._store(core.failed(d, f"the service's previous {previous.engine} database could not "
                                                  f"be removed: {exc}", now, provisioned=True))
        problem = d.problem or self._unconfigured(d.engine)
        if problem:
            log.warning("service refused", path=d.path, engine=d.engine, reason=problem)
            EFFECTS.labels("provision", d.engine or "none", "refused").inc()
            return self._store(core.failed(d, problem, now, provisioned=False))
        try:
            creds = self.provisioners[d.engine].provision(d.tenant, d.service_id, d.name)
        except ServerUnavailable as exc:
            return self._backoff(d.key, "provision", exc)
        except ProvisioningFailed as exc:
            log.warning("provisioning failed", path=d.path, engine=d.engine, reason=str(exc))
            EFFECTS.labels("provision", d.engine, "failed").inc()
            return self._store(core.failed(d, f"provisioning failed: {exc}", now, provisioned=True))
        if d.restore is not None and not (previous is not None and previous.provisioned):
            outcome = self._restore(d)
            if outcome is not None:
                return self._store(core.failed(d, outcome, self.clock(), provisioned=True)) if outcome else None
        record = core.ready(d, f"{creds.host}:{creds.port}", now)
        self._tokens[record.report_id] = encrypt_credentials(self._fernet, creds)
        EFFECTS.labels("provision", d.engine, "ok").inc()
        log.info("service applied", path=d.path, engine=d.engine, endpoint=record.endpoint, commit=d.commit)
        self._store(record)

    def _restore(self, d: core.Desired) -> str | None:
        """Load a restored service's data (after provisioning it). None: done; "": retry later
        (a server or the store is unavailable); otherwise why the restore failed (reported Failed,
        so the creation is compensated and the new service removed)."""
        if isinstance(self.jobs, str):
            return f"restore failed: {self.jobs}"
        started = time.perf_counter()
        try:
            self.jobs.restore(d.tenant, d.service_id, d.engine, d.restore)
        except JobRetry as exc:
            if self._give_up(d.key):
                return f"restore failed: {exc}"
            self._backoff(d.key, "restore", exc)
            return ""
        except JobFailed as exc:
            BACKUPS.labels("restore", d.engine, "failed").inc()
            log.warning("restore failed", path=d.path, reason=str(exc))
            self._first_try.pop(d.key, None)
            return f"restore failed: {exc}"
        self._first_try.pop(d.key, None)
        BACKUPS.labels("restore", d.engine, "ok").inc()
        BACKUP_SECONDS.labels("restore").observe(time.perf_counter() - started)
        log.info("service restored and verified", path=d.path, source=d.restore.source_service_id,
                 backup_id=d.restore.backup_id, target_time=d.restore.target_time)
        return None

    # -- change data capture --------------------------------------------------------------------
    def _sync_cdc(self, snapshot: Snapshot) -> None:
        if self.cdc is None:
            return
        wanted, unreadable, problems = cdcplan.wanted_connectors(snapshot.connectors or {}, snapshot.history,
                                                                 self.settings.pop, snapshot.tenants)
        for path, problem in sorted(problems.items()):
            log.error("KafkaConnector file ignored", path=path, reason=problem)
        for step in cdcplan.plan_connectors(wanted, self.connectors, unreadable):
            item = step.wanted if isinstance(step, cdcplan.Register) else step.record
            key = item.key
            ctx = {"operation_id": item.operation_id, "tenant_id": key.split("/")[0], "connector": key}
            with structlog.contextvars.bound_contextvars(**ctx):
                if self._waiting(f"cdc/{key}"):
                    continue
                try:
                    match step:
                        case cdcplan.Register(wanted=w):
                            self._store_connector(self.cdc.register(w))
                        case cdcplan.Watch(record=r):
                            self._store_connector(self.cdc.watch(r))
                        case cdcplan.RemoveConnector(record=r):
                            self._store_connector(self.cdc.remove(r, core.removal(r, snapshot.history,  # type: ignore[arg-type]
                                                                                  snapshot.tip)))
                        case cdcplan.ForgetConnector(record=r):
                            del self.connectors[r.key]
                            self._save_connectors()
                except (cdcplan.ConnectError, ProvisioningError, OSError) as exc:
                    # Connect or the database is unavailable now: the same step again, later
                    SYNC_ERRORS.labels(type(exc).__name__).inc()
                    self._backoff(f"cdc/{key}", "cdc", exc)
        for phase in ("Registering", "Running", "Failed"):
            CONNECTORS.labels(phase).set(sum(1 for r in self.connectors.values() if r.phase == phase))

    def _remove_connector_of(self, tenant: str, service_id: str, commit) -> None:
        """A service is deprovisioned: its connector goes first, with its slot and publication."""
        record = self.connectors.get(f"{tenant}/{service_id}")
        if self.cdc is None or record is None or record.phase == "Removed":
            return
        self._store_connector(self.cdc.remove(record, commit))

    def _store_connector(self, record: cdcplan.ConnectorRecord) -> None:
        if self.connectors.get(record.key) != record:
            self.connectors[record.key] = record
            self._save_connectors()

    def _save_connectors(self) -> None:
        state_file.save_connectors(self.cdc_path, self.connectors, pop=self.settings.pop)

    # -- backups -------------------------------------------------------------------------------
    def _sync_backups(self, snapshot: Snapshot) -> None:
        wanted, unreadable = backupplan.desired_backups(snapshot.backups or {}, snapshot.history,
                                                        self.settings.pop, snapshot.tenants)
        for step in backupplan.plan_backups(wanted, self.backups, unreadable):
            item = step.wanted if isinstance(step, Take) else step.record
            ctx = {"operation_id": item.operation_id, "tenant_id": item.tenant, "backup_id": item.backup_id}
            with structlog.contextvars.bound_contextvars(**ctx):
                match step:
                    case Take(wanted=w) if not self._waiting(w.key):
                        self._take(w)
                    case Drop(record=r) if not self._waiting(r.key):
                        self._drop(r, core.removal(r, snapshot.history, snapshot.tip))  # type: ignore[arg-type]
                    case ForgetBackup(record=r):
                        del self.backups[r.key]
                        self._save_backups()

    def _take(self, w: backupplan.WantedBackup) -> None:
        service = self.records.get(f"{w.tenant}/{w.service_id}")
        problem = w.problem
        if problem is None and isinstance(self.jobs, str):
            problem = self.jobs
        if problem is None and (service is None or service.action != "apply" or not service.provisioned):
            problem = f"service {w.service_id} does not run in PoP {self.settings.pop}: nothing to back up"
        if problem is not None:
            return self._store_backup(backupplan.take_failed(w, problem, self.clock()))
        started = time.perf_counter()
        try:
            details = self.jobs.take(w.tenant, w.service_id, w.backup_id, w.engine, w.pitr)  # type: ignore[union-attr]
        except JobRetry as exc:
            if not self._give_up(w.key):
                return self._backoff(w.key, "backup", exc)
            reason = str(exc)
        except JobFailed as exc:
            reason = str(exc)
        else:
            BACKUPS.labels("backup", w.engine, "ok").inc()
            BACKUP_SECONDS.labels("backup").observe(time.perf_counter() - started)
            log.info("backup stored", path=w.path, engine=w.engine)
            return self._store_backup(backupplan.taken(w, details, self.clock()))
        BACKUPS.labels("backup", w.engine, "failed").inc()
        log.warning("backup failed", path=w.path, reason=reason)
        self._store_backup(backupplan.take_failed(w, reason, self.clock()))

    def _drop(self, r: BackupRecord, commit) -> None:
        if r.stored and not isinstance(self.jobs, str):
            try:
                self.jobs.drop(r.tenant, r.backup_id)
            except (JobRetry, JobFailed) as exc:
                return self._backoff(r.key, "drop", exc)
        BACKUPS.labels("drop", r.engine, "ok").inc()
        log.info("backup dropped", path=r.path, removal_operation_id=commit.operation_id)
        self._store_backup(backupplan.dropped(r, commit, self.clock()))

    def _ship(self) -> None:
        """Ship archived WAL and closed binlogs to the object store, every ``ship_interval``."""
        if isinstance(self.jobs, str) or time.monotonic() - self._shipped_at < self.settings.ship_interval:
            return
        self._shipped_at = time.monotonic()
        try:
            self.jobs.ship()
        except (JobRetry, JobFailed) as exc:
            SYNC_ERRORS.labels("ArchiveShipping").inc()
            log.warning("archived logs not shipped yet; retrying", error=str(exc))

    def _give_up(self, key: str) -> bool:
        first = self._first_try.setdefault(key, time.monotonic())
        if time.monotonic() - first < self.settings.backup_retry_seconds:
            return False
        del self._first_try[key]
        return True

    def _store_backup(self, record: BackupRecord) -> None:
        self.backups[record.key] = record
        self._retry_at.pop(record.key, None)
        self._first_try.pop(record.key, None)
        self._save_backups()

    def _save_backups(self) -> None:
        state_file.save_backups(self.backups_path, self.backups, pop=self.settings.pop)

    def _remove(self, record: Record, commit) -> None:
        now = self.clock()
        if record.provisioned:
            try:
                self._remove_connector_of(record.tenant, record.service_id, commit)
                self._deprovision(record)
            except (ServerUnavailable, cdcplan.ConnectError) as exc:
                return self._backoff(record.key, "deprovision", exc)
            except ProvisioningFailed as exc:
                log.warning("deprovisioning failed", path=record.path, engine=record.engine, reason=str(exc))
                return self._store(core.delete_failed(record, commit, f"deprovisioning failed: {exc}", now))
        log.info("service removed", path=record.path, engine=record.engine, commit=commit.sha,
                 removal_operation_id=commit.operation_id)
        self._store(core.deleted(record, commit, now))

    def _deprovision(self, record: Record) -> None:
        provisioner = self.provisioners.get(record.engine)
        if provisioner is None:
            problem = self._unconfigured(record.engine) or f"engine {record.engine!r} has no local server"
            raise ProvisioningFailed(problem)
        try:
            provisioner.deprovision(record.tenant, record.service_id)
        except ProvisioningFailed:
            EFFECTS.labels("deprovision", record.engine, "failed").inc()
            raise
        EFFECTS.labels("deprovision", record.engine, "ok").inc()

    def _recover_credentials(self, record: Record) -> None:
        """A Ready report still unacknowledged after a restart: provision again (same password,
        nothing changes on the server) to put the credentials back into the report."""
        provisioner = self.provisioners.get(record.engine)
        if provisioner is None:
            return
        try:
            creds = provisioner.provision(record.tenant, record.service_id, record.name)
        except ServerUnavailable as exc:
            return self._backoff(record.key, "provision", exc)
        except ProvisioningFailed as exc:
            log.warning("credentials of an unacknowledged report cannot be recovered", reason=str(exc))
            return self._backoff(record.key, "provision", exc)
        self._tokens[record.report_id] = encrypt_credentials(self._fernet, creds)

    def _unconfigured(self, engine: str) -> str | None:
        if engine in self.provisioners:
            return None
        return (f'engine "{engine}" is offered by PoP {self.settings.pop} but its server is not configured '
                f"for the agent: set {SERVER_SETTING.get(engine, 'its server URL')}")

    # -- reports -------------------------------------------------------------------------------
    def _report(self) -> None:
        for connector in list(self.connectors.values()):
            if not connector.reported and connector.phase != "Registering":
                try:
                    self.reporter.send(connector.tenant, cdcplan.report(connector, self.settings.pop))
                except SchemaError as exc:
                    SYNC_ERRORS.labels(type(exc).__name__).inc()
                    log.warning("report not sent: schema registry unavailable", error=str(exc))
                    break
        for backup in list(self.backups.values()):
            if not backup.reported:
                try:
                    self.reporter.send(backup.tenant, backupplan.report(backup, self.settings.pop))
                except SchemaError as exc:
                    SYNC_ERRORS.labels(type(exc).__name__).inc()
                    log.warning("report not sent: schema registry unavailable", error=str(exc))
                    break
        for record in list(self.records.values()):
            if record.reported:
                continue
            token = self._tokens.get(record.report_id)
            if record.phase == "Ready" and token is None:
                continue  # credentials come back with the next snapshot (_recover_credentials)
            try:
                self.reporter.send(record.tenant, core.report(record, self.settings.pop, token), record.trace)
            except SchemaError as exc:
                SYNC_ERRORS.labels(type(exc).__name__).inc()
                log.warning("report not sent: schema registry unavailable", error=str(exc))
                break
        self._acknowledge(self.reporter.flush(self.settings.flush_timeout))

    def _acknowledge(self, acked: set[str]) -> None:
        for key, connector in list(self.connectors.items()):
            if not connector.reported and connector.report_id in acked:
                self._store_connector(replace(connector, reported=True))
                REPORTS.labels(connector.phase).inc()
                log.info("connector report acknowledged", operation_id=connector.operation_id,
                         phase=connector.phase, connector=connector.name, tenant_id=connector.tenant)
        if backups := mark_acknowledged(self.backups, acked):
            for backup in backups:
                REPORTS.labels(backup.phase).inc()
                log.info("backup report acknowledged", operation_id=backup.operation_id, phase=backup.phase,
                         backup_id=backup.backup_id, tenant_id=backup.tenant)
            self._save_backups()
        if records := mark_acknowledged(self.records, acked):
            for record in records:
                self._tokens.pop(record.report_id, None)
                REPORTS.labels(record.phase).inc()
                log.info("report acknowledged", operation_id=record.operation_id, phase=record.phase,
                         report_id=record.report_id, tenant_id=record.tenant, service_id=record.service_id)
            self._save()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _store(self, record: Record) -> None:
        if (traceparent := tracing.current_traceparent()) is not None:
            record = replace(record, trace=traceparent)  # its report continues this span
        old = self.records.get(record.key)
        if old is not None and old.report_id != record.report_id:
            self._tokens.pop(old.report_id, None)
        self.records[record.key] = record
        self._retry_at.pop(record.key, None)
        self._save()

    def _save(self) -> None:
        state_file.save(self.state_path, self.records, pop=self.settings.pop)

    def _waiting(self, key: str) -> bool:
        due = self._retry_at.get(key)
        return due is not None and time.monotonic() < due[0]

    def _backoff(self, key: str, action: str, exc: Exception) -> None:
        delay = min(MAX_BACKOFF, self._retry_at.get(key, (0.0, self.settings.interval / 2))[1] * 2)
        self._retry_at[key] = (time.monotonic() + delay, delay)
        EFFECTS.labels(action, "any", "unavailable").inc()
        log.warning("server unavailable; retrying", action=action, error=str(exc), retry_in=round(delay, 2))


def _context(step: core.Step) -> dict[str, str]:
    item = step.desired if isinstance(step, Apply) else step.record
    ctx = {"operation_id": item.operation_id, "tenant_id": item.tenant, "service_id": item.service_id}
    if item.correlation_id:
        ctx["correlation_id"] = item.correlation_id
    return ctx


def run(settings: AgentSettings, stop: threading.Event, *, agent: Agent | None = None) -> None:
    """Sync every ``settings.interval`` seconds until ``stop`` is set; then flush and return."""
    agent = agent or Agent.build(settings)
    log.info("started", pop=settings.pop, remote=settings.gitops_remote, topic=settings.pop_status_topic,
             engines=sorted(agent.provisioners))
    try:
        while not stop.is_set():
            agent.sync()
            stop.wait(settings.interval)
    finally:
        agent.close()
        log.info("stopped", syncs=agent.syncs)


def main() -> int:
    from runtime import process

    return process.main("localpop-agent", AgentSettings.from_env, run, (SettingsError,))


if __name__ == "__main__":
    raise SystemExit(main())
