"""The read port of the HTTP process: every question the gateway asks the read models, as one typed
interface (`ReadModel`) with frozen-dataclass answers, and its implementation over the live tables
in PostgreSQL (`SqlReadModel`).

Backups are read here too: a service's backups, one backup, a service's backup policy, and its
recovery window — worked out with the rule `decide` judges restores by (`events.backups.window`),
over the completed backups, the policy and the service's deletion, at the moment the caller gives.

The gateway knows only `ReadModel`, its answers and its two errors: a database that does not answer
is `ReadModelUnavailable` (transient: the caller may retry), a value the database refuses is
`ReadModelRefused` (the request's fault). `DATABASE_UNAVAILABLE` and `DATABASE_REFUSED` also list
the driver's own errors, which the query router (`projections.api`) lets through, so the HTTP
process maps both without importing the driver. Connects nothing at import time.
Imports SQLAlchemy, psycopg, `events` (quota records, the recovery-window rule) and
`projections.queries`/`.tables`/`.settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import psycopg
import sqlalchemy as sa
import sqlalchemy.exc

from events import Quota, quota_from_avro
from events.backups import Restorable, Window, window
from projections import queries, snapshots, telemetry
from projections.errors import NotFound, ProjectionError, TransientError
from projections.series import Sample
from projections.settings import sqlalchemy_url
from projections.snapshots import Snapshot
from projections.tables import Tables, build_tables


class ReadModelUnavailable(TransientError):
    """The read models' database did not answer (down, unreachable, timed out): retry later."""


class ReadModelRefused(ProjectionError):
    """The database refused a value of the question (the caller's input, not the platform)."""


@dataclass(frozen=True)
class Member:
    """A member of an organization: its principal (`<issuer>#<sub>`) and role there."""

    subject: str
    role: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SubscriptionReading:
    """A tenant subscription as the read model has it (never its password)."""

    subscription_id: str
    name: str
    principal: str
    group_prefix: str
    status: str
    reason: str | None
    requested_by: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Membership:
    """An organization a principal is a member of, with its role there."""

    tenant_id: str
    role: str


@dataclass(frozen=True)
class StoredCredentials:
    """A service's tenant and its credentials as the PoP reported them: a Fernet token, or None
    while the service has none."""

    tenant_id: str
    token: str | None


@dataclass(frozen=True)
class UsageGroup:
    """What an organization's services hold in one (engine, PoP): resources times replicas, over
    services neither deleted nor failed."""

    engine: str
    pop: str
    services: int
    cpu: float
    memory_gb: float
    storage_gb: float


@dataclass(frozen=True)
class QuotaReading:
    """An organization's quota (None: none set, the platform default applies) and its usage."""

    tenant_id: str
    quota: Quota | None
    usage: tuple[UsageGroup, ...]


@dataclass(frozen=True)
class BackupReading:
    """One backup as the `backups` read model holds it. `status`: Requested, Running, Completed,
    Failed, Deleting or Deleted; the manifest fields are None until it completed."""

    backup_id: str
    tenant_id: str
    service_id: str
    service_name: str
    engine: str
    pop: str
    status: str
    slot: str | None
    pitr: bool
    operation_id: str
    deletion_operation_id: str | None
    requested_at: datetime
    taken_at: datetime | None
    pitr_from: datetime | None
    size_bytes: int | None
    location: str | None
    dek_id: str | None
    kek_id: str | None
    consistency: Any
    tables: Any
    reason: str | None
    deletion_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class BackupPolicyReading:
    schedule: str | None  # cron (UTC); None: no scheduled backups
    retain_count: int  # 0: no limit by count
    retain_days: int  # 0: no limit by age
    pitr: bool
    set_at: datetime


@dataclass(frozen=True)
class ServiceBackupFacts:
    """What the backup questions need of a service: its organization, engine, status, backup
    policy (None: never set), deletion time and restore source (None: not a restore)."""

    service_id: str
    tenant_id: str
    name: str
    engine: str
    status: str
    policy: BackupPolicyReading | None
    deleted_at: datetime | None
    restore: dict[str, Any] | None


@dataclass(frozen=True)
class ScheduleGap:
    """A scheduled backup that failed: its slot holds no restorable instant."""

    backup_id: str
    slot: str
    reason: str | None
    requested_at: datetime


@dataclass(frozen=True)
class RecoveryReading:
    """A service's recovery window at a moment (`events.backups.Window`: its restorable instants
    and point-in-time span) and the gaps of its schedule."""

    service: ServiceBackupFacts
    window: Window
    gaps: tuple[ScheduleGap, ...]


@dataclass(frozen=True)
class AlertReading:
    """An alert as the `alerts` read model holds it: its latest state (`raised` or `resolved`)."""

    alert_id: str
    tenant_id: str
    service_id: str | None
    kind: str
    severity: str
    state: str
    message: str
    raised_at: datetime
    resolved_at: datetime | None
    source: str
    updated_at: datetime


@runtime_checkable
class ReadModel(Protocol):
    """What the HTTP process reads. Every method may raise `ReadModelUnavailable` or
    `ReadModelRefused`; "not there" is None (or empty), never an exception."""

    def member_role(self, tenant: str, subject: str) -> str | None:
        """`subject`'s membership role in `tenant`; None when it is not a member."""
        ...

    def memberships(self, subject: str) -> list[Membership]:
        """The organizations `subject` is a member of, by organization."""
        ...

    def subscriptions(self, tenant: str) -> list[SubscriptionReading]:
        """The organization's subscriptions, oldest first (revoked ones too)."""
        ...

    def members(self, tenant: str) -> list[Member]:
        """The members of `tenant`, by subject."""
        ...

    def service_tenant(self, service_id: str) -> str | None:
        """The organization of a service; None when there is no such service."""
        ...

    def operation_tenant(self, operation_id: str) -> str | None:
        """The organization of an operation; None when there is no such operation."""
        ...

    def operation_fingerprint(self, operation_id: str) -> str | None:
        """The payload fingerprint of the command that started the operation; None when unknown."""
        ...

    def credentials(self, service_id: str) -> StoredCredentials | None:
        """A service's stored (encrypted) credentials; None when there is no such service."""
        ...

    def quotas(self, tenant: str) -> QuotaReading | None:
        """An organization's quota and usage; None when there is no such organization."""
        ...

    def backups(self, service_id: str, status: str | None = None, limit: int = 100) -> list[BackupReading]:
        """A service's backups, newest first: those in `status`, or all but the deleted ones."""
        ...

    def backup(self, backup_id: str) -> BackupReading | None:
        """One backup; None when there is no such backup."""
        ...

    def backup_facts(self, service_id: str) -> ServiceBackupFacts | None:
        """A service's backup policy and what backups need of it; None when there is no such service."""
        ...

    def recovery_window(self, service_id: str, now: datetime) -> RecoveryReading | None:
        """What a service can be restored to at `now`; None when there is no such service."""
        ...

    def service_samples(self, service_id: str, since: datetime, until: datetime | None = None) -> list[Sample]:
        """A service's metric samples from `since` (to `until`), oldest first (at most the newest
        `projections.telemetry.MAX_SAMPLES`)."""
        ...

    def alerts(self, tenant: str, open_only: bool = False, limit: int = 100, *,
               now: datetime | None = None) -> list[AlertReading]:
        """An organization's alerts, newest first: the open ones, or every one not resolved more
        than 30 days before `now`."""
        ...

    def snapshot(self, tenant: str, until: datetime, read_model: str | None = None,
                 row_id: str | None = None, topic: str = "dbaas.events") -> Snapshot | None:
        """The latest snapshot of an organization's rows whose events all occurred at or before
        `until` (every read model, or `read_model`'s, or only its row `row_id`); None: replay the
        whole log (`projections.snapshots`)."""
        ...


DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    ReadModelUnavailable, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError, psycopg.OperationalError, psycopg.InterfaceError)
DATABASE_REFUSED: tuple[type[Exception], ...] = (ReadModelRefused, sqlalchemy.exc.DataError, psycopg.DataError)
_UNAVAILABLE = DATABASE_UNAVAILABLE[1:]
_REFUSED = DATABASE_REFUSED[1:]


class SqlReadModel:
    """`ReadModel` over the live read-model tables, through a pooled SQLAlchemy engine.

    `engine` is also what the query router (`projections.api.get_engine`) reads with."""

    def __init__(self, engine: sa.Engine, tables: Tables | None = None) -> None:
        self.engine = engine
        self.tables = tables or build_tables()

    @classmethod
    def connect(cls, database_url: str) -> SqlReadModel:
        """A read model over `database_url` (any postgresql:// DSN); connects on first use."""
        return cls(sa.create_engine(sqlalchemy_url(database_url), pool_size=10, pool_pre_ping=True))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise ReadModelUnavailable(_first_line(exc)) from exc
        except _REFUSED as exc:
            raise ReadModelRefused(_first_line(exc)) from exc

    def member_role(self, tenant: str, subject: str) -> str | None:
        t = self.tables.members
        with self._reading() as conn:
            return conn.execute(sa.select(t.c.role).where(t.c.tenant_id == tenant, t.c.subject == subject)).scalar()

    def memberships(self, subject: str) -> list[Membership]:
        with self._reading() as conn:
            return [Membership(r["tenant_id"], r["role"]) for r in queries.memberships(conn, self.tables, subject)]

    def subscriptions(self, tenant: str) -> list[SubscriptionReading]:
        t = self.tables.subscriptions
        with self._reading() as conn:
            rows = conn.execute(sa.select(t).where(t.c.tenant_id == tenant).order_by(t.c.created_at, t.c.id)).mappings()
            return [SubscriptionReading(r["id"], r["name"], r["principal"], r["group_prefix"], r["status"], r["reason"],
                                        r["requested_by"], r["created_at"], r["updated_at"]) for r in rows]

    def members(self, tenant: str) -> list[Member]:
        with self._reading() as conn:
            return [Member(**r) for r in queries.members(conn, self.tables, tenant)]

    def service_tenant(self, service_id: str) -> str | None:
        with self._reading() as conn:
            return queries.tenant_of(conn, self.tables.services, service_id)

    def operation_tenant(self, operation_id: str) -> str | None:
        with self._reading() as conn:
            return queries.tenant_of(conn, self.tables.operations, operation_id)

    def operation_fingerprint(self, operation_id: str) -> str | None:
        with self._reading() as conn:
            return queries.operation_fingerprint(conn, self.tables, operation_id)

    def credentials(self, service_id: str) -> StoredCredentials | None:
        t = self.tables.services
        with self._reading() as conn:
            row = conn.execute(sa.select(t.c.tenant_id, t.c.credentials).where(t.c.id == service_id)).first()
        return None if row is None else StoredCredentials(row.tenant_id, row.credentials)

    def quotas(self, tenant: str) -> QuotaReading | None:
        with self._reading() as conn:
            try:
                organization = queries.get_organization(conn, self.tables, tenant)
            except NotFound:
                return None
            groups = queries.usage(conn, self.tables, tenant)
        stored = organization["quota"]
        return QuotaReading(tenant, quota_from_avro(stored) if stored else None, tuple(
            UsageGroup(g["engine"], g["pop"], int(g["services"]), float(g["cpu"] or 0),
                       float(g["memory_gb"] or 0), float(g["storage_gb"] or 0)) for g in groups))


    def backups(self, service_id: str, status: str | None = None, limit: int = 100) -> list[BackupReading]:
        with self._reading() as conn:
            return [_backup(r) for r in queries.list_backups(conn, self.tables, service_id, status, limit)]

    def backup(self, backup_id: str) -> BackupReading | None:
        with self._reading() as conn:
            row = queries.get_backup(conn, self.tables, backup_id)
        return None if row is None else _backup(row)

    def backup_facts(self, service_id: str) -> ServiceBackupFacts | None:
        with self._reading() as conn:
            return self._facts(conn, service_id)

    def _facts(self, conn: sa.Connection, service_id: str) -> ServiceBackupFacts | None:
        t = self.tables.services
        row = conn.execute(sa.select(t.c.id, t.c.tenant_id, t.c.name, t.c.engine, t.c.status, t.c.backup_policy,
                                     t.c.deleted_at, t.c.restore).where(t.c.id == service_id)).first()
        if row is None:
            return None
        return ServiceBackupFacts(row.id, row.tenant_id, row.name, row.engine, row.status, _policy(row.backup_policy),
                                  row.deleted_at, row.restore)

    def recovery_window(self, service_id: str, now: datetime) -> RecoveryReading | None:
        with self._reading() as conn:
            facts = self._facts(conn, service_id)
            if facts is None:
                return None
            done = queries.restorable_backups(conn, self.tables, service_id)
            failed = queries.failed_scheduled_backups(conn, self.tables, service_id)
        return recovery(facts, [Restorable(r["id"], r["taken_at"], r["pitr_from"]) for r in done],
                        [ScheduleGap(r["id"], r["slot"], r["reason"], r["requested_at"]) for r in failed], now)

    def service_samples(self, service_id: str, since: datetime, until: datetime | None = None) -> list[Sample]:
        try:
            with self._reading() as conn:
                return telemetry.read_samples(conn, telemetry.TABLES, service_id, since, until)
        except sqlalchemy.exc.ProgrammingError as exc:
            return _no_telemetry_yet(exc)

    def alerts(self, tenant: str, open_only: bool = False, limit: int = 100, *,
               now: datetime | None = None) -> list[AlertReading]:
        now = now or datetime.now(UTC)
        try:
            with self._reading() as conn:
                rows = telemetry.read_alerts(conn, telemetry.TABLES, tenant, open_only, limit, now)
        except sqlalchemy.exc.ProgrammingError as exc:
            return _no_telemetry_yet(exc)
        return [AlertReading(**row) for row in rows]

    def snapshot(self, tenant: str, until: datetime, read_model: str | None = None,
                 row_id: str | None = None, topic: str = "dbaas.events") -> Snapshot | None:
        try:
            with self._reading() as conn:
                return snapshots.latest(conn, self.tables, topic, tenant, until, read_model, row_id)
        except sqlalchemy.exc.ProgrammingError as exc:
            if isinstance(getattr(exc, "orig", None), psycopg.errors.UndefinedTable):
                return None  # the projector has not created the snapshot tables yet
            raise


def _no_telemetry_yet(exc: sqlalchemy.exc.ProgrammingError) -> list:
    """The telemetry tables exist once the projector created them: until then there are no rows."""
    if isinstance(getattr(exc, "orig", None), psycopg.errors.UndefinedTable):
        return []
    raise exc


def recovery(facts: ServiceBackupFacts, completed: list[Restorable], failed: list[ScheduleGap],
             now: datetime) -> RecoveryReading:
    """The recovery window of a service, by the rule `decide` judges restores with; the gaps are the
    failed scheduled backups since its oldest restorable instant (all of them when it has none)."""
    policy = facts.policy
    span = window(completed, pitr_on=bool(policy and policy.pitr),
                  pitr_off_at=policy.set_at if policy and not policy.pitr else None,
                  deleted_at=facts.deleted_at, now=now)
    oldest = span.instants[0].taken_at if span.instants else None
    gaps = tuple(g for g in failed if oldest is None or g.requested_at >= oldest)
    return RecoveryReading(facts, span, gaps)


def _policy(stored: dict[str, Any] | None) -> BackupPolicyReading | None:
    if not stored:
        return None
    return BackupPolicyReading(stored.get("schedule"), int(stored.get("retain_count", 0)),
                               int(stored.get("retain_days", 0)), bool(stored.get("pitr")),
                               datetime.fromisoformat(stored["set_at"]))


def _backup(row: dict[str, Any]) -> BackupReading:
    return BackupReading(backup_id=row["id"], **{k: v for k, v in row.items() if k not in ("id", "version")})


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).splitlines() or [type(cause).__name__])[0][:300]
