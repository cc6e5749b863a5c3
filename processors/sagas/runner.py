"""The saga runner: consumes a saga's input, feeds its policy (`react`) and performs the effects
the policy asks for through injected ports, feeding each effect's answer back into the policy.

One runner for every saga, so one way to treat a step's errors (`processors.sagas.errors`):
transient → retried with backoff until the deadline the policy put into the effect, then
`StepTimedOut`; permanent for this operation → `StepRefused` with a reason a person can act on;
a fault of the platform, or an error of Kafka (consuming, publishing, dead-lettering) → raised,
so the process stops and its supervisor restarts it. Offsets are committed after a message's
effects (at least once): every effect is safe to repeat, so a runner killed anywhere resumes from
the log. At start the whole event log is replayed into the policy (`EventReplayed`) so that its
deadlines survive restarts.

Ports: `Source` (the consumer), `Decoder`, `Git`, `Renderer`, `CommandSink`, `DeadLetters`,
`Keys` (the keyring), `Clock`. The composition root (`processors.saga`) builds the real ones;
tests pass fakes.

May import: `processors.sagas`, `events`, `commands.records`, `runtime.signing`, `gitops` (error
types) — never a Kafka, git or helm client: those arrive as ports.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge, Histogram

from commands.records import CommandEnvelope, RecordPopReport, RecordStepTimedOut
from events import Envelope, OperationStarted
from processors.sagas import service
from processors.sagas.errors import Verdict, classify, error_name, refusal_reason
from processors.sagas.service import (
    Commit,
    Committed,
    DeadLetter,
    Effect,
    EventArrived,
    EventReplayed,
    PopReport,
    Render,
    RenderBackup,
    Rendered,
    Revert,
    Reverted,
    SagaState,
    Send,
    StepRefused,
    StepTimedOut,
    Tick,
    Undecodable,
)
from runtime.signing import Unverified
from schemas.errors import PoisonMessage

STEPS = Counter("dbaas_saga_steps_total", "Saga steps recorded", ["step", "action"])
STEP_SECONDS = Histogram("dbaas_saga_step_seconds", "Time to render and commit one operation",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
REPORTS = Counter("dbaas_pop_reports_total", "PoP status reports forwarded", ["phase"])
REJECTED_REPORTS = Counter("dbaas_pop_reports_unverified_total", "PoP status reports no PoP key signed")
RETRIES = Counter("dbaas_saga_retries_total", "Transient failures retried", ["error"])
TIMEOUTS = Counter("dbaas_saga_step_timeouts_total", "Steps that did not finish in time", ["step"])
COMPENSATIONS = Counter("dbaas_saga_compensations_total", "GitOps changes reverted", ["changed"])
FAILED_STEPS = Counter("dbaas_saga_steps_failed_total",
                       "Operations failed because a step was refused for good (no retry mends it)",
                       ["step", "error"])
REFUSED_COMPENSATIONS = Counter("dbaas_saga_compensations_refused_total",
                                "Compensations refused for good, their event dead-lettered", ["error"])
AWAITING = Gauge("dbaas_saga_operations_awaiting_pop", "Committed operations awaiting their PoP's report")
DEAD_LETTERED = Counter("dbaas_saga_dead_lettered_total",
                        "Inputs (events, PoP reports) sent to their dead-letter topic")
LAG = Gauge("dbaas_saga_lag", "Input messages not yet handled", ["topic", "partition"])
for _step in ("render", "commit", "pop-report"):  # at zero from the start: a first timeout is an increase
    TIMEOUTS.labels(_step)

# What a message that is no event or report raises while decoding.
UNDECODABLE = PoisonMessage
FIRST_DELAY, MAX_DELAY = 0.5, 30.0  # seconds between retries of a transient failure

log = structlog.get_logger("saga")


# -- ports -----------------------------------------------------------------------------------
class Raw(Protocol):
    """An input message as the consumer hands it (confluent-kafka's `Message` is one)."""

    def topic(self) -> str: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...


class Source(Protocol):
    events_topic: str

    def replay(self) -> Iterable[Raw]: ...  # the committed event log from its start to its end
    def poll(self) -> list[Raw]: ...
    def commit(self, msg: Raw) -> None: ...


class Decoder(Protocol):
    def event(self, value: bytes | None) -> Envelope: ...
    def report(self, value: bytes | None) -> Mapping[str, Any]: ...


class Git(Protocol):
    def find_commit(self, operation_id: str) -> str | None: ...
    def before(self, sha: str) -> dict[str, str | None]: ...
    def apply(self, changes: dict[str, str | None], message: str, *, operation_id: str,
              correlation_id: str) -> Any: ...  # has .sha and .changed


class Renderer(Protocol):
    def render(self, tenant_id: str, started: OperationStarted) -> tuple[str, str | None]: ...
    def render_backup(self, tenant_id: str, request: Any) -> tuple[str, str | None]: ...


class CommandSink(Protocol):
    def send(self, command: CommandEnvelope) -> None: ...  # returns once the broker has it


class DeadLetters(Protocol):
    def send(self, msg: Raw, reason: str, code: str | None) -> None: ...


class Keys(Protocol):
    def refresh(self) -> None: ...
    def verify(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> Any: ...


class Clock(Protocol):
    def now(self) -> datetime: ...
    def wait(self, stop: Any, seconds: float) -> bool: ...  # True: stop was asked for meanwhile


class Stop(Protocol):
    def is_set(self) -> bool: ...


React = Callable[[SagaState, Any], tuple[SagaState, list[Effect]]]


# -- the runner ------------------------------------------------------------------------------
class SagaRunner:
    def __init__(self, state: SagaState, *, source: Source, decoder: Decoder, git: Git, renderer: Renderer,
                 commands: CommandSink, dead_letters: DeadLetters, keys: Keys, clock: Clock,
                 pop_status_topic: str, react: React = service.react):
        self.state = state
        self.react = react
        self.source, self.decoder, self.git, self.renderer = source, decoder, git, renderer
        self.commands, self.dead_letters, self.keys, self.clock = commands, dead_letters, keys, clock
        self.pop_status_topic = pop_status_topic
        self._started: float | None = None  # perf counter at the render of the operation in flight

    def run(self, stop: Stop) -> None:
        self.replay()
        self.loop(stop)

    def loop(self, stop: Stop) -> None:
        """Handle messages as they come, committing each one's offset after its effects."""
        while not stop.is_set():
            for msg in self.source.poll():
                self.handle(msg, stop)
                self.source.commit(msg)
            self.tick(stop)

    def replay(self) -> None:
        """Fold the committed event log into the policy's state (deadlines of operations awaiting a PoP)."""
        for msg in self.source.replay():
            try:
                env = self.decoder.event(msg.value())
            except UNDECODABLE:
                continue  # dead-lettered by the consumer loop when it reaches it
            self.state, _ = self.react(self.state, EventReplayed(env))
        AWAITING.set(len(self.state.awaiting))

    def tick(self, stop: Stop) -> None:
        self.feed(Tick(self.clock.now()), None, stop)

    def handle(self, msg: Raw, stop: Stop) -> None:
        message = self._decode(msg)
        bound = isinstance(message, EventArrived) and hasattr(message.env.payload, "operation_id")
        if bound:
            structlog.contextvars.bind_contextvars(correlation_id=message.env.correlation_id,
                                                   operation_id=message.env.payload.operation_id)
        try:
            self.feed(message, msg, stop)
        finally:
            if bound:
                structlog.contextvars.unbind_contextvars("correlation_id", "operation_id")

    def feed(self, message: Any, msg: Raw | None, stop: Stop) -> None:
        """React to `message`, perform the effects, and react to their answers until none is left."""
        pending = deque([message])
        while pending:
            self.state, effects = self.react(self.state, pending.popleft())
            AWAITING.set(len(self.state.awaiting))
            for effect in effects:
                answer = self._perform(effect, msg, stop)
                if answer is not None:
                    pending.append(answer)

    # -- input -----------------------------------------------------------------------------
    def _decode(self, msg: Raw) -> Any:
        now = self.clock.now()
        try:
            if msg.topic() == self.pop_status_topic:
                return self._report(msg, now)
            return EventArrived(self.decoder.event(msg.value()), now)
        except UNDECODABLE as exc:
            log.warning("undecodable input dead-lettered", topic=msg.topic(), reason=str(exc))
            return Undecodable(str(exc))

    def _report(self, msg: Raw, now: datetime) -> PopReport:
        """A report with what its signature proves (the policy decides whether that is enough)."""
        r = self.decoder.report(msg.value())
        report = PopReport(r["tenant_id"], r["service_id"], r["operation_id"], r["pop"], r["phase"], r["endpoint"],
                           r["reason"], r.get("credentials"), r["report_id"], now,
                           backup_id=r.get("backup_id"), details=r.get("details"))
        try:
            self.keys.refresh()
            key = self.keys.verify(msg.topic(), msg.key(), msg.value(), msg.headers())
        except Unverified as exc:
            return PopReport(**{**report.__dict__, "unverified": exc.reason})
        return PopReport(**{**report.__dict__, "key_id": key.key_id, "key_kind": key.kind, "key_pop": key.pop})

    # -- effects ---------------------------------------------------------------------------
    def _perform(self, effect: Effect, msg: Raw | None, stop: Stop) -> Any:
        match effect:
            case Send(command=command, step=step, action=action):
                self.commands.send(command)
                self._count(command, step, action)
                return None
            case DeadLetter(reason=reason, code=code):
                if msg is None:
                    raise RuntimeError(f"a dead letter with no input message: {reason}")
                if code == "unauthenticated":
                    REJECTED_REPORTS.inc()
                log.warning("input dead-lettered", code=code, reason=reason, topic=msg.topic())
                self.dead_letters.send(msg, reason, code)
                DEAD_LETTERED.inc()
                return None
            case Render(tenant_id=tenant, started=e, deadline=deadline):
                self._started = time.perf_counter()
                return self._retrying(e.operation_id, "render", deadline, stop, lambda: Rendered(
                    e.operation_id, *self.renderer.render(tenant, e), self.clock.now()))
            case RenderBackup(tenant_id=tenant, request=e, deadline=deadline):
                self._started = time.perf_counter()
                return self._retrying(e.operation_id, "render", deadline, stop, lambda: Rendered(
                    e.operation_id, *self.renderer.render_backup(tenant, e), self.clock.now()))
            case Commit():
                return self._retrying(effect.operation_id, "commit", effect.deadline, stop,
                                      lambda: self._commit(effect))
            case Revert():
                return self._retrying(effect.operation_id, "revert", None, stop, lambda: self._revert(effect))
        raise TypeError(f"not an effect: {effect!r}")

    def _retrying(self, operation_id: str, step: str, deadline: datetime | None, stop: Stop,
                  attempt: Callable[[], Any]) -> Any:
        """The one retry policy: transient errors are retried with backoff until `deadline` (none:
        forever), permanent ones refuse the step, anything else stops the saga."""
        delay = FIRST_DELAY
        while True:
            try:
                return attempt()
            except Exception as exc:
                verdict = classify(exc, "commit" if step == "revert" else step)
                if verdict is Verdict.HALT:
                    raise
                if verdict is Verdict.FAIL:
                    return self._refused(operation_id, step, exc)
                RETRIES.labels(type(exc).__name__).inc()
                if deadline is not None and self.clock.now() + timedelta(seconds=delay) > deadline:
                    TIMEOUTS.labels(step).inc()
                    log.error("step did not finish in time; the operation fails", step=step, error=str(exc))
                    return StepTimedOut(operation_id, step, self.clock.now())  # type: ignore[arg-type]
                log.warning("transient failure, retrying", step=step, error=str(exc), retry_in=delay)
                if self.clock.wait(stop, delay):
                    raise
                delay = min(delay * 2, MAX_DELAY)

    def _refused(self, operation_id: str, step: str, exc: Exception) -> StepRefused:
        if step == "revert":
            REFUSED_COMPENSATIONS.labels(error_name(exc)).inc()
            log.error("compensation refused for good; its event is dead-lettered", error=error_name(exc),
                      reason=str(exc))
            return StepRefused(operation_id, "revert", str(exc), self.clock.now())
        reason = refusal_reason(exc, step)
        FAILED_STEPS.labels(step, error_name(exc)).inc()
        log.error("step refused for good; the operation fails", step=step, error=error_name(exc), reason=reason)
        return StepRefused(operation_id, step, reason, self.clock.now())  # type: ignore[arg-type]

    def _commit(self, c: Commit) -> Committed:
        """Commit once: a commit carrying this Operation-Id (made before a crash) is the answer."""
        sha = self.git.find_commit(c.operation_id)
        if sha is not None:
            return Committed(c.operation_id, sha, True, self.clock.now())
        result = self.git.apply({c.path: c.content}, c.message, operation_id=c.operation_id,
                                correlation_id=c.correlation_id)
        return Committed(c.operation_id, result.sha or "", result.changed, self.clock.now())

    def _revert(self, r: Revert) -> Reverted:
        """Revert once: every file the operation's commit changed gets its content from before it."""
        sha = self.git.find_commit(r.revert_id)
        if sha is None:
            original = self.git.find_commit(r.operation_id)
            changes = self.git.before(original) if original else {}
            result = self.git.apply(changes, r.message, operation_id=r.revert_id,
                                    correlation_id=r.correlation_id) if changes else None
            sha = result.sha if result is not None and result.changed else None
            COMPENSATIONS.labels(str(sha is not None).lower()).inc()
        return Reverted(r.operation_id, sha, self.clock.now())

    def _count(self, command: CommandEnvelope, step: str, action: str) -> None:
        match command.payload:
            case RecordPopReport(phase=phase):
                REPORTS.labels(phase).inc()
                return
            case RecordStepTimedOut(step="pop-report", operation_id=op, after_seconds=seconds):
                TIMEOUTS.labels("pop-report").inc()
                log.warning("no PoP report in time", operation_id=op, after_seconds=seconds)
                return
        STEPS.labels(step, action).inc()
        if step == "commit" and self._started is not None:
            STEP_SECONDS.observe(time.perf_counter() - self._started)
            self._started = None
            log.info("operation committed, awaiting the PoP", sha=getattr(command.payload, "sha", None),
                     action=action)
        elif step == "revert":
            log.info("operation compensated: its GitOps change is reverted", sha=command.payload.sha)
