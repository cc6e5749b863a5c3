"""The saga runner: consumes a saga's input, feeds its policy (`react`) and performs the effects
the policy asks for through injected ports, feeding each effect's answer back into the policy.

One runner for every saga, so one way to treat a step's errors (`processors.sagas.errors`):
transient → retried with backoff until the deadline the policy put into the effect, then
`StepTimedOut`; permanent for this operation → `StepRefused` with a reason a person can act on;
a fault of the platform, or an error of Kafka (consuming, publishing, dead-lettering) → raised,
so the process stops and its supervisor restarts it. Offsets are committed after a batch's
effects (at least once): every effect is safe to repeat, so a runner killed anywhere resumes from
the log. The event log of each partition the instance is given is replayed into the policy
(`EventReplayed`) when it is given (`adopt`; `run` replays every partition), so that deadlines
survive restarts and move with their partition to another instance (`release`).

Group commits: the runner takes the input in batches (what the consumer has when it asks, no
waiting for more). The commits the batch's operations ask for are not made one by one: they wait
until the batch is fed and are then made together — one git commit and one push for all of them
(`Git.apply_group`), each operation with its own `Operation-Id:` trailer and its files named, so
each is found, recorded and reverted on its own — and each operation's `Committed` answer is fed
back in turn. The committer looks the whole group up by trailer in the same fetch as it commits
(`once`): an operation committed before a crash is not committed again. A revert, or a
commit touching a file a waiting commit touches, first commits what waits (the repository's history
keeps the order of the input). A transient failure retries the group, each operation until its own
deadline; a group git refuses for good is committed again one operation at a time, so only the
operation at fault fails. The policy is unchanged by this: it only sees its answers later. The
commands the effects send are delivered before the batch's offsets are committed
(`CommandSink.flush`).

Ports: `Source` (the consumer), `Decoder`, `Git`, `Renderer`, `CommandSink`, `DeadLetters`,
`Keys` (the keyring), `Clock`. The composition root (`processors.saga`) builds the real ones;
tests pass fakes.

Tracing (`runtime.tracing`, while it is on): an input's `traceparent` header is the parent of the
spans of the effects it leads to (render, commit, revert, each command sent); a commit made in a
span carries it in its `Trace-Id:` trailer, so the PoP that applies the commit continues the trace.

May import: `processors.sagas`, `events`, `commands.records`, `runtime.signing`, `runtime.tracing`,
`gitops` (error types) — never a Kafka, git or helm client: those arrive as ports.
"""
from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge, Histogram

from commands.records import CommandEnvelope, RecordPopReport, RecordStepTimedOut
from events import Envelope, OperationStarted
from gitops.committer import Change
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
    RenderConnector,
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
from runtime import tracing
from runtime.signing import Unverified
from schemas.errors import PoisonMessage

APPLICATIONS_DIR = "argocd/applications"  # gitops.layout.APPLICATIONS_DIR
APPLICATION_COMMITS = uuid.UUID("5d0c6a2e-8f41-4b7e-9a53-2c1f7e0b9d44")  # Operation-Id of Application commits

STEPS = Counter("dbaas_saga_steps_total", "Saga steps recorded", ["step", "action"])
STEP_SECONDS = Histogram("dbaas_saga_step_seconds", "Time to render and commit one operation",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
GROUP_SIZE = Histogram("dbaas_saga_commit_group_operations", "Operations committed together in one git commit",
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500))
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

    # the committed event log from its start to its end: every partition, or those given
    def replay(self, partitions: Collection[int] | None = None) -> Iterable[Raw]: ...
    def poll(self) -> list[Raw]: ...
    def commit(self, msg: Raw) -> None: ...


class Decoder(Protocol):
    def event(self, value: bytes | None) -> Envelope: ...
    def report(self, value: bytes | None) -> Mapping[str, Any]: ...


class Git(Protocol):
    def find_commit(self, operation_id: str) -> str | None: ...
    def before(self, sha: str, operation_id: str | None = None) -> dict[str, str | None]: ...
    def read(self, path: str) -> str | None: ...
    def apply(self, changes: dict[str, str | None], message: str, *, operation_id: str,
              correlation_id: str, trace: str | None = None) -> Any: ...  # has .sha and .changed
    def apply_group(self, group: Sequence[Change], *, apart: Sequence[Change] = (),
                    once: bool = False) -> list[Any]: ...  # one result per change of `group`, as apply's


class Renderer(Protocol):
    # optional: `prefetch([(tenant_id, started), …])` renders ahead, `forget()` drops what was not taken
    def render(self, tenant_id: str, started: OperationStarted) -> tuple: ...  # (path, content[, also])
    def render_backup(self, tenant_id: str, request: Any) -> tuple: ...  # (path, content[, also])
    def render_connector(self, tenant_id: str, request: Any) -> tuple[str, str | None]: ...


class CommandSink(Protocol):
    def send(self, command: CommandEnvelope) -> None: ...  # may return before the broker has it
    def flush(self) -> None: ...  # returns once the broker has every command sent; raises if one failed


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


@dataclass
class _Waiting:
    """A commit waiting for the end of its batch, with what it needs to continue: the input
    that led to it (its context: logs, trace) and the commit's span once one is started."""

    commit: Commit
    origin: Any  # the decoded input message
    msg: Raw | None
    tenant: str | None
    span: Any = None
    trace: str | None = None  # the commit's Trace-Id trailer

    @property
    def paths(self) -> set[str]:
        return {self.commit.path, *(path for path, _ in self.commit.also if not _is_application(path))}


def _is_application(path: str) -> bool:
    return path.startswith(APPLICATIONS_DIR + "/")


def _last_of_each_partition(batch: Sequence[Raw]) -> list[Raw]:
    last: dict[tuple[str, int], Raw] = {}
    for msg in batch:
        last[(msg.topic(), msg.partition())] = msg
    return list(last.values())


def _trailer() -> dict[str, str]:
    """The `trace` argument of a commit made in the current span (none while tracing is off): the
    commit's `Trace-Id:` trailer, which the PoP continues the trace from."""
    traceparent = tracing.current_traceparent()
    return {"trace": traceparent} if traceparent else {}


def _span_of(effect: Effect, tenant: str | None) -> tuple[str, dict[str, Any]]:
    """The name and attributes of an effect's span (`dbaas.step`: render, commit, revert, relay of a
    PoP report, or the step a sent command records)."""
    match effect:
        case Send(command=command, step=step):
            operation = getattr(command.payload, "operation_id", None)
            return f"send {command.command_type}", tracing.attributes(
                operation, command.tenant_id, "relay" if step == "report" else step, command_type=command.command_type)
        case Render(tenant_id=t, started=e):
            return "render", tracing.attributes(e.operation_id, t, "render", action=e.action, service_id=e.service_id)
        case RenderBackup(tenant_id=t, request=e):
            return "render", tracing.attributes(e.operation_id, t, "render", backup_id=e.backup_id)
        case Commit(operation_id=op, path=path):
            return "commit", tracing.attributes(op, tenant, "commit", path=path)
        case Revert(operation_id=op, revert_id=revert):
            return "revert", tracing.attributes(op, tenant, "revert", revert_id=revert)
        case DeadLetter(code=code):
            return "dead-letter", tracing.attributes(None, tenant, "dead-letter", code=code)
    return type(effect).__name__, tracing.attributes(None, tenant)


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
        self._started: dict[str, float] = {}  # perf counter at the render of each operation in flight
        self._tenant: str | None = None  # of the input being handled (for spans)
        self._origin: Any = None  # the decoded input being handled
        self._waiting: list[_Waiting] = []  # commits waiting for the end of the batch

    def run(self, stop: Stop) -> None:
        self.replay()
        self.loop(stop)

    def loop(self, stop: Stop) -> None:
        """Handle messages in the batches they come in, committing offsets after a batch's effects."""
        while not stop.is_set():
            batch = self.source.poll()
            if batch:
                self.handle_batch(batch, stop)
                for msg in _last_of_each_partition(batch):
                    self.source.commit(msg)
            self.tick(stop)

    def replay(self, partitions: Collection[int] | None = None) -> None:
        """Fold the committed event log (every partition, or those given) into the policy's state
        (deadlines of operations awaiting a PoP)."""
        for msg in self.source.replay(partitions):
            try:
                env = self.decoder.event(msg.value())
            except UNDECODABLE:
                continue  # dead-lettered by the consumer loop when it reaches it
            self.state, _ = self.react(self.state, EventReplayed(env))
        AWAITING.set(len(self.state.awaiting))

    # -- sharing the partitions with other instances (the source's consumer group) -----------
    def adopt(self, partitions: Collection[int], partition_of: Callable[[str], int]) -> None:
        """Partitions of the event log given to this instance: their operations' deadlines are
        rebuilt from the log (what another instance was waiting for, this one now waits for)."""
        given = set(partitions)
        self.state = service.without(self.state, lambda tenant: partition_of(tenant) in given)  # none twice
        self.replay(given)
        log.info("partitions assigned", partitions=sorted(partitions), awaiting_pop=len(self.state.awaiting))

    def release(self, partitions: Collection[int], partition_of: Callable[[str], int]) -> None:
        """Partitions taken from this instance: it forgets their operations, so it never times out
        an operation another instance is following. `partition_of`: an organization's partition."""
        gone = set(partitions)
        if not gone:
            return
        self.state = service.without(self.state, lambda tenant: partition_of(tenant) in gone)
        AWAITING.set(len(self.state.awaiting))
        log.info("partitions revoked", partitions=sorted(gone), awaiting_pop=len(self.state.awaiting))

    def tick(self, stop: Stop) -> None:
        self.feed(Tick(self.clock.now()), None, stop)
        self.commands.flush()

    def handle(self, msg: Raw, stop: Stop) -> None:
        """Feed one input message (a batch of one)."""
        self.handle_batch([msg], stop)

    def handle_batch(self, batch: Sequence[Raw], stop: Stop) -> None:
        """Feed a batch of input messages in order; then make the commits they asked for, together,
        and feed their answers; return once every command sent is delivered. A renderer that can
        render ahead (`prefetch`) is first asked for the batch's services, so it renders while the
        runner handles the messages before them."""
        decoded = [(self._decode(msg), msg) for msg in batch]
        prefetch = getattr(self.renderer, "prefetch", None)
        if prefetch is not None and len(batch) > 1:
            prefetch([(m.env.tenant_id, m.env.payload) for m, _ in decoded
                      if isinstance(m, EventArrived) and isinstance(m.env.payload, OperationStarted)])
        try:
            for message, msg in decoded:
                with self._input(message, msg):
                    self.feed(message, msg, stop)
            self._commit_waiting(stop)
        finally:
            if prefetch is not None and len(batch) > 1:
                self.renderer.forget()  # type: ignore[attr-defined]
        self.commands.flush()

    @contextmanager
    def _input(self, message: Any, msg: Raw | None) -> Iterator[None]:
        """The context of handling one input (its log fields, its tenant for spans). While tracing is
        on, the span that wrote it (its `traceparent` header) is the parent of the spans of the
        effects it leads to; no effect, no span."""
        fields = {}
        if isinstance(message, EventArrived) and hasattr(message.env.payload, "operation_id"):
            fields = {"correlation_id": message.env.correlation_id, "operation_id": message.env.payload.operation_id}
        outer = self._tenant, self._origin  # an input's commits may be made while another is handled
        self._tenant = message.env.tenant_id if isinstance(message, EventArrived) else getattr(
            message, "tenant_id", None)
        self._origin = message
        try:
            with structlog.contextvars.bound_contextvars(**fields), \
                    tracing.within(tracing.from_headers(msg.headers()) if msg is not None else None):
                yield
        finally:
            self._tenant, self._origin = outer

    def feed(self, message: Any, msg: Raw | None, stop: Stop) -> None:
        """React to `message`, perform the effects, and react to their answers until none is left; a
        commit waits for the end of the batch (`_commit_waiting`)."""
        pending = deque([message])
        while pending:
            self.state, effects = self.react(self.state, pending.popleft())
            AWAITING.set(len(self.state.awaiting))
            for effect in effects:
                if isinstance(effect, Commit):
                    self._wait(effect, msg, stop)
                    continue
                if isinstance(effect, Revert):
                    self._commit_waiting(stop)  # the history keeps the input's order
                answer = self._perform(effect, msg, stop)
                if answer is not None:
                    pending.append(answer)

    # -- group commits -----------------------------------------------------------------------
    def _wait(self, commit: Commit, msg: Raw | None, stop: Stop) -> None:
        """Keep `commit` for the end of the batch; first commit what waits if it touches the same
        files (or the same operation: an input handled twice)."""
        waiting = _Waiting(commit, self._origin, msg, self._tenant)
        if any(w.paths & waiting.paths or w.commit.operation_id == commit.operation_id for w in self._waiting):
            self._commit_waiting(stop)
        self._waiting.append(waiting)

    def _commit_waiting(self, stop: Stop) -> None:
        """Make the waiting commits, together, and feed each answer back in its input's context."""
        while self._waiting:
            group, self._waiting = self._waiting, []
            GROUP_SIZE.observe(len(group))
            if len(group) == 1:  # a commit of its own, exactly as a single input's
                (one,) = group
                with self._input(one.origin, one.msg):
                    answer = self._perform(one.commit, one.msg, stop)
                    self.feed(answer, one.msg, stop)
                continue
            answers = self._commit_group(group, stop)
            for one, answer in zip(group, answers, strict=True):
                with self._input(one.origin, one.msg):
                    if isinstance(answer, (StepRefused, StepTimedOut)):
                        tracing.end(one.span, f"{type(answer).__name__}: {getattr(answer, 'reason', answer.step)}")
                    else:
                        tracing.end(one.span)
                    self.feed(answer, one.msg, stop)

    def _commit_group(self, group: list[_Waiting], stop: Stop) -> list[Any]:
        """One commit and one push for the group: the answer of each, in order. Transient failures
        are retried, each operation until its deadline; a refusal commits each one alone."""
        for one in group:
            self._trace(one)
        answers: dict[str, Any] = {}
        left = list(group)
        delay = FIRST_DELAY
        while left:
            try:
                answers.update(self._commit_together(left))
                break
            except Exception as exc:
                verdict = classify(exc, "commit")
                if verdict is Verdict.HALT:
                    raise
                if verdict is Verdict.FAIL:
                    log.warning("git refused a group commit; committing its operations one at a time",
                                operations=len(left), error=str(exc))
                    for one in left:
                        tracing.end(one.span)
                        one.span = None
                        with self._input(one.origin, one.msg):
                            answers[one.commit.operation_id] = self._perform(one.commit, one.msg, stop)
                    break
                RETRIES.labels(type(exc).__name__).inc()
                now = self.clock.now()
                for one in [w for w in left if now + timedelta(seconds=delay) > w.commit.deadline]:
                    TIMEOUTS.labels("commit").inc()
                    log.error("step did not finish in time; the operation fails", step="commit", error=str(exc),
                              operation_id=one.commit.operation_id)
                    answers[one.commit.operation_id] = StepTimedOut(one.commit.operation_id, "commit", now)
                    left.remove(one)
                if not left:
                    break
                log.warning("transient failure, retrying", step="commit", operations=len(left), error=str(exc),
                            retry_in=delay)
                if self.clock.wait(stop, delay):
                    raise
                delay = min(delay * 2, MAX_DELAY)
        return [answers[one.commit.operation_id] for one in group]

    def _trace(self, one: _Waiting) -> None:
        """The commit's span (a child of its input's, when that one is recorded) and the trailer
        naming it: what a commit of its own gets from `_perform` and `_trailer`."""
        parent = tracing.from_headers(one.msg.headers()) if one.msg is not None else None
        if parent is None:
            return
        if tracing.sampled(parent):
            _, attrs = _span_of(one.commit, one.tenant)
            one.span = tracing.start("commit", parent, attrs, kind=tracing.SpanKind.INTERNAL)
            one.trace = tracing.format_traceparent(one.span.get_span_context())
        else:
            one.trace = parent.decode() if isinstance(parent, bytes) else parent

    def _commit_together(self, group: list[_Waiting]) -> dict[str, Committed]:
        """Commit the group once, in one push: operations whose commit exists (made before a crash,
        found by trailer in the same fetch) answer with it; the others are committed in one commit,
        after one commit of the Argo CD Applications they add."""
        apps: dict[str, str | None] = {}
        changes = []
        for one in group:
            c = one.commit
            own_apps, files = self._split(c)
            apps.update(own_apps)
            changes.append(Change(files, c.message, c.operation_id, c.correlation_id, one.trace))
        apart = [self._applications(apps, group[0].commit.correlation_id)] if apps else []
        results = self.git.apply_group(changes, apart=apart, once=True)
        now = self.clock.now()
        return {one.commit.operation_id: Committed(one.commit.operation_id, result.sha or "", result.changed, now)
                for one, result in zip(group, results, strict=True)}

    def _split(self, c: Commit) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """An operation's commit split in two: the Argo CD Applications it adds (committed apart,
        `_applications`) and its own files. A removal of something never written removes nothing
        else: no PoP will see a deletion, so no record of one either."""
        also = dict(c.also)
        apps = {path: text for path, text in also.items() if _is_application(path)}
        rest = {path: text for path, text in also.items() if path not in apps}
        if c.content is None and rest and self.git.read(c.path) is None:
            rest = {}
        return apps, {**rest, c.path: c.content}

    @staticmethod
    def _applications(apps: dict[str, str | None], correlation_id: str) -> Change:
        """Argo CD Applications get a commit of their own, never reverted with an operation: a
        revert removing one would make Argo CD delete every service it syncs."""
        app_op = str(uuid.uuid5(APPLICATION_COMMITS, ",".join(sorted(apps))))
        return Change(apps, f"Add Argo CD Application {', '.join(sorted(apps))}", app_op, correlation_id)

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
                           backup_id=r.get("backup_id"), details=r.get("details"), connector=r.get("connector"))
        try:
            self.keys.refresh()
            key = self.keys.verify(msg.topic(), msg.key(), msg.value(), msg.headers())
        except Unverified as exc:
            return PopReport(**{**report.__dict__, "unverified": exc.reason})
        return PopReport(**{**report.__dict__, "key_id": key.key_id, "key_kind": key.kind, "key_pop": key.pop})

    # -- effects ---------------------------------------------------------------------------
    def _perform(self, effect: Effect, msg: Raw | None, stop: Stop) -> Any:
        """Perform `effect`; in a span of its own when it belongs to a trace (see `handle`)."""
        if not tracing.in_trace():
            return self._act(effect, msg, stop)
        name, attrs = _span_of(effect, self._tenant)
        with tracing.span(name, attrs, kind=tracing.SpanKind.PRODUCER if isinstance(effect, Send)
                          else tracing.SpanKind.INTERNAL):
            answer = self._act(effect, msg, stop)
            if isinstance(answer, (StepRefused, StepTimedOut)):
                tracing.fail(f"{type(answer).__name__}: {getattr(answer, 'reason', answer.step)}")
            return answer

    def _act(self, effect: Effect, msg: Raw | None, stop: Stop) -> Any:
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
                self._started[e.operation_id] = time.perf_counter()
                return self._retrying(e.operation_id, "render", deadline, stop,
                                      lambda: self._rendered(e.operation_id, self.renderer.render(tenant, e)))
            case RenderBackup(tenant_id=tenant, request=e, deadline=deadline):
                self._started[e.operation_id] = time.perf_counter()
                return self._retrying(e.operation_id, "render", deadline, stop,
                                      lambda: self._rendered(e.operation_id, self.renderer.render_backup(tenant, e)))
            case RenderConnector(tenant_id=tenant, request=e, deadline=deadline):
                self._started[e.operation_id] = time.perf_counter()
                return self._retrying(e.operation_id, "render", deadline, stop, lambda: Rendered(
                    e.operation_id, *self.renderer.render_connector(tenant, e), self.clock.now()))
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

    def _rendered(self, operation_id: str, result: tuple) -> Rendered:
        """A renderer answers (path, content) or (path, content, other files of the same commit)."""
        path, content, *also = result
        return Rendered(operation_id, path, content, self.clock.now(), tuple(sorted((also or [{}])[0].items())))

    def _commit(self, c: Commit) -> Committed:
        """Commit once: a commit carrying this Operation-Id (made before a crash) is the answer."""
        sha = self.git.find_commit(c.operation_id)
        if sha is not None:
            return Committed(c.operation_id, sha, True, self.clock.now())
        apps, files = self._split(c)
        if apps:
            app = self._applications(apps, c.correlation_id)
            self.git.apply(dict(app.changes), app.message, operation_id=app.operation_id,
                           correlation_id=app.correlation_id)
        result = self.git.apply(files, c.message, operation_id=c.operation_id,
                                correlation_id=c.correlation_id, **_trailer())
        return Committed(c.operation_id, result.sha or "", result.changed, self.clock.now())

    def _revert(self, r: Revert) -> Reverted:
        """Revert once: every file the operation's commit changed gets its content from before it."""
        sha = self.git.find_commit(r.revert_id)
        if sha is None:
            original = self.git.find_commit(r.operation_id)
            changes = self.git.before(original, r.operation_id) if original else {}
            result = self.git.apply(changes, r.message, operation_id=r.revert_id,
                                    correlation_id=r.correlation_id, **_trailer()) if changes else None
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
        operation = getattr(command.payload, "operation_id", None)
        started = self._started.pop(operation, None) if step != "render" else None
        if step == "commit" and started is not None:
            STEP_SECONDS.observe(time.perf_counter() - started)
            log.info("operation committed, awaiting the PoP", sha=getattr(command.payload, "sha", None),
                     action=action)
        elif step == "revert":
            log.info("operation compensated: its GitOps change is reverted", sha=command.payload.sha)
