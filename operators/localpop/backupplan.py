"""The local PoP agent's pure core for backups: what the GitOps repository asks for (a
``DatabaseBackup`` file per retained backup under ``tenants/*/local/backups/``), what the agent
did (``BackupRecord``, persisted), and the steps that converge the two.

Rules, per backup (key ``tenant/backup/id``):

- a backup file whose commit's operation the agent has not handled → ``Take`` (back up, seal,
  upload, report ``Completed`` with the details, or ``Failed`` with the reason);
- a handled operation whose report Kafka has not acknowledged → ``ResendBackup``;
- a backup the agent handled whose file is gone (deleted by request or retention, or the claim of
  a failed backup reverted) → ``Drop`` (delete its stored objects, report ``Deleted`` with the
  operation of the commit that removed the file);
- a drop reported and acknowledged → ``ForgetBackup``.
A file that cannot be read never drops what was stored for it.

Pure: no I/O, no clock (times come in), no random ids.
May import: the standard library, ``operators.localpop.claims`` and ``operators.localpop.plan``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal

from operators.localpop.claims import BackupClaim, CommitRef, History
from operators.localpop.plan import report_id

BackupPhase = Literal["Completed", "Failed", "Deleted"]


@dataclass(frozen=True)
class WantedBackup:
    path: str
    tenant: str
    backup_id: str
    service_id: str
    engine: str
    pitr: bool
    operation_id: str
    correlation_id: str | None
    commit: str
    reportable: bool = True
    problem: str | None = None

    @property
    def key(self) -> str:
        return f"{self.tenant}/backup/{self.backup_id}"


@dataclass(frozen=True)
class BackupRecord:
    path: str
    tenant: str
    backup_id: str
    service_id: str
    engine: str
    action: Literal["take", "drop"]
    operation_id: str
    correlation_id: str | None
    commit: str
    phase: BackupPhase
    observed_at: str
    details: str | None = None  # JSON reported with Completed
    reason: str | None = None
    stored: bool = False  # objects of it may exist in the store (delete them on drop)
    reported: bool = False
    reportable: bool = True

    @property
    def key(self) -> str:
        return f"{self.tenant}/backup/{self.backup_id}"

    @property
    def report_id(self) -> str:
        return report_id(self.operation_id, self.phase)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackupRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Take:
    wanted: WantedBackup


@dataclass(frozen=True)
class Drop:
    record: BackupRecord


@dataclass(frozen=True)
class ResendBackup:
    record: BackupRecord


@dataclass(frozen=True)
class ForgetBackup:
    record: BackupRecord


BackupStep = Take | Drop | ResendBackup | ForgetBackup


def desired_backups(backups: Mapping[str, BackupClaim | str], history: History, pop: str,
                    path_tenants: Mapping[str, str]) -> tuple[dict[str, WantedBackup], set[str]]:
    """The backups the PoP's backup files ask for, and the paths that cannot be read."""
    wanted: dict[str, WantedBackup] = {}
    unreadable: set[str] = set()
    for path in sorted(backups):
        claim, commit = backups[path], history.last.get(path)
        if isinstance(claim, str) or commit is None:
            unreadable.add(path)
            continue
        problem = None
        if claim.tenant != path_tenants.get(path):
            problem = (f"the DatabaseBackup names tenant {claim.tenant!r} but sits in the folder of tenant "
                       f"{path_tenants.get(path)!r}")
        elif claim.pop != pop:
            problem = f"the DatabaseBackup is for PoP {claim.pop!r} but committed to PoP {pop!r}'s folder"
        wanted[claim.key] = WantedBackup(
            path, claim.tenant, claim.backup_id, claim.service_id, claim.engine, claim.pitr,
            commit.operation_id or f"commit:{commit.sha}", commit.correlation_id, commit.sha,
            reportable=commit.operation_id is not None, problem=problem)
    return wanted, unreadable


def plan_backups(wanted: Mapping[str, WantedBackup], records: Mapping[str, BackupRecord],
                 unreadable: frozenset[str] | set[str] = frozenset()) -> list[BackupStep]:
    """Drops first (they free space), then takes, then re-sends and forgets, each in key order."""
    drops: list[BackupStep] = []
    takes: list[BackupStep] = []
    rest: list[BackupStep] = []
    for key in sorted(records):
        record = records[key]
        if key in wanted:
            continue
        if record.action == "drop":
            rest.append(ForgetBackup(record) if record.reported else ResendBackup(record))
        elif record.path not in unreadable:
            drops.append(Drop(record))
    for key in sorted(wanted):
        want, record = wanted[key], records.get(key)
        if record is None or record.action != "take" or record.operation_id != want.operation_id:
            takes.append(Take(want))
        elif not record.reported:
            rest.append(ResendBackup(record))
    return drops + takes + rest


def taken(w: WantedBackup, details: str, now: datetime) -> BackupRecord:
    return _taken(w, "Completed", now, details=details, stored=True)


def take_failed(w: WantedBackup, reason: str, now: datetime) -> BackupRecord:
    return _taken(w, "Failed", now, reason=reason, stored=True)  # a partial upload may exist


def _taken(w: WantedBackup, phase: BackupPhase, now: datetime, **kw: Any) -> BackupRecord:
    return BackupRecord(w.path, w.tenant, w.backup_id, w.service_id, w.engine, "take", w.operation_id,
                        w.correlation_id, w.commit, phase, now.isoformat(), reported=not w.reportable,
                        reportable=w.reportable, **kw)


def dropped(record: BackupRecord, commit: CommitRef, now: datetime) -> BackupRecord:
    reportable = commit.operation_id is not None
    return replace(record, action="drop", operation_id=commit.operation_id or f"commit:{commit.sha}",
                   correlation_id=commit.correlation_id, commit=commit.sha, phase="Deleted",
                   observed_at=now.isoformat(), details=None, reason=None, stored=False,
                   reported=not reportable, reportable=reportable)


def report(record: BackupRecord, pop: str) -> dict[str, Any]:
    """The PopStatusReport (``schemas/pop_status.avsc``) about a backup that ``record`` stands for."""
    return {
        "report_id": record.report_id, "pop": pop, "tenant_id": record.tenant, "service_id": record.service_id,
        "operation_id": record.operation_id, "phase": record.phase, "endpoint": None, "reason": record.reason,
        "credentials": None, "observed_at": datetime.fromisoformat(record.observed_at),
        "backup_id": record.backup_id, "details": record.details if record.phase == "Completed" else None,
    }
