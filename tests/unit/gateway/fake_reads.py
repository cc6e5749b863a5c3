"""An in-memory `ReadModel` for the gateway's unit tests: rows are plain dicts the test fills in,
answers are the port's own dataclasses, and `failing` makes every question raise (a database that
is down, or one that refuses a value)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from events import Quota
from projections.reads import Member, Membership, QuotaReading, StoredCredentials, UsageGroup

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeReadModel:
    roles: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, principal) -> role
    services: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> (tenant, token)
    operations: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (tenant, fingerprint)
    organizations: dict[str, Quota | None] = field(default_factory=dict)  # slug -> quota set (None: default)
    usage: dict[str, list[UsageGroup]] = field(default_factory=dict)
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
