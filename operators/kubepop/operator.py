"""The PoP operator of a Kubernetes PoP (``python -m operators.kubepop.operator``, kopf): it watches
the ServiceClaims (``dbaas.io/v1alpha1``) Argo CD applies from the GitOps repository and the engine
resource each one owns (same namespace and name, rendered next to it), judges the engine
operator's status (``operators.kubepop.engines``: one mapping per engine), keeps the claim's
``status`` (``phase``, ``endpoint``, conditions ``Synced`` and ``Ready`` with stable CamelCase
reasons) and reports on ``dbaas.pop.status`` exactly as the local PoP does — through the same
``operators.reporting.Reporter`` and the same records and state file (``operators.localpop.plan``,
``operators.localpop.state``):

- the claim's operation comes from its ``dbaas.io/operation-id`` annotation (the platform renders
  it: commit trailers do not reach a cluster); one report per (operation, phase), its id a UUIDv5
  of both, so a re-sent report is the same report;
- ``Ready``: the engine resource is ready; the report carries the endpoint and the credentials from
  the service's credentials Secret (``<claim>-credentials``, which the operator creates with a
  generated password when the platform's chart references it and it does not exist yet),
  Fernet-encrypted with ``DBAAS_CREDENTIALS_KEY``; ``Failed``: the engine operator says the
  resource failed (the reason goes into the report);
- deletion: the claim carries the operator's finalizer; when Argo CD prunes it the operator waits
  until the engine resource is gone, reads the deleting operation from the deletion record
  (ConfigMap labelled ``dbaas.io/deletion-record`` and ``dbaas.io/service-id``, applied before the
  prune), removes the credentials Secret, records ``Deleted`` and lets the claim go;
- backups: the operator also watches ``DatabaseBackup`` objects (chart ``dbaas-backup``, the
  operation in the same annotation) and the engine's own backup resource of the same name
  (YugabyteDB's ``Backup``), judges them (``operators.kubepop.backups``: the mapping, and a prompt
  ``Unsupported`` failure for engines whose operator has no one-shot backup), keeps the
  DatabaseBackup's ``status`` and records ``Completed`` (with the details the control plane reads)
  or ``Failed`` once per operation as the local PoP's ``BackupRecord``, reported with
  ``operators.localpop.backupplan.report`` (state file ``kube-pop-operator-backups.json``); a
  DatabaseBackup carries the finalizer too: pruned, it records ``Deleted`` on the operation its
  deletion record names (ConfigMap labelled ``dbaas.io/deletion-record`` and ``dbaas.io/backup-id``),
  once the engine's backup resource is gone;
- reports are produced by a reporting thread every second until Kafka acknowledges them; the state
  file (``DBAAS_STATE_DIR/kube-pop-operator.json``, 0600, no secret in it) marks them reported only
  then, so a restarted operator neither reports twice nor forgets a report. A Ready report whose
  credentials were lost with a restart reads them again from the Secret.

Environment: DBAAS_KAFKA_BOOTSTRAP, DBAAS_REGISTRY_URL, DBAAS_KUBECONFIG (none: in-cluster),
DBAAS_POP, DBAAS_CREDENTIALS_KEY, DBAAS_SIGNING_KEY_ID + DBAAS_SIGNING_KEY (the PoP's key),
DBAAS_STATE_DIR, DBAAS_METRICS_PORT, optional DBAAS_POP_STATUS_TOPIC, DBAAS_POP_OPERATOR_INTERVAL.

May import: ``runtime``, ``schemas``, ``operators.reporting``, ``operators.localpop.plan`` and
``.state`` (records and their file), ``operators.kubepop``, kopf and the kubernetes client.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.fernet import Fernet
from prometheus_client import Counter, Gauge

from operators.kubepop import backups as bk
from operators.kubepop import engines
from operators.localpop import backupplan
from operators.localpop import plan as core
from operators.localpop import state as state_file
from operators.localpop.backupplan import BackupRecord
from operators.localpop.claims import CommitRef
from operators.localpop.plan import Record
from operators.reporting import Reporter, encrypt_credentials, mark_acknowledged
from runtime.kafka import KafkaAccess, access_from_env
from runtime.settings import SettingsError, env, read
from runtime.signing import Signer
from schemas.errors import SchemaError

log = structlog.get_logger("operators.kubepop.operator")

GROUP, VERSION, PLURAL = "dbaas.io", "v1alpha1", "serviceclaims"
OPERATION_ANNOTATION = "dbaas.io/operation-id"
DELETION_LABEL = "dbaas.io/deletion-record"
SERVICE_LABEL = "dbaas.io/service-id"
BACKUP_LABEL = "dbaas.io/backup-id"
FINALIZER = "dbaas.io/pop-operator"

REPORTS = Counter("dbaas_pop_operator_reports_total", "Status reports acknowledged by Kafka", ["phase"])
JUDGED = Counter("dbaas_pop_operator_assessments_total", "Engine resources judged, by engine and state",
                 ["engine", "state"])
BACKUP_OUTCOMES = Counter("dbaas_pop_operator_backup_outcomes_total", "Backup outcomes recorded, by engine and phase",
                          ["engine", "phase"])
CLAIMS = Gauge("dbaas_pop_operator_claims", "ServiceClaims by Ready condition", ["ready"])


class OperatorError(Exception):
    """The operator cannot act on a claim yet (an API call failed): retried."""


def _signer(environ: Mapping[str, str]) -> Signer | None:
    try:
        return Signer.from_env(dict(environ))
    except ValueError as exc:
        raise SettingsError(f"is not an Ed25519 key: {exc}") from None


def _fernet_key(raw: str) -> str:
    try:
        Fernet(raw)
    except ValueError:
        raise SettingsError("is not a Fernet key (32 url-safe base64-encoded bytes)") from None
    return raw


@dataclass(frozen=True)
class OperatorSettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    pop: str = env("DBAAS_POP")
    credentials_key: str = env("DBAAS_CREDENTIALS_KEY", parse=_fernet_key, repr=False)
    signer: Signer | None = env("DBAAS_SIGNING_KEY", None, compose=_signer, required=True, repr=False,
                                hint="the PoP signs its reports with its own key")
    kubeconfig: Path | None = env("DBAAS_KUBECONFIG", None, parse=Path)
    state_dir: Path = env("DBAAS_STATE_DIR", Path("/var/lib/dbaas-pop-operator"))
    pop_status_topic: str = env("DBAAS_POP_STATUS_TOPIC", "dbaas.pop.status")
    interval: float = env("DBAAS_POP_OPERATOR_INTERVAL", 1.0)
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)
    message_timeout_ms: int = 30_000
    flush_timeout: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        return read(cls, environ)


# -- the pure part -----------------------------------------------------------------------------
def conditions(engine_found: bool, verdict: engines.Assessment, generation: int | None) -> list[dict]:
    """The claim's Synced and Ready conditions: stable reasons and messages, no times."""
    synced = ({"type": "Synced", "status": "True", "reason": "EngineResourceFound",
               "message": "the engine resource exists"} if engine_found else
              {"type": "Synced", "status": "False", "reason": "EngineResourceMissing",
               "message": "the engine resource does not exist yet"})
    ready = {"type": "Ready", "status": "True" if verdict.state == "Ready" else "False",
             "reason": verdict.reason, "message": verdict.message}
    for cond in (synced, ready):
        if generation is not None:
            cond["observedGeneration"] = generation
    return [synced, ready]


PHASES = {"Ready": "Ready", "Failed": "Failed", "Progressing": "Provisioning"}


def outcome(previous: Record | None, claim_op: str, verdict: engines.Assessment) -> str | None:
    """What to record for the claim's operation: "Ready" or "Failed" — once per operation (the
    first outcome stands: a Failed operation is compensated by the platform) — or None."""
    if verdict.state == "Progressing":
        return None
    if previous is not None and previous.operation_id == claim_op and previous.action == "apply":
        return None
    return verdict.state


# -- the ledger: records, tokens, reporting ----------------------------------------------------
class Ledger:
    """The operator's records (one per service, ``operators.localpop.plan.Record``) in its state
    file, the credentials of Ready reports not yet acknowledged, and the reporting round."""

    def __init__(self, settings: OperatorSettings, reporter: Reporter,
                 clock: Callable[[], datetime] | None = None):
        self.settings, self.reporter = settings, reporter
        self.clock = clock or (lambda: datetime.now(UTC))
        self.path = settings.state_dir / "kube-pop-operator.json"
        self.records: dict[str, Record] = state_file.load(self.path)
        self.backups_path = settings.state_dir / "kube-pop-operator-backups.json"
        self.backups: dict[str, BackupRecord] = state_file.load_backups(self.backups_path)
        self.tokens: dict[str, str] = {}
        self.lock = threading.RLock()
        self.fernet = Fernet(settings.credentials_key)

    def get(self, key: str) -> Record | None:
        with self.lock:
            return self.records.get(key)

    def store(self, record: Record, token: str | None = None) -> None:
        with self.lock:
            old = self.records.get(record.key)
            if old is not None and old.report_id != record.report_id:
                self.tokens.pop(old.report_id, None)
            self.records[record.key] = record
            if token is not None:
                self.tokens[record.report_id] = token
            state_file.save(self.path, self.records, pop=self.settings.pop)
        log.info("outcome recorded", operation_id=record.operation_id, phase=record.phase,
                 tenant_id=record.tenant, service_id=record.service_id, reason=record.reason)

    def backup(self, key: str) -> BackupRecord | None:
        with self.lock:
            return self.backups.get(key)

    def store_backup(self, record: BackupRecord) -> None:
        with self.lock:
            self.backups[record.key] = record
            state_file.save_backups(self.backups_path, self.backups, pop=self.settings.pop)
        BACKUP_OUTCOMES.labels(record.engine or "none", record.phase).inc()
        log.info("backup outcome recorded", operation_id=record.operation_id, phase=record.phase,
                 tenant_id=record.tenant, backup_id=record.backup_id, reason=record.reason)

    def needs_credentials(self, key: str) -> Record | None:
        """An unacknowledged Ready record whose credentials this process does not hold."""
        with self.lock:
            r = self.records.get(key)
            return r if r is not None and r.phase == "Ready" and not r.reported and \
                r.report_id not in self.tokens else None

    def set_token(self, report_id: str, token: str) -> None:
        with self.lock:
            self.tokens[report_id] = token

    def report_round(self) -> None:
        with self.lock:
            pending = [r for r in self.records.values() if not r.reported]
            pending_backups = [b for b in self.backups.values() if not b.reported]
            tokens = dict(self.tokens)
        for record in pending:
            token = tokens.get(record.report_id)
            if record.phase == "Ready" and token is None:
                continue  # the claim's next reconcile reads the credentials again
            try:
                self.reporter.send(record.tenant, core.report(record, self.settings.pop, token))
            except SchemaError as exc:
                log.warning("report not sent: schema registry unavailable", error=str(exc))
                break
        for backup in pending_backups:
            try:
                self.reporter.send(backup.tenant, backupplan.report(backup, self.settings.pop))
            except SchemaError as exc:
                log.warning("report not sent: schema registry unavailable", error=str(exc))
                break
        self.acknowledge(self.reporter.flush(self.settings.flush_timeout))

    def acknowledge(self, acked: set[str]) -> None:
        if not acked:
            return
        with self.lock:
            if records := mark_acknowledged(self.records, acked):
                for record in records:
                    self.tokens.pop(record.report_id, None)
                    REPORTS.labels(record.phase).inc()
                    log.info("report acknowledged", operation_id=record.operation_id, phase=record.phase,
                             report_id=record.report_id, tenant_id=record.tenant, service_id=record.service_id)
                state_file.save(self.path, self.records, pop=self.settings.pop)
            if backups := mark_acknowledged(self.backups, acked):
                for backup in backups:
                    REPORTS.labels(backup.phase).inc()
                    log.info("report acknowledged", operation_id=backup.operation_id, phase=backup.phase,
                             report_id=backup.report_id, tenant_id=backup.tenant, backup_id=backup.backup_id)
                state_file.save_backups(self.backups_path, self.backups, pop=self.settings.pop)


# -- the cluster -------------------------------------------------------------------------------
class Cluster:
    """The few API calls the operator makes, through the kubernetes client."""

    def __init__(self, api_client):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @staticmethod
    def _missing(exc: Exception) -> bool:
        return getattr(exc, "status", None) == 404

    def claim(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def engine_resource(self, engine: str, namespace: str, name: str) -> dict | None:
        e = engines.ENGINES[engine]
        group, _, version = e.api_version.rpartition("/")
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, e.plural, name)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def database_backup(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(bk.GROUP, bk.VERSION, namespace, bk.PLURAL, name)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def engine_backup(self, engine: str, namespace: str, name: str) -> dict | None:
        group, version, plural = bk.ENGINE_BACKUPS[engine]
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def backup_deletion_operation(self, namespace: str, backup_id: str) -> str | None:
        found = self.core.list_namespaced_config_map(
            namespace, label_selector=f"{DELETION_LABEL}=true,{BACKUP_LABEL}={backup_id}").items
        for cm in found:
            if (cm.data or {}).get("operationId"):
                return cm.data["operationId"]
        return None

    def patch_backup_status(self, namespace: str, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(bk.GROUP, bk.VERSION, namespace, bk.PLURAL, name,
                                                          {"status": status})

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                          {"status": status})

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            s = self.core.read_namespaced_secret(name, namespace)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def create_secret(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]) -> None:
        from kubernetes import client

        body = client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
                               string_data=data, type="Opaque")
        try:
            self.core.create_namespaced_secret(namespace, body)
        except Exception as exc:
            if getattr(exc, "status", None) != 409:  # made meanwhile: the existing one stands
                raise

    def delete_secret(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_secret(name, namespace)
        except Exception as exc:
            if not self._missing(exc):
                raise

    def deletion_operation(self, namespace: str, service_id: str) -> str | None:
        found = self.core.list_namespaced_config_map(
            namespace, label_selector=f"{DELETION_LABEL}=true,{SERVICE_LABEL}={service_id}").items
        for cm in found:
            if (cm.data or {}).get("operationId"):
                return cm.data["operationId"]
        return None


# -- reconciling -------------------------------------------------------------------------------
class Reconciler:
    def __init__(self, settings: OperatorSettings, cluster: Cluster, ledger: Ledger):
        self.settings, self.cluster, self.ledger = settings, cluster, ledger

    def reconcile(self, claim: Mapping[str, Any]) -> None:
        meta, spec = claim.get("metadata") or {}, claim.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        namespace, name, engine = meta["namespace"], meta["name"], spec.get("engine", "")
        key = f"{spec.get('tenant')}/{spec.get('serviceId')}"
        with structlog.contextvars.bound_contextvars(tenant_id=spec.get("tenant"), service_id=spec.get("serviceId"),
                                                     operation_id=(meta.get("annotations") or {}).get(
                                                         OPERATION_ANNOTATION)):
            if engine not in engines.ENGINES:
                verdict = engines.Assessment("Failed", "EngineUnknown", f"engine {engine!r} is not one this "
                                             f"PoP runs: {', '.join(engines.ENGINES)}")
                obj = None
            else:
                obj = self.cluster.engine_resource(engine, namespace, name)
                verdict = engines.assess(engine, obj)
                JUDGED.labels(engine, verdict.state).inc()
            status: dict[str, Any] = {"observedGeneration": meta.get("generation"),
                                      "phase": PHASES[verdict.state],
                                      "conditions": conditions(obj is not None, verdict, meta.get("generation"))}
            creds = None
            if verdict.state == "Ready" and obj is not None:
                creds = self._credentials(engine, claim, obj)
                host, _, port = creds["endpoint"].rpartition(":")
                status["endpoint"] = {"host": host, "port": int(port), "credentialsSecret": creds["secret"]}
            current = claim.get("status") or {}
            if any(current.get(k) != v for k, v in status.items()):
                self.cluster.patch_status(namespace, name, status)
            self._record(claim, key, engine, verdict, creds)

    def reconcile_backup(self, obj: Mapping[str, Any]) -> None:
        """Judge a DatabaseBackup (and the engine's own backup resource), keep its status, and
        record its outcome once per operation (the first outcome stands), reported like PoP local's."""
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        namespace, name, engine = meta["namespace"], meta["name"], str(spec.get("engine", ""))
        op = (meta.get("annotations") or {}).get(OPERATION_ANNOTATION)
        want = bk.wanted(obj, op or "", self.settings.pop)
        with structlog.contextvars.bound_contextvars(tenant_id=want.tenant, backup_id=want.backup_id,
                                                     operation_id=op):
            previous = self.ledger.backup(want.key)
            if op and previous is not None and previous.action == "take" and previous.operation_id == op:
                return  # recorded (and its status written) already
            engine_obj = None
            if want.problem:
                verdict = bk.Verdict("Failed", "WrongPop", want.problem)
            else:
                if engine in bk.ENGINE_BACKUPS:
                    engine_obj = self.cluster.engine_backup(engine, namespace, name)
                verdict = bk.assess(engine, engine_obj)
            now = self.ledger.clock()
            status = bk.status(verdict, meta.get("generation"), now.isoformat(), bk.location(spec))
            current = obj.get("status") or {}
            if any(current.get(k) != status.get(k) for k in ("phase", "conditions", "observedGeneration")):
                self.cluster.patch_backup_status(namespace, name, status)
            if not op or verdict.state == "Progressing":
                return  # applied by hand or by an older platform: nobody awaits a report
            if verdict.state == "Completed":
                record = backupplan.taken(want, bk.details(obj, engine_obj, now), now)
            else:
                record = backupplan.take_failed(want, f"{verdict.reason}: {verdict.message}", now)
            self.ledger.store_backup(replace(record, stored=engine_obj is not None))

    def finalize_backup(self, obj: Mapping[str, Any]) -> None:
        """The DatabaseBackup is being deleted (its file left git): wait for the engine's backup
        resource to go (its operator deletes the stored backup), find the deleting operation in its
        deletion record and record Deleted. None (a failed backup's claim reverted, or applied by
        hand): nobody awaits a report. Raises OperatorError to be retried."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        namespace, name, engine = meta["namespace"], meta["name"], str(spec.get("engine", ""))
        if engine in bk.ENGINE_BACKUPS and self.cluster.engine_backup(engine, namespace, name) is not None:
            raise OperatorError("the engine's backup resource is still being deleted")
        want = bk.wanted(obj, "", self.settings.pop)
        op = self.cluster.backup_deletion_operation(namespace, want.backup_id)
        if op is None:
            log.info("DatabaseBackup deleted without a deletion record: nobody awaits a report",
                     namespace=namespace, name=name, backup_id=want.backup_id)
            return
        previous = self.ledger.backup(want.key)
        if previous is not None and previous.action == "drop" and previous.operation_id == op:
            return
        now = self.ledger.clock()
        base = previous or backupplan.take_failed(want, "deleted before the PoP recorded an outcome", now)
        self.ledger.store_backup(backupplan.dropped(base, CommitRef("", op, None, "D"), now))

    def _record(self, claim: Mapping[str, Any], key: str, engine: str, verdict: engines.Assessment,
                creds: dict | None) -> None:
        meta, spec = claim["metadata"], claim["spec"]
        op = (meta.get("annotations") or {}).get(OPERATION_ANNOTATION)
        if not op:
            return  # applied by hand or by an older platform: nobody awaits a report
        previous = self.ledger.get(key)
        phase = outcome(previous, op, verdict)
        if phase is None:
            waiting = self.ledger.needs_credentials(key)
            if waiting is not None and creds is not None and waiting.operation_id == op:
                self.ledger.set_token(waiting.report_id, creds["token"])
            return
        now = self.ledger.clock().isoformat()
        record = Record(path=f"{meta['namespace']}/{meta['name']}", tenant=spec["tenant"],
                        service_id=spec["serviceId"], name=spec.get("name", ""), engine=engine, action="apply",
                        operation_id=op, correlation_id=None, commit="", phase=phase,  # type: ignore[arg-type]
                        observed_at=now, endpoint=creds["endpoint"] if creds else None,
                        reason=None if phase == "Ready" else f"{verdict.reason}: {verdict.message}",
                        provisioned=True)
        self.ledger.store(record, creds["token"] if creds else None)

    def _credentials(self, engine: str, claim: Mapping[str, Any], obj: Mapping[str, Any]) -> dict:
        meta, spec = claim["metadata"], claim["spec"]
        e = engines.ENGINES[engine]
        secret_name = f"{meta['name']}-credentials"
        data = self.cluster.secret(meta["namespace"], secret_name)
        if data is None:
            password = secrets.token_urlsafe(24)
            self.cluster.create_secret(meta["namespace"], secret_name, {e.secret_key: password, "password": password,
                                                                         "username": e.username},
                                       {"app.kubernetes.io/part-of": "dbaas", SERVICE_LABEL: spec["serviceId"]})
            data = self.cluster.secret(meta["namespace"], secret_name) or {}
        password = data.get("password") or data.get(e.secret_key) or ""
        username = data.get("username") or e.username
        endpoint = engines.endpoint(engine, obj)
        host, _, port = endpoint.rpartition(":")
        scheme = {"yugabyte": "postgresql", "vitess": "mysql", "scylla": "cql", "dragonfly": "redis",
                  "aerospike": "aerospike", "mongodb": "mongodb"}[engine]
        from urllib.parse import quote

        creds = _Creds(username=username, password=password, host=host, port=int(port),
                       uri=f"{scheme}://{quote(username)}:{quote(password, safe='')}@{endpoint}")
        return {"endpoint": endpoint, "secret": secret_name,
                "token": encrypt_credentials(self.ledger.fernet, creds)}

    def finalize(self, claim: Mapping[str, Any]) -> None:
        """The claim is being deleted: wait for its engine resource to go, find the deleting
        operation, remove the credentials, record Deleted. Raises OperatorError to be retried."""
        meta, spec = claim["metadata"], claim["spec"]
        namespace, name, engine = meta["namespace"], meta["name"], spec.get("engine", "")
        if engine in engines.ENGINES and self.cluster.engine_resource(engine, namespace, name) is not None:
            raise OperatorError("the engine resource is still being deleted")
        op = self.cluster.deletion_operation(namespace, spec["serviceId"])
        self.cluster.delete_secret(namespace, f"{name}-credentials")
        if op is None:
            log.warning("claim deleted without a deletion record: nobody awaits a report", namespace=namespace,
                        name=name)
            return
        key = f"{spec['tenant']}/{spec['serviceId']}"
        previous = self.ledger.get(key)
        if previous is not None and previous.operation_id == op and previous.action == "delete":
            return
        self.ledger.store(Record(
            path=f"{namespace}/{name}", tenant=spec["tenant"], service_id=spec["serviceId"], name=spec.get("name", ""),
            engine=engine, action="delete", operation_id=op, correlation_id=None, commit="", phase="Deleted",
            observed_at=self.ledger.clock().isoformat()))


@dataclass(frozen=True)
class _Creds:
    username: str
    password: str
    host: str
    port: int
    uri: str
    database: str | None = None
    key_prefix: str | None = None


# -- kopf --------------------------------------------------------------------------------------
def register(registry, reconciler: Reconciler) -> None:
    """The operator's handlers, in ``registry`` (a ``kopf.OperatorRegistry``)."""
    import kopf

    def watch(resource: tuple[str, str, str], reconcile: Callable[[Any], None],
              finalize: Callable[[Any], None]) -> None:
        """Reconcile each object of `resource` when it changes, is resumed after a restart or every
        2 s; finalize it before it goes (a finalizer: retried while the engine's objects remain)."""

        @kopf.on.resume(*resource, registry=registry)
        @kopf.on.create(*resource, registry=registry)
        @kopf.on.update(*resource, registry=registry)
        def on_change(body, **_):
            reconcile(body)

        @kopf.timer(*resource, interval=2.0, idle=0, registry=registry)
        def on_tick(body, **_):
            reconcile(body)

        @kopf.on.delete(*resource, registry=registry)
        def on_delete(body, **_):
            try:
                finalize(body)
            except OperatorError as exc:
                raise kopf.TemporaryError(str(exc), delay=1) from None

    watch((GROUP, VERSION, PLURAL), reconciler.reconcile, reconciler.finalize)
    watch((bk.GROUP, bk.VERSION, bk.PLURAL), reconciler.reconcile_backup, reconciler.finalize_backup)

    for group, version, plural in bk.ENGINE_BACKUPS.values():
        @kopf.on.event(group, version, plural, registry=registry)
        def on_engine_backup_event(name, namespace, type, **_):
            if type == "DELETED":
                return
            obj = reconciler.cluster.database_backup(namespace, name)
            if obj is not None:
                reconciler.reconcile_backup(obj)

    for engine in engines.ENGINES.values():
        group, _, version = engine.api_version.rpartition("/")

        @kopf.on.event(group, version, engine.plural, registry=registry)
        def on_engine_event(name, namespace, type, **_):
            if type == "DELETED":
                return
            claim = reconciler.cluster.claim(namespace, name)
            if claim is not None:
                reconciler.reconcile(claim)


def kubeconfig_login(path: Path):
    """kopf's connection from the current context of a kubeconfig with a bearer token and the CA
    inline (the shape ``dbaas stack`` writes and a service-account kubeconfig has)."""
    import kopf
    import yaml

    doc = yaml.safe_load(path.read_text())
    context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == context["user"])
    ca = cluster.get("certificate-authority-data")
    return kopf.ConnectionInfo(server=cluster["server"], scheme="Bearer", token=user.get("token"),
                               ca_data=base64.b64decode(ca) if ca else None, ca_path=cluster.get("certificate-authority"),
                               default_namespace=context.get("namespace"))


def run(settings: OperatorSettings, stop: threading.Event) -> None:
    import kopf
    from kubernetes import config

    if settings.kubeconfig:
        api_client = config.new_client_from_config(config_file=str(settings.kubeconfig))
    else:
        config.load_incluster_config()
        from kubernetes import client

        api_client = client.ApiClient()
    # kopf logs every handler run at INFO; keep its warnings and errors, the outcomes are ours
    logging.getLogger("kopf").setLevel(logging.WARNING)
    ledger = Ledger(settings, Reporter(settings))
    reconciler = Reconciler(settings, Cluster(api_client), ledger)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="pop-operator.dbaas.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="pop-operator.dbaas.io", key="last-handled-configuration")
        settings.posting.enabled = False  # no Kubernetes Events: the state is in conditions and reports
        settings.watching.server_timeout = 60

    @kopf.on.login(registry=registry)
    def login(**kwargs):
        if settings.kubeconfig is None:
            return kopf.login_with_service_account(**kwargs)
        return kubeconfig_login(settings.kubeconfig)

    reporting_stop = threading.Event()

    def report_loop() -> None:
        while not reporting_stop.is_set():
            try:
                ledger.report_round()
            except Exception as exc:  # noqa: BLE001 — counted by the reporter; the next round retries
                log.warning("reporting round failed; retrying", error=str(exc))
            reporting_stop.wait(settings.interval)
        ledger.acknowledge(ledger.reporter.close())

    reporter = threading.Thread(target=report_loop, name="reporter", daemon=True)
    reporter.start()
    loop = asyncio.new_event_loop()
    kopf_stop = asyncio.Event()
    log.info("started", pop=settings.pop, topic=settings.pop_status_topic, records=len(ledger.records))

    def relay_stop() -> None:
        stop.wait()
        loop.call_soon_threadsafe(kopf_stop.set)

    threading.Thread(target=relay_stop, name="stop-relay", daemon=True).start()
    try:
        loop.run_until_complete(kopf.operator(registry=registry, clusterwide=True, stop_flag=kopf_stop,
                                              standalone=True))
    finally:
        reporting_stop.set()
        reporter.join(timeout=15)
        api_client.close()
        loop.close()
        log.info("stopped")


def main() -> int:
    from runtime import process

    return process.main("pop-operator", OperatorSettings.from_env, run, (SettingsError,))


if __name__ == "__main__":
    raise SystemExit(main())
