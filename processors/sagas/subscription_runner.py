"""The subscription saga's runner: replays the event log into the policy
(`processors.sagas.subscription`), resumes what is pending, then follows the log, performing the
effects through injected ports and feeding their answers back.

- `Grant`: the sealed password is opened (`Opener`; one that does not open is refused for good:
  `GrantRefused`), then the credential and ACLs are created (`Access`).
- `Revoke`: ACLs and credential deleted (`Access`).
- `Send`: the signed system command is published (returns once the broker has it).

A transient failure of the broker is retried with backoff; anything else raised stops the process
(its supervisor restarts it, and the replay finds the work again). Nothing is committed: the whole
log is read at every start.

Ports: `EventLog`, `Decoder`, `Access`, `Opener`, `CommandSink`, `Clock`. The composition root
(`processors.subscription_saga`) builds the real ones; tests pass fakes.

May import: `processors.sagas.subscription`, `events`, `schemas.errors` — no Kafka client.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge

from commands.catalog import subscription_seal_context as seal_context
from events import Envelope, event_type
from processors.sagas import subscription
from processors.sagas.subscription import (
    Effect,
    EventArrived,
    EventReplayed,
    Grant,
    Granted,
    GrantRefused,
    Resume,
    Revoke,
    Revoked,
    Send,
    State,
    TenantGrant,
)
from schemas.errors import PoisonMessage

CHANGES = Counter("dbaas_subscriptions_changes_total", "Subscriptions granted, refused or revoked on the broker",
                  ["action"])
RETRIES = Counter("dbaas_subscriptions_retries_total", "Broker calls retried after a transient failure")
UNDECODABLE = Counter("dbaas_subscriptions_events_undecodable_total", "Events of the log that do not decode")
PENDING = Gauge("dbaas_subscriptions_pending", "Subscriptions whose grant or revocation is not recorded yet")
for _action in ("granted", "refused", "revoked"):
    CHANGES.labels(_action)

log = structlog.get_logger("subscriptions")


class Raw(Protocol):
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...


class EventLog(Protocol):
    def replay(self) -> Iterable[Raw]: ...
    def poll(self, timeout: float) -> Sequence[Raw]: ...


class Decoder(Protocol):
    def event(self, value: bytes | None) -> Envelope: ...


class Access(Protocol):
    def grant(self, user: str, password: bytes, grants: list[TenantGrant]) -> None: ...
    def revoke(self, user: str) -> None: ...


class Opener(Protocol):
    def open(self, sealed: str, context: bytes) -> bytes: ...  # raises ValueError when it does not open


class CommandSink(Protocol):
    def send(self, command: Any) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Stop(Protocol):
    def is_set(self) -> bool: ...


class Transient(Exception):
    """A broker call that may succeed when tried again (timeouts, the broker restarting)."""


class SubscriptionRunner:
    def __init__(self, *, events: EventLog, decoder: Decoder, access: Access, opener: Opener,
                 commands: CommandSink, clock: Clock, is_transient: Callable[[BaseException], bool],
                 sleep: Callable[[float], None] = time.sleep, max_delay: float = 30.0):
        self.state = State()
        self.events, self.decoder, self.access, self.opener = events, decoder, access, opener
        self.commands, self.clock, self.is_transient = commands, clock, is_transient
        self.sleep, self.max_delay = sleep, max_delay

    def run(self, stop: Stop) -> None:
        self.replay()
        self.loop(stop)

    def replay(self) -> None:
        for msg in self.events.replay():
            env = self._decode(msg)
            if env is not None:
                self.state, _ = subscription.react(self.state, EventReplayed(env))
        self.feed(Resume(self.clock.now()))

    def loop(self, stop: Stop) -> None:
        while not stop.is_set():
            for msg in self.events.poll(0.5):
                env = self._decode(msg)
                if env is not None:
                    structlog.contextvars.bind_contextvars(correlation_id=env.correlation_id)
                    try:
                        self.feed(EventArrived(env))
                    finally:
                        structlog.contextvars.unbind_contextvars("correlation_id")

    def feed(self, message: Any) -> None:
        self.state, effects = subscription.react(self.state, message)
        PENDING.set(len(self.state.pending))
        for effect in effects:
            answer = self._perform(effect)
            if answer is not None:
                self.feed(answer)

    def _perform(self, effect: Effect) -> Any:
        match effect:
            case Grant():
                try:
                    password = self.opener.open(effect.sealed_password, seal_context(effect.subscription_id))
                except ValueError as exc:
                    CHANGES.labels("refused").inc()
                    log.warning("subscription refused", subscription_id=effect.subscription_id, reason=str(exc))
                    return GrantRefused(effect.subscription_id, f"the password does not open: {exc}", self.clock.now())
                self._retrying(lambda: self.access.grant(effect.principal, password, list(effect.grants)))
                CHANGES.labels("granted").inc()
                log.info("subscription granted", subscription_id=effect.subscription_id, principal=effect.principal)
                return Granted(effect.subscription_id, self.clock.now())
            case Revoke():
                self._retrying(lambda: self.access.revoke(effect.principal))
                CHANGES.labels("revoked").inc()
                log.info("subscription revoked", subscription_id=effect.subscription_id, principal=effect.principal)
                return Revoked(effect.subscription_id, self.clock.now())
            case Send(command=command):
                self.commands.send(command)
                return None
        raise TypeError(f"not an effect of the subscription saga: {effect!r}")

    def _retrying(self, call: Callable[[], None]) -> None:
        delay = 0.5
        while True:
            try:
                call()
                return
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                RETRIES.inc()
                log.warning("broker call failed; retrying", error=str(exc), delay=delay)
                self.sleep(delay)
                delay = min(delay * 2, self.max_delay)

    def _decode(self, msg: Raw) -> Envelope | None:
        """The event, when it is one the policy folds (by its event-type header: every other event of
        the log is skipped undecoded; one without the header is decoded to see); None otherwise."""
        kind = event_type(msg.headers())
        if kind is not None and kind not in subscription.FOLDED:
            return None
        try:
            return self.decoder.event(msg.value())
        except PoisonMessage as exc:
            UNDECODABLE.inc()
            log.warning("undecodable event skipped", reason=str(exc))
            return None
