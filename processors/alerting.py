"""The alert rules of the alerts processor (`processors.alerts`): when a service's samples, its
lifecycle events or its organization's quota raise an alert, and when they resolve it.

Pure: values in, values and alerts out — no Kafka, no clock (times come in the samples and the
events), no random ids. What a rule remembers is a small value (`ServiceWatch`, `QuotaWatch`) the
processor keeps in its Faust tables (JSON, changelogged) or folds from the event log.

**Episodes.** A condition that begins opens an *episode*: one alert, `raised`, whose id is
derived from (tenant, service, kind, the episode's start) — `alert_id`. It ends with the same
alert `resolved`. While it lasts nothing more is published: one raise and one resolve per episode.
A later episode of the same kind has another start, so another id.

- `storage_high` (warning): a sample's storage at or above `storage.raise_at` (80 %) of the
  service's storage limit opens it (its start: that sample's time); a sample below
  `storage.resolve_below` (75 %) ends it — the gap between the two is the hysteresis, so a service
  hovering at the threshold does not raise and resolve over and over.
- `connections_high` (warning): `connections.samples` (2) samples in a row at or above
  `connections.raise_at` (90 %) of the service's most connections open it (its start: the first of
  them); a sample below `connections.resolve_below` (80 %) ends it.
- `operation_failed` (critical): `ServiceFailed` opens it (its start: the event's time); later
  failures join it; the service's next `ServiceReady` or its deletion ends it. Failed backups are
  the scheduler's to alert (`backup_failed`): this processor leaves them alone.
- `quota_high` (warning, about the organization: no service): the organization's usage — services,
  and vCPU, memory and storage in total and per engine or PoP that has a limit of its own, as
  `decide` counts them (`events.state.Usage`) — at or above `quota.raise_at` (90 %) of its quota
  (the platform default until one is set) opens it, at the event that brought it there; below
  `quota.resolve_below` (85 %) ends it.

A deleted service ends its open episodes. Samples of a service are judged in time order: a sample
at or before the last one judged (a re-delivery after a restart) changes nothing, and so does an
event at or before the last one seen of its service (`ServiceWatch.seq`).

**Publishing once.** Episodes of one subject (a service's kind, an organization's quota) follow
each other in time, so what was published of them is one mark: the start of the latest episode
published and whether its resolution was (`Mark`). An alert is published only past the mark, so
a processor that folds the log again after a restart publishes nothing twice.

May import: the standard library, `events`, `commands.catalog` and the scheduler's `Alert` record —
never Kafka, Faust or any other client (an import-linter contract).
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from commands.catalog import DEFAULT_QUOTA
from events import (
    Envelope,
    Quota,
    ResourceLimit,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
)
from events.state import TenantState, Usage
from processors.sagas.schedule import Alert

SOURCE = "alerts"  # the alerts' `source`
ALERT_NAMESPACE = uuid.UUID("6a1d8e4f-3c27-4b95-8e0a-2f7c9d5b1e83")

Kind = Literal["storage_high", "connections_high", "operation_failed", "quota_high"]
SEVERITY: dict[str, str] = {"storage_high": "warning", "connections_high": "warning",
                            "operation_failed": "critical", "quota_high": "warning"}
SAMPLE_KINDS: tuple[Kind, ...] = ("storage_high", "connections_high")


def moment(at: datetime) -> str:
    """A time as ids and marks carry it: RFC 3339, UTC, milliseconds."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def alert_id(tenant_id: str, service_id: str | None, kind: str, started_at: datetime) -> str:
    """The id of the episode of `kind` that began at `started_at` (service None: the organization)."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{tenant_id}/{service_id or '-'}/{kind}/{moment(started_at)}"))


# -- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """Raise at or above `raise_at` (after `samples` samples in a row), resolve below `resolve_below`."""

    raise_at: float
    resolve_below: float
    samples: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.resolve_below <= self.raise_at:
            raise ValueError(f"resolve_below ({self.resolve_below}) must be positive and at most "
                             f"raise_at ({self.raise_at})")
        if self.samples < 1:
            raise ValueError("samples must be at least 1")


@dataclass(frozen=True)
class Config:
    storage: Thresholds = Thresholds(0.80, 0.75)
    connections: Thresholds = Thresholds(0.90, 0.80, samples=2)
    quota: Thresholds = Thresholds(0.90, 0.85)

    def of(self, kind: str) -> Thresholds:
        return {"storage_high": self.storage, "connections_high": self.connections, "quota_high": self.quota}[kind]


# -- state --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Episode:
    """One alert: its kind and id, when it began, what it says; `resolved_at` once it ended."""

    kind: str
    alert_id: str
    started_at: datetime
    message: str
    resolved_at: datetime | None = None
    resolution: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "alert_id": self.alert_id, "started_at": moment(self.started_at),
                "message": self.message, "resolved_at": moment(self.resolved_at) if self.resolved_at else None,
                "resolution": self.resolution}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Episode | None:
        if not d:
            return None
        return cls(d["kind"], d["alert_id"], parse_moment(d["started_at"]), d["message"],
                   parse_moment(d["resolved_at"]) if d.get("resolved_at") else None, d.get("resolution"))


def as_alert(tenant_id: str, service_id: str | None, e: Episode) -> Alert:
    message = e.message if e.resolved_at is None else f"{e.message}; resolved: {e.resolution}"
    return Alert(e.alert_id, tenant_id, service_id, e.kind, SEVERITY[e.kind],
                 "raised" if e.resolved_at is None else "resolved", message, e.started_at, e.resolved_at, SOURCE)


@dataclass(frozen=True)
class Run:
    """Samples in a row over a raise threshold that did not raise yet: since when, how many."""

    since: datetime
    samples: int


@dataclass(frozen=True)
class ServiceWatch:
    """What the rules remember of one service: its name, the last sample judged, the open episodes
    by kind, the runs towards one, the last lifecycle event seen and whether it was deleted."""

    tenant_id: str
    service_id: str
    name: str | None = None
    last_sampled_at: datetime | None = None
    open: dict[str, Episode] = field(default_factory=dict)  # kind -> its open episode
    runs: dict[str, Run] = field(default_factory=dict)  # kind -> samples over its threshold so far
    seq: int = 0  # sequence of the last lifecycle event of the service seen
    deleted_at: datetime | None = None

    @property
    def label(self) -> str:
        return f'service "{self.name}" ({self.service_id})' if self.name else f"service {self.service_id}"

    def to_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "service_id": self.service_id, "name": self.name,
                "last_sampled_at": moment(self.last_sampled_at) if self.last_sampled_at else None,
                "open": {k: e.to_json() for k, e in sorted(self.open.items())},
                "runs": {k: {"since": moment(r.since), "samples": r.samples} for k, r in sorted(self.runs.items())},
                "seq": self.seq, "deleted_at": moment(self.deleted_at) if self.deleted_at else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServiceWatch:
        opened = {k: Episode.from_json(e) for k, e in (d.get("open") or {}).items()}
        return cls(d["tenant_id"], d["service_id"], d.get("name"),
                   parse_moment(d["last_sampled_at"]) if d.get("last_sampled_at") else None,
                   {k: e for k, e in opened.items() if e is not None},
                   {k: Run(parse_moment(r["since"]), int(r["samples"])) for k, r in (d.get("runs") or {}).items()},
                   int(d.get("seq") or 0), parse_moment(d["deleted_at"]) if d.get("deleted_at") else None)


Reaction = tuple[ServiceWatch, list[Alert]]


# -- samples ------------------------------------------------------------------------------------
def ratio(used: float | None, limit: float | None) -> float | None:
    """used / limit, or None when either is unknown or the limit is not positive."""
    if used is None or limit is None or limit <= 0:
        return None
    return used / limit


def on_sample(watch: ServiceWatch | None, sample: dict[str, Any], config: Config = Config()) -> Reaction:
    """Judge one `ServiceMetrics` sample (a record of `schemas/service_metrics.avsc`)."""
    at: datetime = sample["sampled_at"]
    watch = watch or ServiceWatch(sample["tenant_id"], sample["service_id"])
    if watch.deleted_at is not None or (watch.last_sampled_at is not None and at <= watch.last_sampled_at):
        return watch, []
    watch = replace(watch, last_sampled_at=at)
    alerts: list[Alert] = []
    used, limit = sample["storage_bytes"], sample.get("storage_limit_bytes")
    watch, raised = _judge(watch, "storage_high", ratio(used, limit), at, config,
                           lambda r: f"{watch.label} uses {r:.0%} of its storage: {size(used)} of {size(limit)}",
                           lambda r: f"{r:.0%} of its storage ({size(used)}) at {moment(at)}")
    alerts += raised
    conns, most = sample["connections"], sample.get("max_connections")
    watch, raised = _judge(watch, "connections_high", ratio(conns, most), at, config,
                           lambda r: f"{watch.label} holds {conns} of its {most} connections ({r:.0%})",
                           lambda r: f"{conns} of {most} connections ({r:.0%}) at {moment(at)}")
    return watch, alerts + raised


def _judge(watch: ServiceWatch, kind: str, level: float | None, at: datetime, config: Config,
           raised: Any, resolved: Any) -> Reaction:
    """One rule over one sample: open, keep, or end the episode of `kind`."""
    if level is None:
        return watch, []
    limits = config.of(kind)
    episode = watch.open.get(kind)
    if episode is not None:
        if level >= limits.resolve_below:
            return watch, []
        done = replace(episode, resolved_at=at, resolution=resolved(level))
        opened = {k: e for k, e in watch.open.items() if k != kind}
        return replace(watch, open=opened), [as_alert(watch.tenant_id, watch.service_id, done)]
    if level < limits.raise_at:
        if kind in watch.runs:
            return replace(watch, runs={k: r for k, r in watch.runs.items() if k != kind}), []
        return watch, []
    run = watch.runs.get(kind)
    run = Run(run.since, run.samples + 1) if run is not None else Run(at, 1)
    if run.samples < limits.samples:
        return replace(watch, runs={**watch.runs, kind: run}), []
    episode = Episode(kind, alert_id(watch.tenant_id, watch.service_id, kind, run.since), run.since, raised(level))
    return (replace(watch, open={**watch.open, kind: episode}, runs={k: r for k, r in watch.runs.items() if k != kind}),
            [as_alert(watch.tenant_id, watch.service_id, episode)])


def size(n: float | None) -> str:
    """Bytes for people: 870 MiB, 1 GiB, 12 KiB."""
    if n is None:
        return "an unknown size"
    value, unit = float(n), "bytes"
    for unit_name in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, unit_name
    if unit == "bytes":
        return f"{int(value)} bytes"
    return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"


# -- lifecycle facts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    """What an event of `dbaas.events` says about a service, for its watch: it became Ready,
    failed (why, in which operation), or was deleted; with the service's name as the event log
    has it. (`requested`, the name alone, was forwarded by earlier versions: a watch still takes
    one found on the topic.)"""

    tenant_id: str
    service_id: str
    seq: int  # the event's sequence in the service's aggregate
    what: Literal["requested", "ready", "failed", "deleted"]
    at: datetime
    name: str | None = None
    operation_id: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "service_id": self.service_id, "seq": self.seq, "what": self.what,
                "at": moment(self.at), "name": self.name, "operation_id": self.operation_id, "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fact:
        return cls(d["tenant_id"], d["service_id"], int(d["seq"]), d["what"], parse_moment(d["at"]), d.get("name"),
                   d.get("operation_id"), d.get("reason"))


_OUTCOMES: dict[type, Literal["ready", "failed", "deleted"]] = {
    ServiceReady: "ready", ServiceFailed: "failed", ServiceDeleted: "deleted"}


def fact_of(env: Envelope, state: TenantState | None = None) -> Fact | None:
    """The fact an event states about its service, if any, naming the service as `state` (the
    organization's fold after the event) has it. A request states none: the name it brings is the
    fold's, and a watch needs nothing before the service's first sample or outcome."""
    e = env.payload
    what = _OUTCOMES.get(type(e))
    if what is None:
        return None
    service = state.services.get(e.service_id) if state is not None else None
    return Fact(env.tenant_id, e.service_id, env.sequence, what, env.occurred_at,
                service.name if service is not None else None, operation_id=e.operation_id,
                reason=e.reason if isinstance(e, ServiceFailed) else None)


def on_fact(watch: ServiceWatch | None, fact: Fact) -> Reaction:
    """Apply a lifecycle fact to a service's watch: `operation_failed` episodes, names, deletion."""
    watch = watch or ServiceWatch(fact.tenant_id, fact.service_id)
    if fact.seq <= watch.seq:
        return watch, []
    watch = replace(watch, seq=fact.seq, name=fact.name or watch.name)
    if fact.what == "failed":
        if "operation_failed" in watch.open:
            return watch, []  # a later failure joins the open episode
        message = f"an operation on {watch.label} failed (operation {fact.operation_id}): {fact.reason}"
        episode = Episode("operation_failed", alert_id(watch.tenant_id, watch.service_id, "operation_failed", fact.at),
                          fact.at, message)
        return replace(watch, open={**watch.open, "operation_failed": episode}), [
            as_alert(watch.tenant_id, watch.service_id, episode)]
    if fact.what == "ready":
        return _end(watch, ("operation_failed",), fact.at, f"the service is Ready again (operation {fact.operation_id})")
    if fact.what == "deleted":
        watch, alerts = _end(watch, tuple(watch.open), fact.at, "the service was deleted")
        return replace(watch, deleted_at=fact.at, runs={}), alerts
    return watch, []


def _end(watch: ServiceWatch, kinds: tuple[str, ...], at: datetime, why: str) -> Reaction:
    alerts = []
    still = dict(watch.open)
    for kind in sorted(kinds):
        episode = still.pop(kind, None)
        if episode is not None:
            alerts.append(as_alert(watch.tenant_id, watch.service_id,
                                   replace(episode, resolved_at=at, resolution=f"{why} at {moment(at)}")))
    return replace(watch, open=still), alerts


# -- quota ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuotaWatch:
    """An organization's open `quota_high` episode, folded from the event log with its state."""

    episode: Episode | None = None


def quota_usage(quota: Quota | None, usage: Usage) -> tuple[float, str]:
    """The highest share of its quota an organization uses, and what it is (for people): over the
    number of services, and cpu, memory and storage in total and per engine or PoP with a limit."""
    quota = quota or DEFAULT_QUOTA
    # Every event of an organization is checked: the levels first, the words for the worst only.
    best, what = 0.0, None
    level = _level(float(usage.services), float(quota.max_services))
    if level > best:
        best, what = level, lambda: f"{usage.services} of {quota.max_services} services"
    scopes: list[tuple[str, ResourceLimit, tuple[float, float, float]]] = [("in total", quota.total, usage.total)]
    scopes += [(f"for engine {name}", limit, usage.of_engine(name)) for name, limit in sorted(quota.engines.items())]
    scopes += [(f"in PoP {name}", limit, usage.of_pop(name)) for name, limit in sorted(quota.pops.items())]
    for scope, limit, used in scopes:
        for i, (attr, unit) in enumerate(_RESOURCES):
            cap = float(getattr(limit, attr))
            level = _level(used[i], cap)
            if level > best:
                best, what = level, (lambda u=used[i], c=cap, unit=unit, scope=scope:
                                     f"{_number(u)} of {_number(c)} {unit} {scope}")
    return best, (what() if what is not None else "nothing")


_RESOURCES = (("cpu", "vCPU"), ("memory_gb", "GiB of memory"), ("storage_gb", "GiB of storage"))


def _level(used: float, cap: float) -> float:
    if cap <= 0:
        return math.inf if used > 0 else 0.0
    return used / cap


def _number(x: float) -> str:
    return f"{x:g}"


def on_tenant(watch: QuotaWatch, state: TenantState, at: datetime, config: Config = Config()
              ) -> tuple[QuotaWatch, list[Alert]]:
    """Judge an organization's quota usage after an event (at `at`) changed its state."""
    level, what = quota_usage(state.quota, state.usage)
    limits = config.quota
    tenant = state.tenant_id
    shown = "over 100%" if math.isinf(level) else f"{level:.0%}"
    if watch.episode is not None:
        if level >= limits.resolve_below:
            return watch, []
        usage = f"{shown} of its quota ({what})" if level > 0 else "nothing of its quota used"
        done = replace(watch.episode, resolved_at=at, resolution=f"{usage} at {moment(at)}")
        return QuotaWatch(None), [as_alert(tenant, None, done)]
    if level < limits.raise_at:
        return watch, []
    episode = Episode("quota_high", alert_id(tenant, None, "quota_high", at), at,
                      f'organization "{tenant}" uses {shown} of its quota: {what}')
    return QuotaWatch(episode), [as_alert(tenant, None, episode)]


# -- publishing once ------------------------------------------------------------------------------
Mark = tuple[str, int]  # (start of the latest episode published, 1 if its resolution was too, else 0)


def mark_of(alert: Alert) -> Mark:
    return (moment(alert.raised_at), 1 if alert.state == "resolved" else 0)


def past(mark: Mark | list | None, alert: Alert) -> bool:
    """Whether `alert` comes after what was published of its subject (`mark`): publish it."""
    if not mark:
        return True
    start, resolved = mark[0], int(mark[1])
    theirs = mark_of(alert)
    return (parse_moment(theirs[0]), theirs[1]) > (parse_moment(start), resolved)


def subject(alert: Alert) -> str:
    """What the marks are kept per: a service's kind, or the organization's quota."""
    return f"{alert.service_id or '-'}/{alert.kind}"
