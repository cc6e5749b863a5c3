"""PoP local's change data capture: the local PoP agent plays Strimzi's Connect operator for the
KafkaConnectors committed under ``tenants/*/local/cdc/``, against the platform's Kafka Connect.

Per connector file (key ``tenant/service``), each sync:

- a file whose commit's operation was not handled → **register**: resolve what the render left to
  the PoP (the database's address and login, the registry's URL, the broker), ``PUT
  /connectors/{name}/config`` (idempotent), then watch it until it runs (report ``Running``) or
  its registration time runs out (report ``Failed`` with Connect's reason);
- a registered connector → **watch** (every ``WATCH_SECONDS``): a failed connector or task is
  restarted with a doubling back-off (2 s … 60 s), up to ``MAX_RESTARTS``; still failed after
  them → report ``Failed`` (the control plane records it and alerts); running again for a while
  → the count starts over (and ``Running`` is reported again after a ``Failed``);
- a handled connector whose file is gone → **remove**: stop it, delete its offsets, delete it,
  then drop its replication slot (waiting for the connector's session to end) and its publication;
  report ``Removed`` on the operation of the commit that removed the file.

A service's connector is also removed before the agent deprovisions the service (PostgreSQL
cannot drop a database a replication slot reads, and an orphaned slot retains WAL until the disk
is full).

The pure part (:func:`wanted_connectors`, :func:`plan_connectors`) decides; :class:`LocalCdc`
acts. May import: the standard library, ``runtime.connect``, ``gitops``, ``operators.localpop``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal

import structlog
from prometheus_client import Counter

from gitops.errors import GitOpsError
from gitops.manifests import parse_all
from operators.localpop.claims import CommitRef, History
from operators.localpop.plan import report_id
from operators.localpop.provisioners import AdminEndpoint, service_identifier
from runtime.connect import Connect, ConnectError, ConnectRefused
from runtime.kafka import KafkaAccess

log = structlog.get_logger("dbaas.localpop.cdc")
RESTARTS = Counter("dbaas_localpop_cdc_restarts_total", "Failed CDC connectors restarted by the local PoP agent")
ACTIONS = Counter("dbaas_localpop_cdc_actions_total", "Connectors registered and removed, by outcome",
                  ["action", "outcome"])

KIND = "KafkaConnector"
GROUP = "kafka.strimzi.io"
MAX_RESTARTS = 7
FIRST_BACKOFF, MAX_BACKOFF = 2.0, 60.0
STABLE_SECONDS = 60.0  # running this long after restarts: the count starts over
WATCH_SECONDS = 5.0
REGISTER_SECONDS = 120.0  # a registration that does not run within this is reported Failed
SLOT_RELEASE_SECONDS = 30.0

Phase = Literal["Running", "Failed", "Removed"]


class InvalidConnector(ValueError):
    """A connector file the agent cannot act on (the reason names what is wrong)."""


@dataclass(frozen=True)
class ConnectorClaim:
    tenant: str
    service_id: str
    engine: str
    pop: str
    name: str
    connector_class: str
    config: Mapping[str, str]

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.service_id}"


def parse_connector(text: str, path: str = "manifest") -> ConnectorClaim:
    try:
        docs = parse_all(text, source=path)
    except GitOpsError as exc:  # the file is not YAML
        raise InvalidConnector(str(exc)) from None
    found = [d for d in docs if d.get("kind") == KIND and str(d.get("apiVersion", "")).startswith(GROUP + "/")]
    if len(found) != 1:
        raise InvalidConnector(f"{path} holds {len(found)} {KIND} objects; expected exactly one")
    doc = found[0]
    meta = doc.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = doc.get("spec") or {}
    values = {"tenant": labels.get("dbaas.io/tenant"), "service": labels.get("dbaas.io/service-id"),
              "engine": labels.get("dbaas.io/engine"), "pop": labels.get("dbaas.io/pop"), "name": meta.get("name"),
              "class": spec.get("class")}
    missing = [k for k, v in values.items() if not v]
    if missing or not isinstance(spec.get("config"), dict):
        raise InvalidConnector(f"{path}: the {KIND} has no {', '.join(missing) or 'config'}")
    return ConnectorClaim(str(values["tenant"]), str(values["service"]), str(values["engine"]), str(values["pop"]),
                          str(values["name"]), str(values["class"]),
                          {str(k): str(v) for k, v in spec["config"].items()})


# -- what is wanted, what was done, what to do ------------------------------------------------
@dataclass(frozen=True)
class WantedConnector:
    path: str
    claim: ConnectorClaim
    operation_id: str
    correlation_id: str | None
    commit: str
    reportable: bool = True

    @property
    def key(self) -> str:
        return self.claim.key


@dataclass(frozen=True)
class ConnectorRecord:
    """What the agent did about a service's connector (persisted)."""

    path: str
    tenant: str
    service_id: str
    engine: str
    name: str
    operation_id: str
    correlation_id: str | None
    commit: str
    phase: Phase | Literal["Registering"]
    observed_at: str
    reason: str | None = None
    reported: bool = False
    reportable: bool = True
    reports: int = 0  # reports made about this operation (a new Failed or Running after one)
    restarts: int = 0
    next_restart: float = 0.0  # monotonic time; 0: now
    stable_since: float = 0.0
    registered_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.service_id}"

    @property
    def report_id(self) -> str:
        return report_id(self.operation_id, f"cdc/{self.phase}/{self.reports}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConnectorRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Register:
    wanted: WantedConnector


@dataclass(frozen=True)
class Watch:
    record: ConnectorRecord


@dataclass(frozen=True)
class RemoveConnector:
    record: ConnectorRecord


@dataclass(frozen=True)
class ForgetConnector:
    record: ConnectorRecord


CdcStep = Register | Watch | RemoveConnector | ForgetConnector


def wanted_connectors(files: Mapping[str, ConnectorClaim | str], history: History, pop: str,
                      path_tenants: Mapping[str, str]) -> tuple[dict[str, WantedConnector], set[str], dict[str, str]]:
    """The connectors the PoP's files ask for, the paths that cannot be read, and the problems of
    files that can (a file in another tenant's or PoP's folder is acted on by no one)."""
    wanted: dict[str, WantedConnector] = {}
    unreadable: set[str] = set()
    problems: dict[str, str] = {}
    for path in sorted(files):
        claim, commit = files[path], history.last.get(path)
        if isinstance(claim, str) or commit is None:
            unreadable.add(path)
            continue
        if claim.tenant != path_tenants.get(path):
            problems[path] = f"the {KIND} names tenant {claim.tenant!r} but sits in another tenant's folder"
            continue
        if claim.pop != pop:
            problems[path] = f"the {KIND} is for PoP {claim.pop!r} but committed to PoP {pop!r}'s folder"
            continue
        wanted[claim.key] = WantedConnector(path, claim, commit.operation_id or f"commit:{commit.sha}",
                                            commit.correlation_id, commit.sha, commit.operation_id is not None)
    return wanted, unreadable, problems


def plan_connectors(wanted: Mapping[str, WantedConnector], records: Mapping[str, ConnectorRecord],
                    unreadable: set[str] | frozenset[str] = frozenset()) -> list[CdcStep]:
    """Removals first (they free what the database holds), then registrations, then watches."""
    removals: list[CdcStep] = []
    registrations: list[CdcStep] = []
    watches: list[CdcStep] = []
    for key in sorted(records):
        record = records[key]
        if key in wanted:
            continue
        if record.phase == "Removed":
            if record.reported:
                watches.append(ForgetConnector(record))
            else:
                watches.append(Watch(record))  # its report is re-sent
        elif record.path not in unreadable:
            removals.append(RemoveConnector(record))
    for key in sorted(wanted):
        want, record = wanted[key], records.get(key)
        if record is None or record.operation_id != want.operation_id or record.phase == "Removed":
            registrations.append(Register(want))
        else:
            watches.append(Watch(record))
    return removals + registrations + watches


def backoff(restarts: int, most: float = MAX_BACKOFF) -> float:
    """The wait before the next restart of a connector restarted ``restarts`` times: doubling."""
    return min(FIRST_BACKOFF * 2 ** max(restarts - 1, 0), most)


def report(record: ConnectorRecord, pop: str) -> dict[str, Any]:
    """The PopStatusReport (``schemas/pop_status.avsc``) about the connector ``record`` stands for."""
    return {
        "report_id": record.report_id, "pop": pop, "tenant_id": record.tenant, "service_id": record.service_id,
        "operation_id": record.operation_id, "phase": record.phase, "endpoint": None, "reason": record.reason,
        "credentials": None, "observed_at": datetime.fromisoformat(record.observed_at), "backup_id": None,
        "details": None, "connector": record.name,
    }


# -- the database side ------------------------------------------------------------------------
class PostgresCdc:
    """What a PostgreSQL connector needs of PoP local's server, and what it leaves there.

    The connector logs in as the agent's admin role (the platform's ``dbaas``: it has REPLICATION,
    and it is a member of every service's role, so it owns the publication Debezium creates for the
    service's tables). *Decision:* not a role of its own per connector: PostgreSQL 15 lets only a
    superuser create a REPLICATION role, and the agent holds no superuser."""

    def __init__(self, admin: AdminEndpoint, connect: Callable[[str], Any]):
        self.admin = admin
        self._connect = connect  # database name -> an autocommit psycopg connection (a context manager)

    def login(self, tenant: str, service_id: str) -> dict[str, str]:
        return {"host": self.admin.host, "port": str(self.admin.port), "username": self.admin.user,
                "password": self.admin.password, "database": service_identifier(tenant, service_id)}

    def prepare(self, tenant: str, service_id: str, slot: str) -> None:
        """An empty publication when there is none: Debezium creates a filtered one only for tables
        that exist, and refuses a database without any; it adds the tables when it starts."""
        from psycopg import sql

        with self._connect(service_identifier(tenant, service_id)) as conn:
            if not conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (slot,)).fetchone():
                conn.execute(sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(slot)))

    def release(self, tenant: str, service_id: str, slot: str, wait: float = SLOT_RELEASE_SECONDS) -> None:
        """Drop the replication slot (once no session streams from it: a removed connector's task
        may take a moment to let go; after ``wait`` its session is ended) and the publication."""
        database = service_identifier(tenant, service_id)
        with self._connect("postgres") as conn:
            deadline = time.monotonic() + wait
            while True:
                row = conn.execute("SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                   (slot,)).fetchone()
                if row is None:
                    break
                active, pid = row
                if not active:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    break
                if time.monotonic() > deadline:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                time.sleep(0.5)
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists:
            from psycopg import sql

            with self._connect(database) as conn:
                conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(slot)))

    def holds(self, tenant: str, service_id: str, slot: str) -> tuple[bool, bool]:
        """(slot exists, publication exists): what a removed connector must not leave."""
        database = service_identifier(tenant, service_id)
        with self._connect("postgres") as conn:
            has_slot = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        has_pub = None
        if exists:
            with self._connect(database) as conn:
                has_pub = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (slot,)).fetchone()
        return bool(has_slot), bool(has_pub)


class MariaDbCdc:
    """What a MariaDB (binlog) connector needs of PoP local's server, and what it leaves: no slot
    (the server keeps its binlog by age), but the connector's schema history topic, deleted with it
    (a connector registered again starts from a fresh snapshot and must not meet old history).

    The connector logs in as the agent's admin (it holds REPLICATION SLAVE/CLIENT and can read the
    service's database); *decision* as for PostgreSQL: no per-connector login yet."""

    def __init__(self, admin: AdminEndpoint, delete_topic: Callable[[str], None]):
        self.admin = admin
        self._delete_topic = delete_topic

    def login(self, tenant: str, service_id: str) -> dict[str, str]:
        return {"host": self.admin.host, "port": str(self.admin.port), "username": self.admin.user,
                "password": self.admin.password, "database": service_identifier(tenant, service_id)}

    def release(self, tenant: str, service_id: str, connector: str) -> None:
        self._delete_topic(f"dbaas.cdc-history.{connector}")


# -- acting -----------------------------------------------------------------------------------
class LocalCdc:
    """Registers, watches and removes the connectors of PoP local with the platform's Connect."""

    def __init__(self, connect: Connect, databases: Mapping[str, PostgresCdc | MariaDbCdc], *, registry_url: str,
                 kafka: KafkaAccess, clock: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic,
                 max_restarts: int = MAX_RESTARTS, max_backoff: float = MAX_BACKOFF):
        self.connect = connect
        self.databases = databases  # engine -> its server's CDC side
        self.registry_url = registry_url
        self.kafka = kafka
        self.clock = clock
        self.monotonic = monotonic
        self.max_restarts = max_restarts
        self.max_backoff = max_backoff
        self._last_watch: dict[str, float] = {}

    def resolve(self, claim: ConnectorClaim) -> dict[str, str]:
        """The connector's config with what the render left to the PoP filled in."""
        database = self.databases.get(claim.engine)
        if database is None:
            raise InvalidConnector(f"engine {claim.engine!r} has no change-data-capture source in PoP local")
        secrets = database.login(claim.tenant, claim.service_id)
        values = {"env:DBAAS_CONVERTER_REGISTRY_URL": converter_registry_url(self.registry_url),
                  "env:DBAAS_KAFKA_BOOTSTRAP": self.kafka.bootstrap}
        prefix = "secrets:" + f"tenant-{claim.tenant}/{claim.name}:"
        values |= {prefix + k: v for k, v in secrets.items()}
        config = {"connector.class": claim.connector_class, "tasks.max": "1"}
        for key, value in claim.config.items():
            config[key] = _substitute(value, values)
        if "schema.history.internal.kafka.bootstrap.servers" in config:
            # the schema history's own Kafka clients authenticate as this PoP's agent, which owns
            # the history topics (it deletes them with their connectors)
            for prefix in ("schema.history.internal.producer.", "schema.history.internal.consumer."):
                for line in self.kafka.java(prefix).splitlines():
                    key, _, value = line.partition("=")
                    config.setdefault(key, value)
        return config

    def register(self, w: WantedConnector) -> ConnectorRecord:
        claim = w.claim
        now = self.clock().isoformat()
        base = ConnectorRecord(w.path, claim.tenant, claim.service_id, claim.engine, claim.name, w.operation_id,
                               w.correlation_id, w.commit, "Registering", now, reported=not w.reportable,
                               reportable=w.reportable, registered_at=self.monotonic())
        try:
            config = self.resolve(claim)
            database = self.databases[claim.engine]
            if isinstance(database, PostgresCdc):
                database.prepare(claim.tenant, claim.service_id, config.get("publication.name", claim.name))
            self.connect.put_config(claim.name, config)
        except (ConnectRefused, InvalidConnector) as exc:
            log.warning("connector refused", connector=claim.name, reason=str(exc))
            ACTIONS.labels("register", "refused").inc()
            return replace(base, phase="Failed", reason=str(exc), reported=not w.reportable)
        log.info("connector registered", connector=claim.name, tenant_id=claim.tenant, service_id=claim.service_id)
        ACTIONS.labels("register", "ok").inc()
        return self.watch(base)

    def watch(self, r: ConnectorRecord) -> ConnectorRecord:
        """Its state now: running → Running; failed → restarted with back-off, or Failed after
        ``MAX_RESTARTS``; not running yet → still Registering (Failed past REGISTER_SECONDS)."""
        if r.phase == "Removed":
            return r
        now = self.monotonic()
        if r.phase != "Registering" and now - self._last_watch.get(r.key, 0.0) < WATCH_SECONDS:
            return r
        self._last_watch[r.key] = now
        state = self.connect.status(r.name)
        stamp = self.clock().isoformat()
        if state is not None and state.running:
            stable = r.stable_since or now
            restarts = 0 if now - stable >= STABLE_SECONDS else r.restarts
            if r.phase != "Running":
                log.info("connector running", connector=r.name, restarts=r.restarts)
                return replace(r, phase="Running", reason=None, observed_at=stamp, reported=not r.reportable,
                               reports=r.reports + (r.phase == "Failed"), stable_since=stable, restarts=restarts)
            return replace(r, stable_since=stable, restarts=restarts)
        failed = state is not None and (state.state == "FAILED" or bool(state.failed))
        if not failed:
            if r.phase == "Registering" and now - r.registered_at > REGISTER_SECONDS:
                return self._failed(r, f"the connector did not start within {REGISTER_SECONDS:.0f} s", stamp)
            return replace(r, stable_since=0.0)
        reason = (state.failure if state else None) or "the connector failed"
        if r.restarts >= self.max_restarts:
            return r if r.phase == "Failed" else self._failed(r, f"failed after {r.restarts} restarts: {reason}",
                                                               stamp)
        if now < r.next_restart:
            return r
        log.warning("connector failed; restarting", connector=r.name, restarts=r.restarts + 1, reason=reason)
        self.connect.restart_failed(r.name)
        RESTARTS.inc()
        return replace(r, restarts=r.restarts + 1, next_restart=now + backoff(r.restarts + 1, self.max_backoff),
                       stable_since=0.0)

    def remove(self, r: ConnectorRecord, commit: CommitRef) -> ConnectorRecord:
        self.connect.remove(r.name)
        database = self.databases.get(r.engine)
        if isinstance(database, PostgresCdc):
            database.release(r.tenant, r.service_id, r.name.replace("-", "_"))
        elif isinstance(database, MariaDbCdc):
            database.release(r.tenant, r.service_id, r.name)
        log.info("connector removed", connector=r.name, removal_operation_id=commit.operation_id)
        ACTIONS.labels("remove", "ok").inc()
        reportable = commit.operation_id is not None
        return replace(r, phase="Removed", operation_id=commit.operation_id or f"commit:{commit.sha}",
                       correlation_id=commit.correlation_id, commit=commit.sha, observed_at=self.clock().isoformat(),
                       reason=None, reported=not reportable, reportable=reportable, reports=0)

    def _failed(self, r: ConnectorRecord, reason: str, stamp: str) -> ConnectorRecord:
        log.error("connector stays failed", connector=r.name, reason=reason)
        bump = r.phase == "Running"
        return replace(r, phase="Failed", reason=reason[:1000], observed_at=stamp, reported=not r.reportable,
                       reports=r.reports + bump)


def converter_registry_url(registry_url: str) -> str:
    """Apicurio's converter speaks the registry's own v2 API, next to the Confluent-compatible one."""
    base = registry_url.split("/apis/", 1)[0]
    return f"{base}/apis/registry/v2"


def _substitute(value: str, values: Mapping[str, str]) -> str:
    for ref, resolved in values.items():
        value = value.replace("${" + ref + "}", resolved)
    if "${" in value:
        raise InvalidConnector(f"the connector refers to {value!r}, which PoP local does not provide")
    return value


__all__ = ["ConnectError", "ConnectorClaim", "ConnectorRecord", "LocalCdc", "PostgresCdc", "parse_connector",
           "plan_connectors", "wanted_connectors"]
