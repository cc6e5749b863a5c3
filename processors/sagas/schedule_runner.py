"""The backup scheduler's runner: replays the event log into the scheduler's policy
(`processors.sagas.schedule`), then follows the log and ticks the clock, performing the effects the
policy asks for through injected ports.

- `Send`: the signed command is published on `dbaas.commands` (returns once the broker has it).
- `Alert`: published on the tenant's `dbaas.alerts.{tenant}`.
- `Missed`: counted and logged.

Every effect is safe to repeat (command ids and alert ids are derived from what they are about), so
any failure to publish stops the process (its supervisor restarts it): the replay at start
rebuilds the state, and what was not published is published then. Nothing is committed: the whole
log is read at every start, by every instance.

Ports: `EventLog` (the log: replay, then what follows), `Decoder`, `CommandSink`, `AlertSink`,
`Clock`. The composition root (`processors.scheduler`) builds the real ones; tests pass fakes.

May import: `processors.sagas.schedule`, `events`, `commands.records`, `schemas.errors` — never a
Kafka client: it arrives as a port.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge, Histogram

from commands.records import CommandEnvelope
from events import CommandRejected, Envelope
from processors.sagas import schedule
from processors.sagas.schedule import (
    SCHEDULER_ACTOR,
    Alert,
    Effect,
    EventArrived,
    EventReplayed,
    Missed,
    SchedulerState,
    Send,
    Tick,
)
from schemas.errors import PoisonMessage

STARTED = Counter("dbaas_scheduler_backups_started_total", "Scheduled backups asked for (one per slot)")
EXPIRED = Counter("dbaas_scheduler_backups_expired_total", "Deletions of backups past their retention asked for")
RESENT = Counter("dbaas_scheduler_commands_resent_total",
                 "Commands sent again because they were not seen judged in time", ["purpose"])
MISSED = Counter("dbaas_scheduler_slots_missed_total",
                 "Schedule slots without a backup by their deadline (not_taken, late) or whose backup failed",
                 ["reason"])
ALERTS = Counter("dbaas_scheduler_alerts_total", "Alerts published", ["kind", "state"])
REJECTED = Counter("dbaas_scheduler_commands_rejected_total", "The scheduler's commands the processor rejected",
                   ["command", "reason"])
UNDECODABLE = Counter("dbaas_scheduler_events_undecodable_total", "Events of the log that do not decode (skipped)")
POLICIES = Gauge("dbaas_scheduler_policies", "Services with a backup schedule")
INCIDENTS = Gauge("dbaas_scheduler_open_alerts", "Services with a missed-slot alert raised and not resolved")
TICK_SECONDS = Histogram("dbaas_scheduler_tick_seconds", "Time to judge every service's slots on one tick",
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))

log = structlog.get_logger("scheduler")


# -- ports -------------------------------------------------------------------------------------
class Raw(Protocol):
    def value(self) -> bytes | None: ...


class EventLog(Protocol):
    def replay(self) -> Iterable[Raw]: ...  # the committed log from its start to its end as it is now
    def poll(self, timeout: float) -> Sequence[Raw]: ...  # what follows (after `replay`)


class Decoder(Protocol):
    def event(self, value: bytes | None) -> Envelope: ...  # or raises PoisonMessage


class CommandSink(Protocol):
    def send(self, command: CommandEnvelope) -> None: ...  # returns once the broker has it


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None: ...  # returns once the broker has it


class Clock(Protocol):
    def now(self) -> datetime: ...


class Stop(Protocol):
    def is_set(self) -> bool: ...


React = Callable[[SchedulerState, Any], tuple[SchedulerState, list[Effect]]]


# -- the runner --------------------------------------------------------------------------------
class SchedulerRunner:
    def __init__(self, state: SchedulerState, *, events: EventLog, decoder: Decoder, commands: CommandSink,
                 alerts: AlertSink, clock: Clock, tick_seconds: float, react: React = schedule.react,
                 monotonic: Callable[[], float] = time.monotonic):
        self.state = state
        self.react = react
        self.events, self.decoder, self.commands, self.alerts, self.clock = events, decoder, commands, alerts, clock
        self.tick_seconds = tick_seconds
        self.monotonic = monotonic
        self.replayed = 0

    def run(self, stop: Stop) -> None:
        self.replay()
        self.loop(stop)

    def replay(self) -> None:
        """Fold the whole log into the policy's state: policies, backups, slots judged, incidents."""
        for msg in self.events.replay():
            env = self._decode(msg)
            if env is not None:
                self.state, _ = self.react(self.state, EventReplayed(env))
                self.replayed += 1
        self._gauges()

    def loop(self, stop: Stop) -> None:
        """Follow the log; tick every `tick_seconds` (first at once: what came due while stopped)."""
        next_tick = self.monotonic()
        while not stop.is_set():
            if self.monotonic() >= next_tick:
                self.tick()
                next_tick = self.monotonic() + self.tick_seconds
            wait = max(0.0, min(0.5, next_tick - self.monotonic()))
            for msg in self.events.poll(wait):
                self.handle(msg)

    def tick(self) -> None:
        started = time.perf_counter()
        self.feed(Tick(self.clock.now()))
        TICK_SECONDS.observe(time.perf_counter() - started)
        self._gauges()

    def handle(self, msg: Raw) -> None:
        env = self._decode(msg)
        if env is None:
            return
        structlog.contextvars.bind_contextvars(correlation_id=env.correlation_id)
        try:
            if isinstance(env.payload, CommandRejected) and env.actor_subject == SCHEDULER_ACTOR.subject:
                e = env.payload
                REJECTED.labels(e.command_type, e.reason_code).inc()
                log.warning("a scheduler command was rejected; it is not sent again", command_id=env.command_id,
                            command=e.command_type, reason_code=e.reason_code, reason=e.message,
                            tenant=env.tenant_id)
            self.feed(EventArrived(env, self.clock.now()))
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id")

    def feed(self, message: Any) -> None:
        self.state, effects = self.react(self.state, message)
        for effect in effects:
            self._perform(effect)

    # -- effects -------------------------------------------------------------------------------
    def _perform(self, effect: Effect) -> None:
        match effect:
            case Send(command=command, purpose=purpose, first=first):
                structlog.contextvars.bind_contextvars(correlation_id=command.correlation_id)
                try:
                    self.commands.send(command)
                    payload = command.payload
                    if not first:
                        RESENT.labels(purpose).inc()
                    elif purpose == "backup":
                        STARTED.inc()
                    else:
                        EXPIRED.inc()
                    log.info("scheduled backup asked for" if purpose == "backup" else "expired backup deleted",
                             tenant=command.tenant_id, command_id=command.command_id,
                             backup_id=getattr(payload, "backup_id", None), slot=getattr(payload, "slot", None),
                             service_id=getattr(payload, "service_id", None), again=not first)
                finally:
                    structlog.contextvars.unbind_contextvars("correlation_id")
            case Alert():
                self.alerts.send(effect)
                ALERTS.labels(effect.kind, effect.state).inc()
                log.warning(f"alert {effect.state}", alert_id=effect.alert_id, kind=effect.kind,
                            tenant=effect.tenant_id, service_id=effect.service_id, message=effect.message)
            case Missed(reason=reason, slots=n):
                MISSED.labels(reason).inc(n)
                log.warning("schedule slots missed", tenant=effect.tenant_id, service_id=effect.service_id,
                            slots=n, reason=reason)
            case _:
                raise TypeError(f"not an effect of the scheduler: {effect!r}")

    def _decode(self, msg: Raw) -> Envelope | None:
        try:
            return self.decoder.event(msg.value())
        except PoisonMessage as exc:  # the processes that own the log dead-letter it; the scheduler skips it
            UNDECODABLE.inc()
            log.warning("undecodable event skipped", reason=str(exc))
            return None

    def _gauges(self) -> None:
        POLICIES.set(schedule.scheduled(self.state))
        INCIDENTS.set(sum(1 for s in self.state.services() if s.incident is not None))
