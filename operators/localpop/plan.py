"""The local PoP agent's pure core: what the GitOps repository asks for (``Desired``), what the
agent has done (``Record``, persisted in its state file), the steps that converge the two
(``plan``), and the status reports those records stand for.

Rules of convergence, per service (key ``tenant/service_id``):

- a ServiceClaim whose commit's operation the agent has not handled yet → ``Apply`` (provision,
  or refuse with a reason when PoP ``local`` cannot run it);
- a handled operation whose report Kafka has not acknowledged yet → ``Resend``;
- a service the agent applied whose file is gone → ``Remove`` (deprovision, report Deleted with
  the operation of the commit that deleted the file);
- a removal reported and acknowledged → ``Forget``.
A file that cannot be read as a ServiceClaim never removes what the agent applied from it: a
broken commit must not drop a tenant's database.

One report per (operation, phase): its ``report_id`` is a UUIDv5 of both, so a re-sent report is
recognisably the same one.

Pure: no I/O, no clock (times come in as arguments), no random ids.
May import: the standard library and ``operators.localpop.claims``.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, Literal

from operators.localpop.claims import Claim, CommitRef, History, Restore, service_key
from schemas.catalog import ENGINES, KUBERNETES_POPS

REPORT_NAMESPACE = uuid.UUID("0b6f3c2a-5d1e-4f7a-9c3b-7e2d8a41f905")

Phase = Literal["Ready", "Failed", "Deleted"]
Action = Literal["apply", "delete"]


@dataclass(frozen=True)
class Desired:
    """One ServiceClaim of this PoP at the GitOps tip, with the commit that last touched its file.

    ``problem`` says why this PoP cannot run it (reported as Failed); ``reportable`` is False
    when the commit carries no ``Operation-Id`` trailer (applied, but there is nobody to tell)."""

    path: str
    tenant: str
    service_id: str
    name: str
    engine: str
    operation_id: str
    correlation_id: str | None
    commit: str
    reportable: bool = True
    problem: str | None = None
    restore: Restore | None = None  # load the new service's data from this source once provisioned
    storage_bytes: int | None = None  # the storage the claim gives the service (its size)
    trace: str | None = None  # the commit's Trace-Id trailer: the operation's trace continues here

    @property
    def key(self) -> str:
        return service_key(self.tenant, self.service_id)


@dataclass(frozen=True)
class Record:
    """What the agent did for a service's latest operation, and whether Kafka has its report.

    ``provisioned``: something of the service may exist on a server (deprovision on removal).
    ``observed_at``: ISO 8601 UTC, kept so that a re-sent report is the same report."""

    path: str
    tenant: str
    service_id: str
    name: str
    engine: str
    action: Action
    operation_id: str
    correlation_id: str | None
    commit: str
    phase: Phase
    observed_at: str
    endpoint: str | None = None
    reason: str | None = None
    provisioned: bool = False
    reported: bool = False
    reportable: bool = True
    # The trace its report continues (a W3C traceparent): the agent's span that applied or removed
    # it, else the commit's Trace-Id trailer; None without tracing.
    trace: str | None = None

    @property
    def key(self) -> str:
        return service_key(self.tenant, self.service_id)

    @property
    def report_id(self) -> str:
        return report_id(self.operation_id, self.phase)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# -- steps -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Apply:
    desired: Desired
    previous: Record | None


@dataclass(frozen=True)
class Remove:
    record: Record


@dataclass(frozen=True)
class Resend:
    record: Record


@dataclass(frozen=True)
class Forget:
    record: Record


Step = Apply | Remove | Resend | Forget


def report_id(operation_id: str, phase: str) -> str:
    """The id of the one report of ``phase`` for ``operation_id``."""
    return str(uuid.uuid5(REPORT_NAMESPACE, f"{operation_id}/{phase}"))


def refusal(engine: str, pop: str, offered: tuple[str, ...]) -> str | None:
    """Why ``engine`` cannot run in this PoP, or None when it can."""
    if engine in offered:
        return None
    choices = ", ".join(offered)
    if not engine:
        return f"the ServiceClaim names no engine; PoP {pop} offers {choices}"
    what = f'engine "{engine}" has no local server' if engine in ENGINES else f'engine "{engine}" is unknown'
    return (f"{what}: PoP {pop} offers {choices}; choose one of those engines or place the service in a "
            f"Kubernetes PoP ({', '.join(KUBERNETES_POPS)})")


def desired_services(claims: Mapping[str, Claim | str], history: History, pop: str,
                     offered: tuple[str, ...], path_tenants: Mapping[str, str]
                     ) -> tuple[dict[str, Desired], set[str], list[tuple[str, str]]]:
    """The desired services from the PoP's claim files at the tip.

    ``claims``: path → parsed Claim, or the reason it could not be read. ``path_tenants``: path →
    the tenant folder it sits in. Returns (desired by key, unreadable paths, problems as
    (path, message) for files that cannot be acted on at all)."""
    desired: dict[str, Desired] = {}
    unreadable: set[str] = set()
    problems: list[tuple[str, str]] = []
    for path in sorted(claims):
        claim = claims[path]
        commit = history.last.get(path)
        if isinstance(claim, str) or commit is None:
            unreadable.add(path)
            problems.append((path, claim if isinstance(claim, str) else "no commit touches this file"))
            continue
        if claim.key in desired:
            unreadable.add(path)
            problems.append((path, f"service {claim.service_id} is also claimed by {desired[claim.key].path}"))
            continue
        problem = None
        if claim.tenant != path_tenants.get(path):
            problem = (f"the ServiceClaim names tenant {claim.tenant!r} but sits in the folder of tenant "
                       f"{path_tenants.get(path)!r}")
        elif claim.pop != pop:
            problem = f"the ServiceClaim is placed in PoP {claim.pop!r} but committed to PoP {pop!r}'s folder"
        else:
            problem = refusal(claim.engine, pop, offered)
        desired[claim.key] = Desired(
            path=path, tenant=claim.tenant, service_id=claim.service_id, name=claim.name, engine=claim.engine,
            operation_id=commit.operation_id or f"commit:{commit.sha}", correlation_id=commit.correlation_id,
            commit=commit.sha, reportable=commit.operation_id is not None, problem=problem, restore=claim.restore,
            storage_bytes=claim.storage_bytes, trace=commit.trace)
    return desired, unreadable, problems


def plan(desired: Mapping[str, Desired], records: Mapping[str, Record],
         unreadable: frozenset[str] | set[str] = frozenset()) -> list[Step]:
    """The steps that make ``records`` match ``desired``: removals first, then applies, then
    re-sends and forgets, each in key order."""
    removes: list[Step] = []
    applies: list[Step] = []
    rest: list[Step] = []
    for key in sorted(records):
        record = records[key]
        if key in desired:
            continue
        if record.action == "delete":
            rest.append(Forget(record) if record.reported else Resend(record))
        elif record.path not in unreadable:
            removes.append(Remove(record))
    for key in sorted(desired):
        want, record = desired[key], records.get(key)
        if record is None or record.action != "apply" or record.operation_id != want.operation_id:
            applies.append(Apply(want, record))
        elif not record.reported:
            rest.append(Resend(record))
    return removes + applies + rest


# -- outcomes ----------------------------------------------------------------------------------
def _applied(d: Desired, phase: Phase, now: datetime, **kw: Any) -> Record:
    return Record(path=d.path, tenant=d.tenant, service_id=d.service_id, name=d.name, engine=d.engine,
                  action="apply", operation_id=d.operation_id, correlation_id=d.correlation_id, commit=d.commit,
                  phase=phase, observed_at=now.isoformat(), reported=not d.reportable, reportable=d.reportable,
                  trace=d.trace, **kw)


def ready(d: Desired, endpoint: str, now: datetime) -> Record:
    return _applied(d, "Ready", now, endpoint=endpoint, provisioned=True)


def failed(d: Desired, reason: str, now: datetime, *, provisioned: bool) -> Record:
    return _applied(d, "Failed", now, reason=reason, provisioned=provisioned)


def removal(record: Record, history: History, tip: str) -> CommitRef:
    """The commit that removed ``record``'s service from the repository: the newest deletion of
    its file, else (the file now holds another service) the newest commit touching it, else the tip."""
    return (history.deleted.get(record.path) or history.last.get(record.path)
            or CommitRef(tip, None, None, "D"))


def deleted(record: Record, commit: CommitRef, now: datetime) -> Record:
    return _removed(record, commit, "Deleted", now, None)


def delete_failed(record: Record, commit: CommitRef, reason: str, now: datetime) -> Record:
    return _removed(record, commit, "Failed", now, reason)


def _removed(record: Record, commit: CommitRef, phase: Phase, now: datetime, reason: str | None) -> Record:
    reportable = commit.operation_id is not None
    return replace(record, action="delete", operation_id=commit.operation_id or f"commit:{commit.sha}",
                   correlation_id=commit.correlation_id, commit=commit.sha, phase=phase,
                   observed_at=now.isoformat(), endpoint=None, reason=reason,
                   provisioned=phase == "Failed" and record.provisioned,
                   reported=not reportable, reportable=reportable, trace=commit.trace)


def report(record: Record, pop: str, credentials: str | None = None) -> dict[str, Any]:
    """The PopStatusReport (``schemas/pop_status.avsc``) that ``record`` stands for."""
    return {
        "report_id": record.report_id, "pop": pop, "tenant_id": record.tenant, "service_id": record.service_id,
        "operation_id": record.operation_id, "phase": record.phase, "endpoint": record.endpoint,
        "reason": record.reason, "credentials": credentials if record.phase == "Ready" else None,
        "observed_at": datetime.fromisoformat(record.observed_at),
    }


def applied_per_engine(records: Mapping[str, Record]) -> dict[str, int]:
    """How many services are provisioned and Ready, per engine."""
    counts: dict[str, int] = {}
    for r in records.values():
        if r.action == "apply" and r.phase == "Ready":
            counts[r.engine] = counts.get(r.engine, 0) + 1
    return counts
