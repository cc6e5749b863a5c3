"""The service saga: makes each started operation true in the GitOps repository, and turns PoP
status reports into the commands that finish operations.

For every `OperationStarted` on `dbaas.events` it renders the service's manifests with the real
`helm template` (action apply) or plans their removal (action delete), records the render, commits
to `tenants/{tenant}/{pop}/{service}.yaml` with `Operation-Id:`/`Correlation-Id:` trailers, and
records the commit. For every report on `dbaas.pop.status` it sends `RecordPopReport`.

Compensation: for a `ServiceFailed` or `OperationCancelled` that asks for it, the operation's
commit is reverted (each file it changed gets its content from before it, in a commit whose
`Operation-Id` is derived from the operation's) and `RecordServiceClaimReverted` is sent.

Errors of a step are of three kinds (`classify`): transient (git push or network trouble, a
timeout: retried with backoff, as long as the step's time allows), permanent for this operation
(the chart refuses its values, its change cannot be committed: the same event fails the same way
on every retry, so `RecordStepFailed` fails the operation with a reason a person can act on and
the saga moves on to the next event), and faults of the platform itself (no helm binary, a
workdir that is not the remote's clone, a remote refusing every push: raised, so the supervisor
restarts the saga and the operator sees why, rather than failing every tenant's operations).
A compensation refused for good cannot fail anything: its event is dead-lettered with the reason.

Step timeouts: render and commit happen here, so a retry loop that outlives their time gives up
and sends `RecordStepTimedOut`; the PoP's report is awaited against a deadline per committed
operation (the commit's time + the pop-report timeout), kept in memory and rebuilt at start by
reading the whole event log, so a restart loses no deadline.

Outcomes travel as system commands through `dbaas.commands`, so the command processor stays the
only writer of events (gap-free sequences, one judge). Every effect is safe to repeat: command ids
are derived from (operation, step), a commit is looked up by its Operation-Id before committing
again, and content-identical commits never happen. So offsets are committed after the effects
(at least once), and a saga killed anywhere resumes from the log.
"""
from __future__ import annotations

import enum
import hashlib
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog
from confluent_kafka import Consumer, Message
from prometheus_client import Counter, Gauge, Histogram

import events
from commands import (
    Actor,
    CommandEnvelope,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    RecordServiceClaimReverted,
    RecordStepFailed,
    RecordStepTimedOut,
)
from commands.publisher import Publisher
from events import (
    Envelope,
    OperationCancelled,
    OperationStarted,
    ServiceClaimCommitted,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
)
from gitops import helm, layout, manifests
from gitops.committer import GitOpsCommitter
from gitops.errors import GitOpsError, InvalidChange, InvalidPath, RemoteRejected, WorkdirMismatch
from gitops.helm import HelmNotFoundError, RenderError
from gitops.manifests import ManifestError
from processors.deadletter import dead_letter
from runtime import kafka
from runtime.signing import Keyring, Signer, Unverified
from schemas.errors import PoisonMessage
from schemas.registry import EVENTS_SUBJECT, POP_STATUS_SUBJECT, Registry, Serde

SAGA_ACTOR = Actor("system:saga", ("system",))
STEP_NAMESPACE = uuid.UUID("8f4c2b1e-7d3a-4e55-9b61-2a0c9e7d4f10")

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

DEFAULT_TIMEOUTS = {"render": 120, "commit": 300, "pop-report": 1800}  # seconds


def parse_timeouts(text: str | None) -> dict[str, int]:
    """`render=120,commit=300,pop-report=1800,pop-report@lagos=3600` (any subset) over the
    defaults; `pop-report@<pop>` sets the wait for one PoP's reports."""
    timeouts = dict(DEFAULT_TIMEOUTS)
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        step, _, seconds = item.partition("=")
        known = step in DEFAULT_TIMEOUTS or (step.startswith("pop-report@") and len(step) > len("pop-report@"))
        if not known or not seconds.strip().isdigit() or int(seconds) <= 0:
            raise ValueError(f"DBAAS_SAGA_STEP_TIMEOUTS: {item!r} is not <step>=<seconds> with a step "
                             f"among {', '.join(DEFAULT_TIMEOUTS)} (or pop-report@<pop>) and a positive "
                             "whole number of seconds")
        timeouts[step] = int(seconds)
    return timeouts


def pop_report_timeout(timeouts: dict[str, int], pop: str) -> int:
    return timeouts.get(f"pop-report@{pop}", timeouts["pop-report"])

log = structlog.get_logger("saga")


@dataclass(frozen=True)
class SagaSettings:
    kafka: str
    registry_url: str
    gitops_remote: str
    workdir: Path
    events_topic: str = "dbaas.events"
    commands_topic: str = "dbaas.commands"
    pop_status_topic: str = "dbaas.pop.status"
    group_id: str = "dbaas-service-saga"
    metrics_port: int = 0
    timeouts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    signer: Signer | None = None  # the platform key its commands are signed with
    keyring: Path | None = None  # the PoPs' public keys, to verify their reports

    @classmethod
    def from_env(cls) -> "SagaSettings":
        env = os.environ
        state = Path(env.get("DBAAS_STATE_DIR", "/tmp/dbaas-saga"))
        signer = Signer.from_env()
        if signer is None:
            raise KeyError("DBAAS_SIGNING_KEY")
        return cls(env["DBAAS_KAFKA_BOOTSTRAP"], env["DBAAS_REGISTRY_URL"], env["DBAAS_GITOPS_REMOTE"],
                   state / "gitops-work", env.get("DBAAS_EVENTS_TOPIC", cls.events_topic),
                   env.get("DBAAS_COMMANDS_TOPIC", cls.commands_topic),
                   env.get("DBAAS_POP_STATUS_TOPIC", cls.pop_status_topic),
                   env.get("DBAAS_SAGA_GROUP", cls.group_id), int(env.get("DBAAS_METRICS_PORT", "0")),
                   parse_timeouts(env.get("DBAAS_SAGA_STEP_TIMEOUTS")), signer, Path(env["DBAAS_KEYRING"]))


def step_command_id(operation_id: str, step: str) -> str:
    """The same step of the same operation always has the same command id: the processor judges it once."""
    return str(uuid.uuid5(STEP_NAMESPACE, f"{operation_id}/{step}"))


def revert_operation_id(operation_id: str) -> str:
    """The Operation-Id of the commit that reverts `operation_id`'s: a UUID, so a PoP's report about
    it is a well-formed report about an operation no service runs (judged and ignored)."""
    return str(uuid.uuid5(STEP_NAMESPACE, f"{operation_id}/revert"))


@dataclass(frozen=True)
class Awaiting:
    """A committed operation waiting for its PoP's report until `deadline`."""

    tenant_id: str
    service_id: str
    correlation_id: str
    seconds: int
    deadline: datetime


class Deadlines:
    """The operations awaiting a PoP, folded from the event log: added on a commit that changed
    the repository, removed when the operation ends or is compensated. Idempotent per event, so
    reading events twice (the start-up scan, then the consumer) ends in the same place."""

    def __init__(self, timeouts: dict[str, int]):
        self.timeouts = timeouts
        self.awaiting: dict[str, Awaiting] = {}

    def observe(self, env: Envelope) -> None:
        match env.payload:
            case ServiceClaimCommitted(changed=True) as e:
                seconds = pop_report_timeout(self.timeouts, e.pop)
                self.awaiting[e.operation_id] = Awaiting(env.tenant_id, e.service_id, env.correlation_id,
                                                         seconds, env.occurred_at + timedelta(seconds=seconds))
            case ServiceReady() | ServiceFailed() | ServiceDeleted() | OperationCancelled(compensate=True) \
                    | ServiceClaimReverted() as e:
                self.awaiting.pop(e.operation_id, None)
        AWAITING.set(len(self.awaiting))

    def expired(self, now: datetime) -> list[tuple[str, Awaiting]]:
        due = [(op, a) for op, a in self.awaiting.items() if a.deadline <= now]
        for op, _ in due:
            del self.awaiting[op]
        AWAITING.set(len(self.awaiting))
        return due


class Verdict(enum.Enum):
    RETRY = "retry"  # transient: the same step may succeed later
    FAIL = "fail"  # permanent for this operation: fail it, move on
    HALT = "halt"  # the platform's own fault (or not known to be the operation's): raise


# Faults of the platform, not of one operation: every operation would fail the same way.
PLATFORM_FAULTS = (HelmNotFoundError, WorkdirMismatch, RemoteRejected)
# What a commit refuses because of this operation's change alone.
COMMIT_REFUSALS = (InvalidPath, InvalidChange, ManifestError)
REASON_MAX = 1000  # characters of a tool's message kept in a reason (helm can list many violations)
NEXT_STEP = {
    "render": "nothing was committed; send the request again with values the service chart accepts",
    "commit": "nothing was committed; the GitOps repository must be corrected before the request is sent again",
}
DOING = {"render": "rendered", "commit": "committed to GitOps"}


def classify(exc: Exception, step: str) -> Verdict:
    """What to do about `exc`, raised by `step` (render | commit) of an operation. A render is a
    pure function of the event and the chart, so whatever it raises that is neither transient nor
    the platform's fault will be raised again on every retry; a commit is the operation's fault
    only when git refuses its change as such (a path, a file/folder clash)."""
    if isinstance(exc, GitOpsError):
        if exc.transient:
            return Verdict.RETRY
        if isinstance(exc, PLATFORM_FAULTS):
            return Verdict.HALT
    elif isinstance(exc, OSError):
        return Verdict.RETRY
    if step == "render" or isinstance(exc, COMMIT_REFUSALS):
        return Verdict.FAIL
    return Verdict.HALT


def error_name(exc: Exception) -> str:
    """A stable name of the error, for metrics: a gitops error's `reason`, else its type."""
    return exc.reason if isinstance(exc, GitOpsError) else type(exc).__name__


def refusal_reason(exc: Exception, step: str) -> str:
    """Why `step` failed for good and what to do, for a person: the tool's own words (helm's
    message without its debugging hint), then the way forward. The same error gives the same
    reason, so a step failure reported again is the same command."""
    match exc:
        case RenderError(stderr=str() as output) | subprocess.CalledProcessError(stderr=str() as output) \
                if output.strip():
            detail = _one_line(output)
        case subprocess.CalledProcessError(stderr=bytes() as output) if output.strip():
            detail = _one_line(output.decode(errors="replace"))
        case _:
            detail = str(exc) or type(exc).__name__
    if len(detail) > REASON_MAX:
        detail = detail[:REASON_MAX] + "…"
    return f"the service's manifests could not be {DOING[step]}: {detail}; {NEXT_STEP[step]}"


def _one_line(output: str) -> str:
    """A tool's message on one line, without its debugging hint and its `Error: ` prefix."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and "--debug" not in line]
    return " ".join(lines).removeprefix("Error: ")


class CompensationRefused(Exception):
    """Git refused a revert for good (`classify`): retrying cannot end the compensation."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class StepTimedOut(Exception):
    """A render or commit retried past its step's time."""

    def __init__(self, step: str):
        super().__init__(step)
        self.step = step


def chart_values(e: OperationStarted, tenant: str) -> dict:
    return {"tenant": tenant, "serviceId": e.service_id, "name": e.name, "engine": e.engine,
            "engineVersion": e.engine_version, "pop": e.pop, "cpu": e.resources.cpu,
            "memoryGi": e.resources.memory_gb, "storageGi": e.resources.storage_gb,
            "replicas": e.resources.replicas, "deletionProtection": e.deletion_protection,
            "labels": dict(e.labels)}


class ServiceSaga:
    def __init__(self, settings: SagaSettings):
        self.settings = settings
        registry = Registry(settings.registry_url)
        self.events = Serde(registry, EVENTS_SUBJECT)
        self.reports = Serde(registry, POP_STATUS_SUBJECT)
        self.publisher = Publisher(settings.kafka, settings.registry_url, settings.commands_topic,
                                   signer=settings.signer)
        self.keyring = Keyring(settings.keyring)
        self.committer = GitOpsCommitter(settings.gitops_remote, settings.workdir, "dbaas saga",
                                         "saga@dbaas.local")
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka, "group.id": settings.group_id,
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })
        self.deadlines = Deadlines(settings.timeouts)
        self._deadline: float | None = None  # monotonic time by which the step being retried must end
        self._step = "render"

    def run(self, stop) -> None:
        self.committer.apply(layout.bootstrap_files(self.settings.gitops_remote), "Bootstrap the GitOps layout",
                             operation_id="bootstrap", correlation_id="bootstrap")
        self._scan_deadlines()
        self.consumer.subscribe([self.settings.events_topic, self.settings.pop_status_topic])
        log.info("started", remote=self.settings.gitops_remote, timeouts=self.settings.timeouts,
                 awaiting_pop=len(self.deadlines.awaiting))
        try:
            while not stop.is_set():
                for msg in kafka.messages(self.consumer.consume(100, timeout=0.2)):
                    self._handle_with_retries(msg, stop)
                    self.consumer.commit(message=msg, asynchronous=False)
                self._time_out_pop_reports()
        finally:
            self.consumer.close()
            self.publisher.close()
            log.info("stopped")

    def _scan_deadlines(self) -> None:
        """Fold the committed event log into the deadlines of operations awaiting a PoP."""
        consumer = kafka.reader(self.settings.kafka, f"{self.settings.group_id}-scan")
        try:
            for msg in kafka.read_to_end(consumer, kafka.whole_topic(consumer, self.settings.events_topic)):
                try:
                    self.deadlines.observe(events.from_avro(self.events.decode(msg.value())))
                except (PoisonMessage, events.EventError, TypeError, KeyError):
                    continue  # dead-lettered by the consumer loop when it reaches it
        finally:
            consumer.close()

    def _time_out_pop_reports(self) -> None:
        for operation_id, a in self.deadlines.expired(datetime.now(timezone.utc)):
            TIMEOUTS.labels("pop-report").inc()
            log.warning("no PoP report in time", operation_id=operation_id, service_id=a.service_id,
                        after_seconds=a.seconds)
            self.publisher.publish(CommandEnvelope(
                command_id=step_command_id(operation_id, "timeout/pop-report"), tenant_id=a.tenant_id,
                actor=SAGA_ACTOR, issued_at=datetime.now(timezone.utc), correlation_id=a.correlation_id,
                payload=RecordStepTimedOut(a.service_id, operation_id, "pop-report", a.seconds)))

    def _handle_with_retries(self, msg: Message, stop) -> None:
        delay = 0.5
        self._deadline = None
        while True:
            try:
                return self._handle(msg)
            except (GitOpsError, OSError) as exc:
                if classify(exc, self._step) is not Verdict.RETRY:
                    raise
                RETRIES.labels(type(exc).__name__).inc()
                if self._deadline is not None and time.monotonic() + delay > self._deadline:
                    return self._give_up(msg, exc)
                log.warning("transient failure, retrying", error=str(exc), retry_in=delay)
                if stop.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    def _give_up(self, msg: Message, exc: Exception) -> None:
        """The step being retried ran out of time: say so; the operation fails without a commit."""
        env = events.from_avro(self.events.decode(msg.value()))
        e = env.payload
        step = self._step
        TIMEOUTS.labels(step).inc()
        log.error("step did not finish in time; the operation fails", step=step, error=str(exc),
                  operation_id=e.operation_id)
        self._send(env, f"timeout/{step}", getattr(e, "action", "revert"),
                   RecordStepTimedOut(e.service_id, e.operation_id, step, self.settings.timeouts[step]))

    def _handle(self, msg: Message) -> None:
        try:
            if msg.topic() == self.settings.pop_status_topic:
                return self._report(msg)
            env = events.from_avro(self.events.decode(msg.value()))
        except (PoisonMessage, events.EventError, TypeError, KeyError) as exc:
            log.warning("undecodable input dead-lettered", topic=msg.topic(), reason=str(exc))
            dead_letter(self.publisher.producer, f"{msg.topic()}.dlq", msg, str(exc))
            return None
        self.deadlines.observe(env)
        match env.payload:
            case OperationStarted() as e:
                work = lambda: self._advance(env, e)  # noqa: E731
            case ServiceFailed(compensate=True) | OperationCancelled(compensate=True) as e:
                work = lambda: self._compensate(env, e.operation_id, e.service_id)  # noqa: E731
            case _:
                return None
        structlog.contextvars.bind_contextvars(correlation_id=env.correlation_id,
                                               operation_id=env.payload.operation_id)
        try:
            work()
        except CompensationRefused as refused:
            # Nothing can fail a compensation: the service's queue stays blocked until an operator
            # corrects the repository and replays the dead letter; every other service moves on.
            reason = f"the revert could not be committed to GitOps: {refused}"
            REFUSED_COMPENSATIONS.labels(error_name(refused.error)).inc()
            log.error("compensation refused for good; its event is dead-lettered", reason=reason,
                      error=error_name(refused.error))
            dead_letter(self.publisher.producer, f"{msg.topic()}.dlq", msg, reason, "compensation_refused")
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id", "operation_id")
        return None

    def _time_limit(self, env: Envelope, *steps: str) -> None:
        """Retries of this message must end by the event's time + the steps' timeouts."""
        allowed = sum(self.settings.timeouts[s] for s in steps)
        spent = (datetime.now(timezone.utc) - env.occurred_at).total_seconds()
        self._deadline = time.monotonic() + allowed - max(spent, 0.0)

    def _compensate(self, env: Envelope, operation_id: str, service_id: str) -> None:
        """Revert the operation's commit: every file it changed gets its content from before it.
        Retried without a time limit: a compensation must end, or the service's queue stays blocked."""
        revert_id = revert_operation_id(operation_id)
        sha = self.committer.find_commit(revert_id)
        if sha is None:
            original = self.committer.find_commit(operation_id)
            changes = self.committer.before(original) if original else {}
            try:
                result = self.committer.apply(changes, f"Revert operation {operation_id} of {env.tenant_id}",
                                              operation_id=revert_id, correlation_id=env.correlation_id) \
                    if changes else None
            except Exception as exc:
                if classify(exc, "commit") is not Verdict.FAIL:
                    raise
                raise CompensationRefused(exc) from exc
            sha = result.sha if result is not None and result.changed else None
            COMPENSATIONS.labels(str(sha is not None).lower()).inc()
        self._send(env, "revert", "revert", RecordServiceClaimReverted(service_id, operation_id, sha))
        log.info("operation compensated: its GitOps change is reverted", sha=sha)

    def _advance(self, env: Envelope, e: OperationStarted) -> None:
        started = time.perf_counter()
        self._step = "render"
        self._time_limit(env, "render")
        try:
            path, content = self._render(env, e)
        except Exception as exc:
            if classify(exc, "render") is not Verdict.FAIL:
                raise
            return self._fail_step(env, e, "render", exc)
        digest = hashlib.sha256((content or "").encode()).hexdigest()
        self._send(env, "render", e.action, RecordServiceClaimRendered(e.service_id, e.operation_id, digest))
        self._step = "commit"
        self._time_limit(env, "render", "commit")
        sha, changed = self.committer.find_commit(e.operation_id), True
        if sha is None:
            verb = "Remove" if content is None else "Apply"
            try:
                result = self.committer.apply({path: content}, f"{verb} {env.tenant_id}/{e.name} in {e.pop}",
                                              operation_id=e.operation_id, correlation_id=env.correlation_id)
            except Exception as exc:
                if classify(exc, "commit") is not Verdict.FAIL:
                    raise
                return self._fail_step(env, e, "commit", exc)
            sha, changed = result.sha or "", result.changed
        self._send(env, "commit", e.action,
                   RecordServiceClaimCommitted(e.service_id, e.operation_id, e.pop, path, sha, changed))
        STEP_SECONDS.observe(time.perf_counter() - started)
        log.info("operation committed, awaiting the PoP", path=path, sha=sha, action=e.action)

    @staticmethod
    def _render(env: Envelope, e: OperationStarted) -> tuple[str, str | None]:
        """The service's path in the repository and its manifests (None: remove them)."""
        path = layout.pop_service_path(env.tenant_id, e.pop, e.name)
        if e.action == "delete":
            return path, None
        docs = helm.render(helm.SERVICE_CHART, chart_values(e, env.tenant_id), release_name=e.name,
                           namespace=f"tenant-{env.tenant_id}")
        return path, manifests.dump_all(docs)

    def _fail_step(self, env: Envelope, e: OperationStarted, step: str, exc: Exception) -> None:
        """`step` will fail the same way on every retry: the operation fails with the reason, and the
        saga goes on with the next event (nothing was committed, so nothing is reverted)."""
        reason = refusal_reason(exc, step)
        FAILED_STEPS.labels(step, error_name(exc)).inc()
        log.error("step refused for good; the operation fails", step=step, error=error_name(exc),
                  reason=reason, tenant_id=env.tenant_id, service_id=e.service_id)
        self._send(env, f"failed/{step}", e.action, RecordStepFailed(e.service_id, e.operation_id, step, reason))

    def _send(self, env: Envelope, step: str, action: str, payload) -> None:
        operation_id = payload.operation_id
        self.publisher.publish(CommandEnvelope(
            command_id=step_command_id(operation_id, step), tenant_id=env.tenant_id, actor=SAGA_ACTOR,
            issued_at=datetime.now(timezone.utc), correlation_id=env.correlation_id, payload=payload,
            causation_id=env.event_id))
        STEPS.labels(step, action).inc()

    def _report(self, msg: Message) -> None:
        """Relay a PoP's report as `RecordPopReport`, once its signature shows which PoP sent it:
        the PoP named is the one whose key signed it, so a PoP reports only for itself (and
        `decide` checks the service runs there)."""
        r = self.reports.decode(msg.value())
        try:
            self.keyring.refresh()
            key = self.keyring.verify(msg.topic(), msg.key(), msg.value(), msg.headers())
            if key.kind != "pop" or key.pop != r["pop"]:
                raise Unverified(f'key {key.key_id!r} does not speak for PoP {r["pop"]!r}')
        except Unverified as exc:
            REJECTED_REPORTS.inc()
            log.warning("unverified PoP report dead-lettered", pop=r["pop"], reason=exc.reason)
            dead_letter(self.publisher.producer, f"{msg.topic()}.dlq", msg, exc.reason, "unauthenticated")
            return
        payload = RecordPopReport(r["service_id"], r["operation_id"], key.pop, r["phase"], r["endpoint"],
                                  r["reason"], r.get("credentials"))
        self.publisher.publish(CommandEnvelope(
            command_id=step_command_id(r["operation_id"], f"report/{r['report_id']}"), tenant_id=r["tenant_id"],
            actor=Actor(f"system:pop:{key.pop}", ("system",)), issued_at=datetime.now(timezone.utc),
            correlation_id=r["report_id"], payload=payload))
        REPORTS.labels(r["phase"]).inc()


def main() -> int:
    from runtime import process

    return process.main("saga", SagaSettings.from_env, lambda settings, stop: ServiceSaga(settings).run(stop))


if __name__ == "__main__":
    raise SystemExit(main())
