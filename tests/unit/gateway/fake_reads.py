"""An in-memory `ReadModel` for the gateway's unit tests: rows are plain dicts the test fills in,
answers are the port's own dataclasses, and `failing` makes every question raise (a database that
is down, or one that refuses a value)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from events import Quota
from events.backups import Restorable
from projections.series import Sample
from projections.reads import (
    AlertReading,
    BackupReading,
    Member,
    Membership,
    QuotaReading,
    RecoveryReading,
    ScheduleGap,
    ServiceBackupFacts,
    StoredCredentials,
    UsageGroup,
    recovery,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeReadModel:
    roles: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, principal) -> role
    services: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> (tenant, token)
    operations: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (tenant, fingerprint)
    organizations: dict[str, Quota | None] = field(default_factory=dict)  # slug -> quota set (None: default)
    usage: dict[str, list[UsageGroup]] = field(default_factory=dict)
    backup_rows: dict[str, BackupReading] = field(default_factory=dict)  # backup id -> row
    facts: dict[str, ServiceBackupFacts] = field(default_factory=dict)  # service id -> its backup facts
    samples: dict[str, list[Sample]] = field(default_factory=dict)  # service id -> its samples, oldest first
    alert_rows: list[AlertReading] = field(default_factory=list)
    subscription_rows: dict[str, list] = field(default_factory=dict)  # tenant -> SubscriptionReading
    failing: Exception | None = None
    asked: list[str] = field(default_factory=list)

    def _ask(self, what: str) -> None:
        self.asked.append(what)
        if self.failing is not None:
            raise self.failing

    def member_role(self, tenant: str, subject: str) -> str | None:
        self._ask("member_role")
        return self.roles.get((tenant, subject))

    def memberships(self, subject: str) -> list[Membership]:
        self._ask("memberships")
        return sorted((Membership(t, r) for (t, s), r in self.roles.items() if s == subject),
                      key=lambda m: m.tenant_id)

    def snapshot(self, tenant: str, until: datetime, read_model: str | None = None, row_id: str | None = None,
                 topic: str = "dbaas.events") -> None:
        self._ask("snapshot")
        return None  # no snapshots: time travel replays the whole log

    def subscriptions(self, tenant: str) -> list:
        self._ask("subscriptions")
        return list(self.subscription_rows.get(tenant, []))

    def members(self, tenant: str) -> list[Member]:
        self._ask("members")
        return sorted((Member(s, r, T0, T0) for (t, s), r in self.roles.items() if t == tenant),
                      key=lambda m: m.subject)

    def service_tenant(self, service_id: str) -> str | None:
        self._ask("service_tenant")
        return self.services[service_id][0] if service_id in self.services else None

    def operation_tenant(self, operation_id: str) -> str | None:
        self._ask("operation_tenant")
        return self.operations[operation_id][0] if operation_id in self.operations else None

    def operation_fingerprint(self, operation_id: str) -> str | None:
        self._ask("operation_fingerprint")
        return self.operations[operation_id][1] if operation_id in self.operations else None

    def credentials(self, service_id: str) -> StoredCredentials | None:
        self._ask("credentials")
        if service_id not in self.services:
            return None
        return StoredCredentials(*self.services[service_id])

    def quotas(self, tenant: str) -> QuotaReading | None:
        self._ask("quotas")
        if tenant not in self.organizations:
            return None
        return QuotaReading(tenant, self.organizations[tenant], tuple(self.usage.get(tenant, ())))

    def backups(self, service_id: str, status: str | None = None, limit: int = 100) -> list[BackupReading]:
        self._ask("backups")
        rows = [b for b in self.backup_rows.values() if b.service_id == service_id
                and (b.status == status if status else b.status != "Deleted")]
        return sorted(rows, key=lambda b: b.requested_at, reverse=True)[:limit]

    def backup(self, backup_id: str) -> BackupReading | None:
        self._ask("backup")
        return self.backup_rows.get(backup_id)

    def backup_facts(self, service_id: str) -> ServiceBackupFacts | None:
        self._ask("backup_facts")
        return self.facts.get(service_id)

    def recovery_window(self, service_id: str, now: datetime) -> RecoveryReading | None:
        self._ask("recovery_window")
        if (facts := self.facts.get(service_id)) is None:
            return None
        mine = [b for b in self.backup_rows.values() if b.service_id == service_id]
        done = [Restorable(b.backup_id, b.taken_at, b.pitr_from) for b in mine
                if b.status == "Completed" and b.taken_at is not None]
        failed = [ScheduleGap(b.backup_id, b.slot, b.reason, b.requested_at) for b in mine
                  if b.status == "Failed" and b.slot is not None]
        return recovery(facts, done, sorted(failed, key=lambda g: g.requested_at, reverse=True), now)

    def service_samples(self, service_id: str, since: datetime, until: datetime | None = None) -> list[Sample]:
        self._ask("service_samples")
        return [s for s in self.samples.get(service_id, [])
                if s.sampled_at >= since and (until is None or s.sampled_at <= until)]

    def alerts(self, tenant: str, open_only: bool = False, limit: int = 100, *,
               now: datetime | None = None) -> list[AlertReading]:
        self._ask("alerts")
        rows = [a for a in self.alert_rows if a.tenant_id == tenant and (not open_only or a.state == "raised")]
        return sorted(rows, key=lambda a: a.raised_at, reverse=True)[:limit]
