"""The backup scheduler's policy: which scheduled backups to start, which backups retention
deletes, and which schedule slots were missed.

`react(state, message) -> (state, effects)` decides; `processors.sagas.schedule_runner` acts
(publishes the commands, the alerts, counts). Messages are events of `dbaas.events` (replayed at
start: `EventReplayed`, or followed: `EventArrived`) and ticks of the clock (`Tick`).

**Slots.** A service's backup policy (`BackupPolicySet`: a five-field cron in UTC) defines slots:
the instants of its schedule from the moment the policy was set (never before it, and never before
the service first became Ready). On a tick, for each live service, the latest slot at or before
now is due: unless a backup was already requested for it (or a later slot), the policy sends
`BackupService(service_id, backup_id, slot)` with
`backup_id = uuid5(BACKUP_NAMESPACE, f"{service_id}/{slot}")` and a command id derived the same
way, so the command processor judges each slot once however many times, and by however many
schedulers, it is sent. Only the latest due slot is sent: after an outage one backup catches up,
and the slots before it are judged like any other (missed, unless covered). A slot is sent while
no backup of the service is running (the processor refuses a second one), and again after
`resend_after` until its `BackupRequested` (or a rejection) is seen.

**Missed slots.** A slot is *kept* when a backup of the service taken at or after it completes by
its deadline (`missed_after` after the slot, and — `wait_for_next_slot` — never before the next
slot: max(period, 10 min) by default). Otherwise it is *missed*: at its deadline (not backed up,
or backed up late), or at once when the backup requested for it fails. Slots are judged in time
order from events and the clock only, so a replay judges exactly as a scheduler that never
stopped. The first missed slot opens an *incident* — an alert raised once, its id derived from
(tenant, service, kind, slot) — which later missed slots join; the incident is resolved when a
backup of the service taken at or after its last missed slot completes (or the service is
deleted, or its schedule removed). After a restart the open incidents (and each service's last
resolved one, within `announce_resolved_within`) are published again, with the same ids.

**Retention.** For every service, live or deleted, with a policy: completed backups beyond
`retain_count` (newest kept) or taken more than `retain_days` ago are deleted with
`DeleteBackup(backup_id)`, command id derived from the backup id (and the number of failed
deletions of it, so a failed deletion is tried again with a new id).

The state is an immutable value folded from events; only `sent` (commands sent, not yet seen
judged) lives in memory, and re-sending after a restart is harmless.

Pure: no I/O, no clock, no random ids; time comes in the messages.
May import: the standard library, `croniter`, `events`, `commands.records` — never Kafka, git,
subprocess, HTTP or SQL clients (an import-linter contract).
"""
from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Literal

from croniter import croniter

from commands.records import Actor, BackupService, CommandEnvelope, DeleteBackup
from events import (
    BackupCompleted,
    BackupDeleted,
    BackupDeletionRequested,
    BackupFailed,
    BackupPolicySet,
    BackupRequested,
    CdcConnectorFailed,
    CdcConnectorRegistered,
    CdcDisabled,
    CommandRejected,
    Envelope,
    ServiceDeleted,
    ServiceReady,
    ServiceRequested,
)
from events.pmap import PMap

SCHEDULER_ACTOR = Actor("system:scheduler", ("system",))
SOURCE = "scheduler"  # the alerts' `source`
BACKUP_NAMESPACE = uuid.UUID("5d0f3c8e-2b61-4f7a-9a3e-7c1d54b2e9a6")  # a slot's backup id
COMMAND_NAMESPACE = uuid.UUID("b8e2a7d4-61c3-4e0f-8d95-3f4a2c6e1b07")  # the scheduler's command ids
ALERT_NAMESPACE = uuid.UUID("0e7c4b19-5a2d-4c86-b3f1-9d8e6a2f5c43")  # alert ids

# Services whose status lets a backup start (decide refuses the others).
BACKUP_STATUSES = frozenset({"Ready", "Scaling"})

MissReason = Literal["not_taken", "late", "failed"]
AlertKind = Literal["backup_slot_missed", "backup_failed", "cdc_connector_failed"]
SEVERITY: dict[str, str] = {"backup_slot_missed": "warning", "backup_failed": "critical",
                            "cdc_connector_failed": "critical"}


# -- ids ---------------------------------------------------------------------------------------
def slot_text(slot: datetime) -> str:
    """A slot as the commands and events carry it: RFC 3339, UTC, whole seconds (`…Z`)."""
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_slot(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def backup_id_for(service_id: str, slot: str) -> str:
    """The backup of `service_id` for slot `slot` (RFC 3339): the same for every scheduler."""
    return str(uuid.uuid5(BACKUP_NAMESPACE, f"{service_id}/{slot}"))


def backup_command_id(service_id: str, slot: str) -> str:
    return str(uuid.uuid5(COMMAND_NAMESPACE, f"{service_id}/{slot}"))


def expire_command_id(backup_id: str, attempt: int = 0) -> str:
    """The deletion of an expired backup; `attempt`: how many deletions of it failed before."""
    return str(uuid.uuid5(COMMAND_NAMESPACE, f"{backup_id}/expire" + (f"/{attempt}" if attempt else "")))


def alert_id_for(tenant_id: str, service_id: str, kind: str, slot: str) -> str:
    """An incident's alert: named by the first slot it missed."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{tenant_id}/{service_id}/{kind}/{slot}"))


# -- the schedule ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _parsed(schedule: str) -> croniter:
    return croniter(schedule, datetime(2000, 1, 1, tzinfo=UTC))


def _cron(schedule: str, t: datetime) -> croniter:
    """An iterator over `schedule`'s slots from `t`: a copy of the expression parsed once (parsing
    costs several times a step)."""
    it = copy.copy(_parsed(schedule))
    it.set_current(t, force=True)
    return it


def at_or_before(schedule: str, t: datetime) -> datetime:
    """The latest slot of `schedule` at or before `t`."""
    return _cron(schedule, t.replace(microsecond=0) + timedelta(seconds=1)).get_prev(datetime)


def at_or_after(schedule: str, t: datetime) -> datetime:
    """The first slot of `schedule` at or after `t`."""
    before = at_or_before(schedule, t)
    return before if before == t else after(schedule, t)


def after(schedule: str, t: datetime) -> datetime:
    """The first slot of `schedule` strictly after `t`."""
    return _cron(schedule, t.replace(microsecond=0)).get_next(datetime)


def slots(schedule: str, first: datetime) -> Iterable[datetime]:
    """`first` (a slot) and every slot after it."""
    it = _cron(schedule, first)
    yield first
    while True:
        yield it.get_next(datetime)


# -- state -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    missed_after: timedelta = timedelta(minutes=10)  # the least time a slot's backup has to complete
    wait_for_next_slot: bool = True  # the deadline is never before the next slot (max(period, missed_after))
    resend_after: timedelta = timedelta(seconds=60)  # a command not yet seen judged is sent again after
    announce_resolved_within: timedelta = timedelta(days=30)  # after a restart, resolved alerts this recent
    max_walk: int = 10_000  # slots judged per service and tick (a long outage: the rest on the next ticks)

    def deadline(self, slot: datetime, next_slot: datetime) -> datetime:
        due = slot + self.missed_after
        return max(due, next_slot) if self.wait_for_next_slot else due


@dataclass(frozen=True)
class Policy:
    schedule: str | None  # None: no scheduled backups (retention still applies)
    retain_count: int  # 0: no limit by count
    retain_days: int  # 0: no limit by age
    set_at: datetime


@dataclass(frozen=True)
class Backup:
    backup_id: str
    slot: datetime | None  # None: on demand
    status: Literal["running", "completed", "deleting"]  # failed and deleted ones are forgotten
    taken_at: datetime | None = None
    failed_deletions: int = 0


@dataclass(frozen=True)
class Incident:
    """Missed slots of a service since its last backup: one alert, raised when the first was missed."""

    alert_id: str
    kind: AlertKind
    first_slot: datetime
    last_slot: datetime
    missed: int
    raised_at: datetime
    message: str
    resolved_at: datetime | None = None
    resolution: str | None = None


@dataclass(frozen=True)
class ServiceSchedule:
    tenant_id: str
    service_id: str
    name: str
    live: bool = True
    status: str | None = None  # as the last service event stamped it
    ready_at: datetime | None = None  # the first Ready: no slot before it
    policy: Policy | None = None
    backups: Mapping[str, Backup] = field(default_factory=lambda: MappingProxyType({}))
    latest_requested: datetime | None = None  # the latest slot a backup was requested for
    latest_taken: datetime | None = None  # the newest completed backup's taken_at
    requested: frozenset[datetime] = frozenset()  # requested slots not judged yet
    failed: frozenset[datetime] = frozenset()  # slots not judged yet whose backup failed (missed already)
    judged: datetime | None = None  # every slot up to here is judged
    clock: datetime | None = None  # slots are judged up to this time
    due_at: datetime | None = None  # no slot's deadline comes before this (None: not known)
    next_slots: tuple[datetime, datetime] | None = None  # the first unjudged slot and the next, at the last walk
    incident: Incident | None = None
    last_resolved: Incident | None = None
    wake_at: datetime | None = None  # nothing to do before (None: look at the next tick)

    @property
    def schedule(self) -> str | None:
        """The schedule slots come from: a live service that ran, with a policy that has one."""
        if not self.live or self.ready_at is None or self.policy is None:
            return None
        return self.policy.schedule

    @property
    def start(self) -> datetime:
        assert self.policy is not None and self.ready_at is not None
        return max(self.policy.set_at, self.ready_at)

    @property
    def running(self) -> bool:
        return any(b.status == "running" for b in self.backups.values())


@dataclass(frozen=True)
class SchedulerState:
    config: Config = field(default_factory=Config)
    # tenant -> service id -> its schedule (persistent maps: an event shares what it did not change)
    tenants: PMap[str, PMap[str, ServiceSchedule]] = field(default_factory=PMap)
    rejected: frozenset[str] = frozenset()  # the scheduler's command ids the processor rejected
    sent: Mapping[str, datetime] = field(default_factory=lambda: MappingProxyType({}))  # id -> last sent
    announced: bool = False  # open alerts were published again after the start
    # (tenant, service) -> the open alert of its failed CDC connector
    cdc_failures: Mapping[tuple[str, str], Alert] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def start(cls, config: Config | None = None) -> SchedulerState:
        return cls(config or Config())

    def services(self) -> Iterable[ServiceSchedule]:
        return (svc for services in self.tenants.values() for svc in services.values())

    def service(self, tenant_id: str, service_id: str) -> ServiceSchedule | None:
        return self.tenants.get(tenant_id, {}).get(service_id)


def scheduled(state: SchedulerState) -> int:
    """How many services have backups scheduled now."""
    return sum(1 for s in state.services() if s.live and s.policy is not None and s.policy.schedule)


# -- messages ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventArrived:
    env: Envelope
    now: datetime


@dataclass(frozen=True)
class EventReplayed:
    """An event read by the start-up replay of the log: it rebuilds the state and asks for nothing."""

    env: Envelope


@dataclass(frozen=True)
class Tick:
    now: datetime


Message = EventArrived | EventReplayed | Tick


# -- effects -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Publish a signed command on `dbaas.commands`. `purpose`: backup | expire; `first`: not sent
    by this scheduler before (a resend is not counted again)."""

    command: CommandEnvelope
    purpose: Literal["backup", "expire"]
    first: bool = True


@dataclass(frozen=True)
class Alert:
    """Publish an alert on `dbaas.alerts.{tenant}` (key: the service id); the same alert id is the
    same incident, `state` raised or resolved."""

    alert_id: str
    tenant_id: str
    service_id: str | None
    kind: str
    severity: str
    state: Literal["raised", "resolved"]
    message: str
    raised_at: datetime
    resolved_at: datetime | None = None
    source: str = SOURCE

    def to_avro(self) -> dict:
        return {"alert_id": self.alert_id, "tenant_id": self.tenant_id, "service_id": self.service_id,
                "kind": self.kind, "severity": self.severity, "state": self.state, "message": self.message,
                "raised_at": self.raised_at, "resolved_at": self.resolved_at, "source": self.source}


@dataclass(frozen=True)
class Missed:
    """`slots` slots of a service were judged missed, for `reason`: not_taken (no backup was taken
    for it in time), late (its backup did not complete in time), failed (its backup failed)."""

    tenant_id: str
    service_id: str
    slots: int
    reason: MissReason


Effect = Send | Alert | Missed
Reaction = tuple[SchedulerState, list[Effect]]


# -- the policy --------------------------------------------------------------------------------
def react(state: SchedulerState, message: Message) -> Reaction:
    match message:
        case EventReplayed(env=env):
            state, _ = _event(state, env)
            return state, []
        case EventArrived(env=env):
            return _event(state, env)
        case Tick(now=now):
            return _tick(state, now)
    raise TypeError(f"not a message of the backup scheduler: {message!r}")


def _cdc(state: SchedulerState, env: Envelope) -> Reaction:
    """A service's CDC connector failed at its PoP (it stayed failed through the PoP's restarts,
    or never ran): a critical alert, resolved when it runs again or is disabled."""
    e = env.payload
    key = (env.tenant_id, e.service_id)
    open_alert = state.cdc_failures.get(key)
    if isinstance(e, CdcConnectorFailed):
        if e.step != "pop-report" or open_alert is not None:
            return state, []
        alert_id = str(uuid.uuid5(ALERT_NAMESPACE, f"{env.tenant_id}/{e.service_id}/cdc/{env.event_id}"))
        alert = Alert(alert_id, env.tenant_id, e.service_id, "cdc_connector_failed", SEVERITY["cdc_connector_failed"],
                      "raised", f"the change-data-capture connector {e.connector} failed: {e.reason}",
                      env.occurred_at)
        return replace(state, cdc_failures=MappingProxyType({**state.cdc_failures, key: alert})), [alert]
    if open_alert is None:
        return state, []
    why = "it runs again" if isinstance(e, CdcConnectorRegistered) else "CDC was disabled"
    resolved = replace(open_alert, state="resolved", message=f"{open_alert.message} — resolved: {why}",
                       resolved_at=env.occurred_at)
    rest = {k: v for k, v in state.cdc_failures.items() if k != key}
    return replace(state, cdc_failures=MappingProxyType(rest)), [resolved]


def _event(state: SchedulerState, env: Envelope) -> Reaction:
    e = env.payload
    if isinstance(e, CdcConnectorFailed | CdcConnectorRegistered | CdcDisabled):
        return _cdc(state, env)
    if env.command_id in state.sent:  # judged: no need to send it again
        state = replace(state, sent=_without(state.sent, env.command_id))
    if isinstance(e, CommandRejected):
        if env.actor_subject == SCHEDULER_ACTOR.subject:
            state = replace(state, rejected=state.rejected | {env.command_id})
        return state, []
    service_id = getattr(e, "service_id", None)
    if service_id is None:
        return state, []
    if not isinstance(e, _FOLDED):  # another event of a service: only the status it stamps matters
        svc = state.service(env.tenant_id, service_id)
        status = getattr(e, "status", None)
        if svc is None or env.aggregate_type != "service" or not isinstance(status, str):
            return state, []
        return _put(state, _set(svc, status=status, wake_at=None)), []
    svc = state.service(env.tenant_id, service_id)
    if svc is None:
        svc = ServiceSchedule(env.tenant_id, service_id, getattr(e, "name", service_id))
    svc, effects = _judge(svc, env.occurred_at, state.config)  # what was due before this event
    svc, more = _fold(svc, env)
    return _put(state, _set(svc, wake_at=None)), effects + more


def _fold(svc: ServiceSchedule, env: Envelope) -> tuple[ServiceSchedule, list[Effect]]:
    e = env.payload
    at = env.occurred_at
    if isinstance(getattr(e, "status", None), str) and env.aggregate_type == "service":
        svc = _set(svc, status=e.status)
    match e:  # a completed backup only moves the next deadline later: `due_at` stays a lower bound
        case ServiceRequested():
            return _set(svc, name=e.name, live=True, due_at=None, next_slots=None), []
        case ServiceReady():
            return _set(svc, ready_at=svc.ready_at or at, due_at=None, next_slots=None), []
        case ServiceDeleted():
            svc = _set(svc, live=False, due_at=None, next_slots=None)
            return _resolve(svc, at, "the service was deleted")
        case BackupPolicySet():
            svc = _set(svc, policy=Policy(e.schedule, e.retain_count, e.retain_days, at), due_at=None,
                          next_slots=None)
            if e.schedule is None:
                return _resolve(svc, at, "scheduled backups were turned off")
            return svc, []
        case BackupRequested():
            slot = parse_slot(e.slot) if e.slot else None
            svc = _put_backup(svc, Backup(e.backup_id, slot, "running"))
            if slot is not None:
                latest = max(svc.latest_requested or slot, slot)
                svc = _set(svc, latest_requested=latest, requested=svc.requested | {slot})
            return svc, []
        case BackupCompleted():
            before = svc.backups.get(e.backup_id) or Backup(e.backup_id, None, "running")
            svc = _put_backup(svc, replace(before, status="completed", taken_at=e.taken_at))
            svc = _set(svc, latest_taken=max(svc.latest_taken or e.taken_at, e.taken_at))
            incident = svc.incident
            if incident is not None and e.taken_at >= incident.last_slot:
                return _resolve(svc, at, f"backup {e.backup_id} taken at {slot_text(e.taken_at)} completed")
            return svc, []
        case BackupFailed() if e.status == "Completed":  # a deletion failed: the backup stays
            before = svc.backups.get(e.backup_id)
            if before is None:
                return svc, []
            return _put_backup(svc, replace(before, status="completed",
                                            failed_deletions=before.failed_deletions + 1)), []
        case BackupFailed():
            before = svc.backups.get(e.backup_id)
            if before is None:
                return svc, []
            svc = _drop_backup(svc, e.backup_id)  # a failed backup holds nothing: only its slot matters
            slot = before.slot
            if slot is None:  # taken on demand: alerted too, resolved by the next completed backup
                return _missed(svc, [at], "failed", at,
                               f'the backup {e.backup_id} of service "{svc.name}" failed: {e.reason}')
            if (svc.judged is not None and slot <= svc.judged) or slot in svc.failed \
                    or (svc.latest_taken is not None and svc.latest_taken >= slot):
                return svc, []
            svc = _set(svc, failed=svc.failed | {slot})
            why = (f'the scheduled backup {e.backup_id} of service "{svc.name}" for slot {slot_text(slot)} '
                   f"failed: {e.reason}")
            svc, alerts = _missed(svc, [slot], "failed", at, why)
            return svc, [Missed(svc.tenant_id, svc.service_id, 1, "failed"), *alerts]
        case BackupDeletionRequested():
            before = svc.backups.get(e.backup_id)
            return (_put_backup(svc, replace(before, status="deleting")) if before else svc), []
        case BackupDeleted():
            return _drop_backup(svc, e.backup_id), []
    return svc, []


_FOLDED = (ServiceRequested, ServiceReady, ServiceDeleted, BackupPolicySet, BackupRequested, BackupCompleted,
           BackupFailed, BackupDeletionRequested, BackupDeleted)


# -- judging slots -----------------------------------------------------------------------------
def _judge(svc: ServiceSchedule, until: datetime, config: Config,
           limit: int | None = None) -> tuple[ServiceSchedule, list[Effect]]:
    """Judge every slot of `svc` whose deadline is at or before `until`, in slot order: kept when a
    backup taken at or after it completed by then, else missed. At most `limit` slots (a tick after
    a long outage): the rest on the next tick."""
    if svc.clock is not None and until <= svc.clock:
        return svc, []
    schedule = svc.schedule
    if schedule is None:
        return _set(svc, clock=until), []
    if svc.due_at is not None and until < svc.due_at:
        return _set(svc, clock=until), []
    judged = svc.judged
    missed: list[tuple[datetime, MissReason, datetime]] = []
    series = _unjudged(svc, schedule)
    slot, upcoming = next(series), next(series)
    done = False
    due_at = None
    for _ in range(limit if limit is not None else 2**62):
        deadline = config.deadline(slot, upcoming)
        if deadline > until:
            done, due_at = True, deadline
            break
        if slot not in svc.failed:
            missed.append((slot, "late" if slot in svc.requested else "not_taken", deadline))
        judged = slot
        slot, upcoming = upcoming, next(series)
    if judged is not None:
        svc = _set(svc, judged=judged, requested=frozenset(s for s in svc.requested if s > judged),
                      failed=frozenset(s for s in svc.failed if s > judged))
    if done:
        svc = _set(svc, clock=until, due_at=due_at, next_slots=(slot, upcoming))
    effects: list[Effect] = []
    for reason in ("not_taken", "late"):
        ours = [m for m in missed if m[1] == reason]
        if ours:
            effects.append(Missed(svc.tenant_id, svc.service_id, len(ours), reason))  # type: ignore[arg-type]
    if missed:
        slot, reason, deadline = missed[0]
        svc, alerts = _missed(svc, [m[0] for m in missed], reason, deadline, _why(svc, slot, reason, deadline))
        effects += alerts
    return svc, effects


def _why(svc: ServiceSchedule, slot: datetime, reason: MissReason, deadline: datetime) -> str:
    if reason == "late":
        return (f'the scheduled backup of service "{svc.name}" for slot {slot_text(slot)} did not complete '
                f"by {slot_text(deadline)}")
    return f'no backup of service "{svc.name}" was taken for slot {slot_text(slot)} by {slot_text(deadline)}'


def _missed(svc: ServiceSchedule, missed: list[datetime], reason: MissReason, at: datetime,
            why: str) -> tuple[ServiceSchedule, list[Effect]]:
    """Slots `missed` (in order; the first missed for `reason` at `at`) open an incident, or join the
    open one. Returns the alert raised, if any."""
    open_ = svc.incident
    if open_ is not None:
        last = max(open_.last_slot, missed[-1])
        return _set(svc, incident=replace(open_, last_slot=last, missed=open_.missed + len(missed))), []
    kind: AlertKind = "backup_failed" if reason == "failed" else "backup_slot_missed"
    incident = Incident(alert_id_for(svc.tenant_id, svc.service_id, kind, slot_text(missed[0])), kind,
                        missed[0], missed[-1], len(missed), at, why)
    return _set(svc, incident=incident), [_alert(svc, incident)]


def _resolve(svc: ServiceSchedule, at: datetime, resolution: str) -> tuple[ServiceSchedule, list[Effect]]:
    incident = svc.incident
    if incident is None or incident.resolved_at is not None:
        return svc, []
    done = replace(incident, resolved_at=at, resolution=resolution)
    return _set(svc, incident=None, last_resolved=done), [_alert(svc, done)]


def _alert(svc: ServiceSchedule, incident: Incident) -> Alert:
    message = incident.message
    if incident.resolved_at is not None:
        slots_ = "1 slot" if incident.missed == 1 else f"{incident.missed} slots"
        message = f"{message}; resolved ({slots_} missed): {incident.resolution}"
    return Alert(incident.alert_id, svc.tenant_id, svc.service_id, incident.kind, SEVERITY[incident.kind],
                 "resolved" if incident.resolved_at is not None else "raised", message, incident.raised_at,
                 incident.resolved_at)


def _unjudged(svc: ServiceSchedule, schedule: str) -> Iterator[datetime]:
    """The slots from the first one not judged yet, continuing from where the last walk stopped when
    it can (a step of the cron costs more than everything else a walk does)."""
    marks = [m for m in (svc.judged, svc.latest_taken) if m is not None]
    floor = max(marks) if marks else None
    if svc.next_slots is not None:
        first, second = svc.next_slots
        if floor is None or floor < second:
            if floor is None or floor < first:
                yield first
            yield second
            it = _cron(schedule, second)
            while True:
                yield it.get_next(datetime)
    yield from slots(schedule, _first_unjudged(svc, schedule))


def _first_unjudged(svc: ServiceSchedule, schedule: str) -> datetime:
    """The first slot not judged yet: after the last judged one and the newest backup (a backup taken
    at or after a slot keeps it), never before the service's start."""
    start = svc.start
    marks = [m for m in (svc.judged, svc.latest_taken) if m is not None and m >= start]
    return after(schedule, max(marks)) if marks else at_or_after(schedule, start)


# -- ticks: start due slots, expire backups ----------------------------------------------------
def _tick(state: SchedulerState, now: datetime) -> Reaction:
    effects: list[Effect] = []
    if not state.announced:
        effects += _announce(state, now)
        state = replace(state, announced=True)
    tenants = state.tenants
    # commands sent long ago and never seen judged (e.g. superseded by a later slot) are forgotten
    forget = now - 10 * state.config.resend_after
    sent = {command_id: at for command_id, at in state.sent.items() if at > forget}
    for tenant_id, services in state.tenants.items():
        changed: dict[str, ServiceSchedule] = {}
        for service_id, svc in services.items():
            if svc.wake_at is not None and now < svc.wake_at:
                continue
            svc, more = _judge(svc, now, state.config, state.config.max_walk)
            effects += more
            sends = _due(svc, now, state, sent) + _expired(svc, now, state, sent)
            for send in sends:
                sent[send.command.command_id] = now
            effects += sends
            changed[service_id] = _set(svc, wake_at=_wake(svc, now, state.config, bool(sends)))
        if changed:
            tenants = tenants.set(tenant_id, services.update(changed))
    return replace(state, tenants=tenants, sent=MappingProxyType(sent)), effects


def _announce(state: SchedulerState, now: datetime) -> list[Effect]:
    """After a start: the open incidents (and recently resolved ones) again, under the same ids."""
    out: list[Effect] = []
    for svc in state.services():
        if svc.incident is not None:
            out.append(_alert(svc, svc.incident))
        done = svc.last_resolved
        if done is not None and done.resolved_at is not None \
                and now - done.resolved_at <= state.config.announce_resolved_within:
            out.append(_alert(svc, done))
    return out


def _due(svc: ServiceSchedule, now: datetime, state: SchedulerState, sent: dict[str, datetime]) -> list[Send]:
    """The latest due slot's backup, unless requested already or the service cannot be backed up now."""
    schedule = svc.schedule
    if schedule is None or (svc.status is not None and svc.status not in BACKUP_STATUSES) or svc.running:
        return []
    slot = at_or_before(schedule, now)
    if slot < svc.start or (svc.latest_requested is not None and slot <= svc.latest_requested):
        return []
    text = slot_text(slot)
    command_id = backup_command_id(svc.service_id, text)
    if command_id in state.rejected or not _may_send(command_id, now, state, sent):
        return []
    payload = BackupService(svc.service_id, backup_id_for(svc.service_id, text), text)
    return [Send(_command(svc, command_id, payload, now), "backup", command_id not in state.sent)]


def _expired(svc: ServiceSchedule, now: datetime, state: SchedulerState, sent: dict[str, datetime]) -> list[Send]:
    out: list[Send] = []
    for backup in expired(svc, now):
        command_id = expire_command_id(backup.backup_id, backup.failed_deletions)
        if command_id in state.rejected or not _may_send(command_id, now, state, sent):
            continue
        out.append(Send(_command(svc, command_id, DeleteBackup(backup.backup_id), now), "expire",
                        command_id not in state.sent))
    return out


def expired(svc: ServiceSchedule, now: datetime) -> list[Backup]:
    """Completed backups past the policy's retention: beyond `retain_count` (newest kept) or taken
    `retain_days` or more ago."""
    policy = svc.policy
    if policy is None or (policy.retain_count <= 0 and policy.retain_days <= 0):
        return []
    done = sorted((b for b in svc.backups.values() if b.status == "completed" and b.taken_at is not None),
                  key=lambda b: (b.taken_at, b.backup_id), reverse=True)
    oldest = now - timedelta(days=policy.retain_days) if policy.retain_days > 0 else None
    return [b for i, b in enumerate(done)
            if (policy.retain_count > 0 and i >= policy.retain_count)
            or (oldest is not None and b.taken_at <= oldest)]  # type: ignore[operator]


def _may_send(command_id: str, now: datetime, state: SchedulerState, sent: dict[str, datetime]) -> bool:
    last = sent.get(command_id)
    return last is None or now - last >= state.config.resend_after


def _command(svc: ServiceSchedule, command_id: str, payload, now: datetime) -> CommandEnvelope:
    return CommandEnvelope(command_id=command_id, tenant_id=svc.tenant_id, actor=SCHEDULER_ACTOR, issued_at=now,
                           correlation_id=command_id, payload=payload)


def _wake(svc: ServiceSchedule, now: datetime, config: Config, sending: bool) -> datetime | None:
    """The next time anything can be due for `svc` without an event about it."""
    times: list[datetime] = []
    if sending:
        times.append(now + config.resend_after)
    schedule = svc.schedule
    if schedule is not None:
        times.append(after(schedule, now))
        if svc.due_at is not None:
            times.append(svc.due_at)
        else:
            first = _first_unjudged(svc, schedule)
            times.append(config.deadline(first, after(schedule, first)))
    policy = svc.policy
    if policy is not None and policy.retain_days > 0:
        kept = [b.taken_at for b in svc.backups.values() if b.status == "completed" and b.taken_at is not None]
        if kept:
            times.append(min(kept) + timedelta(days=policy.retain_days))
    return min(times) if times else datetime.max.replace(tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------------
_NO_SERVICES: PMap[str, ServiceSchedule] = PMap()


def _put(state: SchedulerState, svc: ServiceSchedule) -> SchedulerState:
    services = state.tenants.get(svc.tenant_id) or _NO_SERVICES
    return replace(state, tenants=state.tenants.set(svc.tenant_id, services.set(svc.service_id, svc)))


def _put_backup(svc: ServiceSchedule, backup: Backup) -> ServiceSchedule:
    return _set(svc, backups=MappingProxyType({**svc.backups, backup.backup_id: backup}))


def _set(svc: ServiceSchedule, **changes) -> ServiceSchedule:
    """`dataclasses.replace` for the hot path (every event, every tick): the same new value, without
    running `__init__` again (ServiceSchedule has no `__post_init__`), about eight times faster."""
    new = object.__new__(ServiceSchedule)
    object.__setattr__(new, "__dict__", {**svc.__dict__, **changes})
    return new


def _drop_backup(svc: ServiceSchedule, backup_id: str) -> ServiceSchedule:
    return _set(svc, backups=MappingProxyType({k: b for k, b in svc.backups.items() if k != backup_id}))


def _without(mapping: Mapping[str, datetime], key: str) -> Mapping[str, datetime]:
    return MappingProxyType({k: v for k, v in mapping.items() if k != key})
