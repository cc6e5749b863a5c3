"""The service saga's policy: what to do about each event, PoP report, step result and tick.

`react(state, message) -> (state, effects)` decides; `processors.sagas.runner` acts. For every
`OperationStarted` the policy asks for a render, then a commit of what was rendered, and records
each step as a system command; for a `ServiceFailed`/`OperationCancelled` that asks for
compensation it asks for a revert and records it; it relays a PoP's report as `RecordPopReport`
when the report's key speaks for that PoP (else dead-letters it), and it keeps the deadline of
every committed operation awaiting its PoP, sending `RecordStepTimedOut` on the first tick past it.

The state is an immutable value: the steps in flight, by operation (several operations may be
rendered before the runner commits them together; each answer names its operation), and the
operations awaiting a PoP. Deadlines are folded from events only (`observe`),
so replaying the event log at start rebuilds them exactly.

Render and commit have a time budget counted from the event's time (`DBAAS_SAGA_STEP_TIMEOUTS`):
the policy puts the deadline into the effect, the runner retries transient failures until it and
then answers `StepTimedOut`. A revert has no deadline: a compensation must end.

Every effect is safe to repeat: step command ids are derived from (operation, step), a commit is
looked up by its `Operation-Id` trailer before it is made again (the runner's contract for
`Commit` and `Revert`).

Pure: no I/O, no clock, no random ids; time comes in the messages.
May import: the standard library, `events`, `commands.records` — never Kafka, git, helm,
subprocess, HTTP or SQL clients (an import-linter contract).
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal

from commands.records import (
    Actor,
    CommandEnvelope,
    RecordBackupCommitted,
    RecordBackupRendered,
    RecordBackupReport,
    RecordBackupReverted,
    RecordBackupStepFailed,
    RecordCdcCommitted,
    RecordCdcRendered,
    RecordCdcReport,
    RecordCdcStepFailed,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    RecordServiceClaimReverted,
    RecordStepFailed,
    RecordStepTimedOut,
)
from events import (
    BackupClaimCommitted,
    BackupCompleted,
    BackupDeleted,
    BackupDeletionRequested,
    BackupFailed,
    BackupRequested,
    CdcConnectorCommitted,
    CdcConnectorFailed,
    CdcConnectorRegistered,
    CdcDisabled,
    CdcDisableRequested,
    CdcEnableRequested,
    Envelope,
    OperationCancelled,
    OperationStarted,
    ServiceClaimCommitted,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
)

SAGA_ACTOR = Actor("system:saga", ("system",))
STEP_NAMESPACE = uuid.UUID("8f4c2b1e-7d3a-4e55-9b61-2a0c9e7d4f10")
# seconds; `backup-report`: how long the PoP may take to store a backup (or delete one);
# `cdc-report`: to register a connector and see it run (or remove it with its slot)
DEFAULT_TIMEOUTS = {"render": 120, "commit": 300, "pop-report": 1800, "backup-report": 3600, "cdc-report": 600}

Step = Literal["render", "commit", "revert"]


def step_command_id(operation_id: str, step: str) -> str:
    """The same step of the same operation always has the same command id: the processor judges it once."""
    return str(uuid.uuid5(STEP_NAMESPACE, f"{operation_id}/{step}"))


def revert_operation_id(operation_id: str) -> str:
    """The Operation-Id of the commit that reverts `operation_id`'s: a UUID, so a PoP's report about
    it is a well-formed report about an operation no service runs (judged and ignored)."""
    return str(uuid.uuid5(STEP_NAMESPACE, f"{operation_id}/revert"))


def pop_report_timeout(timeouts: Mapping[str, int], pop: str) -> int:
    return timeouts.get(f"pop-report@{pop}", timeouts["pop-report"])


# -- state -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Awaiting:
    """A committed operation waiting for its PoP's report until `deadline`."""

    tenant_id: str
    service_id: str
    correlation_id: str
    seconds: int
    deadline: datetime
    backup_id: str | None = None  # the operation is a backup's (or its deletion's)
    cdc: bool = False  # the operation is a CDC connector's (enabling or disabling)


@dataclass(frozen=True)
class InFlight:
    """The step the runner is carrying out for the event `env`; `path`/`content` once rendered."""

    env: Envelope
    step: Step
    path: str | None = None
    content: str | None = None

    @property
    def operation_id(self) -> str:
        return self.env.payload.operation_id


@dataclass(frozen=True)
class SagaState:
    timeouts: Mapping[str, int]
    awaiting: Mapping[str, Awaiting] = field(default_factory=lambda: MappingProxyType({}))
    # the steps the runner is carrying out, by operation: several operations may be between their
    # render and their commit at once (the runner commits what a batch of input rendered together)
    in_flight: Mapping[str, InFlight] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def start(cls, timeouts: Mapping[str, int] | None = None) -> SagaState:
        return cls(MappingProxyType(dict(timeouts or DEFAULT_TIMEOUTS)))


# -- messages (what happened) ----------------------------------------------------------------
@dataclass(frozen=True)
class EventArrived:
    """An event read from `dbaas.events` by the consumer; `now` is when."""

    env: Envelope
    now: datetime


@dataclass(frozen=True)
class EventReplayed:
    """An event read by the start-up scan of the log: it rebuilds deadlines and asks for nothing."""

    env: Envelope


@dataclass(frozen=True)
class PopReport:
    """A report from `dbaas.pop.status`, with what its signature proved: the key's id, kind and
    PoP, or why no trusted key signed it (`unverified`)."""

    tenant_id: str
    service_id: str
    operation_id: str
    pop: str
    phase: str
    endpoint: str | None
    reason: str | None
    credentials: str | None
    report_id: str
    now: datetime
    key_id: str | None = None
    key_kind: str | None = None
    key_pop: str | None = None
    unverified: str | None = None
    backup_id: str | None = None  # the report is about this backup (phase Completed | Failed | Deleted)
    details: str | None = None  # JSON of a completed backup
    connector: str | None = None  # the report is about the service's CDC connector (Running | Failed | Removed)


@dataclass(frozen=True)
class Undecodable:
    """An input message that is no event or report: `reason` says why."""

    reason: str


@dataclass(frozen=True)
class Rendered:
    operation_id: str
    path: str
    content: str | None  # None: the service's file is removed
    now: datetime
    # other files the same commit writes (None: removes), e.g. a Kubernetes PoP's Argo CD Application
    also: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Committed:
    operation_id: str
    sha: str
    changed: bool
    now: datetime


@dataclass(frozen=True)
class Reverted:
    operation_id: str
    sha: str | None  # None: nothing to revert, or the repository already held the content
    now: datetime


@dataclass(frozen=True)
class StepRefused:
    """The step in flight failed for good (render | commit | revert); `reason` for a person."""

    operation_id: str
    step: Step
    reason: str
    now: datetime


@dataclass(frozen=True)
class StepTimedOut:
    """Transient failures of the step in flight outlasted its deadline."""

    operation_id: str
    step: Step
    now: datetime


@dataclass(frozen=True)
class Tick:
    now: datetime


Message = (EventArrived | EventReplayed | PopReport | Undecodable | Rendered | Committed | Reverted
           | StepRefused | StepTimedOut | Tick)


# -- effects (what to do) --------------------------------------------------------------------
@dataclass(frozen=True)
class Render:
    """Render the service's manifests (action delete: plan the file's removal) by `deadline`;
    answer `Rendered`, `StepRefused` or `StepTimedOut`."""

    tenant_id: str
    started: OperationStarted
    deadline: datetime


@dataclass(frozen=True)
class RenderBackup:
    """Render a backup's claim (a deletion: plan the file's removal) by `deadline`; answer
    `Rendered`, `StepRefused` or `StepTimedOut`."""

    tenant_id: str
    request: BackupRequested | BackupDeletionRequested
    deadline: datetime


@dataclass(frozen=True)
class RenderConnector:
    """Render a service's CDC connector (its removal: plan the file's removal) by `deadline`;
    answer `Rendered`, `StepRefused` or `StepTimedOut`."""

    tenant_id: str
    request: CdcEnableRequested | CdcDisableRequested
    deadline: datetime


@dataclass(frozen=True)
class Commit:
    """Make the repository hold `content` at `path` (None: no file) in a commit with these
    trailers — unless a commit with this `operation_id` exists already — by `deadline`; answer
    `Committed`, `StepRefused` or `StepTimedOut`."""

    path: str
    content: str | None
    message: str
    operation_id: str
    correlation_id: str
    deadline: datetime
    also: tuple[tuple[str, str | None], ...] = ()  # other files of the same commit (None: removed)


@dataclass(frozen=True)
class Revert:
    """Give every file `operation_id`'s commit changed its content from before it, in a commit whose
    Operation-Id is `revert_id` — unless that commit exists already; no deadline. Answer `Reverted`
    or `StepRefused`."""

    operation_id: str
    revert_id: str
    message: str
    correlation_id: str


@dataclass(frozen=True)
class Send:
    """Publish a signed command on `dbaas.commands`; `step`/`action` label it for metrics."""

    command: CommandEnvelope
    step: str
    action: str


@dataclass(frozen=True)
class DeadLetter:
    """Copy the input message being handled to its topic's `.dlq`, with the reason and a code."""

    reason: str
    code: str | None = None


Effect = Render | RenderBackup | RenderConnector | Commit | Revert | Send | DeadLetter
Reaction = tuple[SagaState, list[Effect]]


# -- the policy ------------------------------------------------------------------------------
def react(state: SagaState, message: Message) -> Reaction:
    match message:
        case EventArrived(env=env, now=now):
            return _event(observe(state, env), env, now)
        case EventReplayed(env=env):
            return observe(state, env), []
        case PopReport():
            return state, [_relay(message)]
        case Undecodable(reason=reason):
            return state, [DeadLetter(reason)]
        case Tick(now=now):
            return _expire(state, now)
        case Rendered() | Committed() | Reverted() | StepRefused() | StepTimedOut():
            flight = state.in_flight.get(message.operation_id)
            if flight is None:
                return state, []  # no step of that operation is in flight: a stale answer
            return _result(state, flight, message)
    raise TypeError(f"not a message of the service saga: {message!r}")


def without(state: SagaState, leaving: Callable[[str], bool]) -> SagaState:
    """`state` without the operations of the organizations `leaving` says are no longer this saga
    instance's (their partition went to another instance, which rebuilds them from the log)."""
    return replace(state,
                   awaiting=MappingProxyType({op: a for op, a in state.awaiting.items() if not leaving(a.tenant_id)}),
                   in_flight=MappingProxyType({op: f for op, f in state.in_flight.items()
                                               if not leaving(f.env.tenant_id)}))


def observe(state: SagaState, env: Envelope) -> SagaState:
    """Fold one event into the deadlines: added on a commit that changed the repository, removed
    when the operation ends or is compensated. Idempotent per event."""
    match env.payload:
        case ServiceClaimCommitted(changed=True) as e:
            seconds = pop_report_timeout(state.timeouts, e.pop)
            waiting = Awaiting(env.tenant_id, e.service_id, env.correlation_id, seconds,
                               env.occurred_at + timedelta(seconds=seconds))
            return replace(state, awaiting=MappingProxyType({**state.awaiting, e.operation_id: waiting}))
        case BackupClaimCommitted(changed=True) as e:
            seconds = state.timeouts.get("backup-report", DEFAULT_TIMEOUTS["backup-report"])
            waiting = Awaiting(env.tenant_id, "", env.correlation_id, seconds,
                               env.occurred_at + timedelta(seconds=seconds), backup_id=e.backup_id)
            return replace(state, awaiting=MappingProxyType({**state.awaiting, e.operation_id: waiting}))
        case CdcConnectorCommitted(changed=True) as e:
            seconds = state.timeouts.get("cdc-report", DEFAULT_TIMEOUTS["cdc-report"])
            waiting = Awaiting(env.tenant_id, e.service_id, env.correlation_id, seconds,
                               env.occurred_at + timedelta(seconds=seconds), cdc=True)
            return replace(state, awaiting=MappingProxyType({**state.awaiting, e.operation_id: waiting}))
        case ServiceReady() | ServiceFailed() | ServiceDeleted() | OperationCancelled(compensate=True) \
                | ServiceClaimReverted() | BackupCompleted() | BackupFailed() | BackupDeleted() \
                | CdcConnectorRegistered() | CdcConnectorFailed() | CdcDisabled() as e \
                if e.operation_id in state.awaiting:
            rest = {op: a for op, a in state.awaiting.items() if op != e.operation_id}
            return replace(state, awaiting=MappingProxyType(rest))
    return state


def _event(state: SagaState, env: Envelope, now: datetime) -> Reaction:
    match env.payload:
        case OperationStarted() as e:
            deadline = env.occurred_at + timedelta(seconds=state.timeouts["render"])
            return _flying(state, InFlight(env, "render")), [Render(env.tenant_id, e, deadline)]
        case BackupRequested() | BackupDeletionRequested() as e:
            deadline = env.occurred_at + timedelta(seconds=state.timeouts["render"])
            return _flying(state, InFlight(env, "render")), [RenderBackup(env.tenant_id, e, deadline)]
        case CdcEnableRequested() | CdcDisableRequested() as e:
            deadline = env.occurred_at + timedelta(seconds=state.timeouts["render"])
            return (_flying(state, InFlight(env, "render")),
                    [RenderConnector(env.tenant_id, e, deadline)])
        case ServiceFailed(compensate=True) | OperationCancelled(compensate=True) | BackupFailed(compensate=True) as e:
            revert = Revert(e.operation_id, revert_operation_id(e.operation_id),
                            f"Revert operation {e.operation_id} of {env.tenant_id}", env.correlation_id)
            return _flying(state, InFlight(env, "revert")), [revert]
    return state, []


def _backup_result(state: SagaState, flight: InFlight, message: Message) -> Reaction:
    """A step of a backup operation (or a backup's deletion) answered: record it, as for services."""
    env = flight.env
    e = env.payload
    action = "backup" if isinstance(e, BackupRequested) else "delete-backup"
    done = _landed(state, flight)
    match message:
        case Rendered(path=path, content=content, now=now, also=also) if flight.step == "render":
            digest = hashlib.sha256((content or "").encode()).hexdigest()
            what = (f"Back up {env.tenant_id}/{e.service_name} in {e.pop}" if isinstance(e, BackupRequested)
                    else f"Delete backup {e.backup_id} of {env.tenant_id} in {e.pop}")
            deadline = env.occurred_at + timedelta(seconds=state.timeouts["render"] + state.timeouts["commit"])
            commit = Commit(path, content, what, e.operation_id, env.correlation_id, deadline, also)
            return (_flying(state, replace(flight, step="commit", path=path, content=content)),
                    [_send(env, "render", action, RecordBackupRendered(e.backup_id, e.operation_id, digest), now),
                     commit])
        case Committed(sha=sha, changed=changed, now=now) if flight.step == "commit":
            recorded = RecordBackupCommitted(e.backup_id, e.operation_id, flight.path or "", sha, changed)
            return done, [_send(env, "commit", action, recorded, now)]
        case Reverted(sha=sha, now=now) if flight.step == "revert":  # the PoP removes what it stored
            return done, [_send(env, "revert", "revert", RecordBackupReverted(e.backup_id, e.operation_id, sha), now)]
        case StepRefused(step="revert", reason=reason) if flight.step == "revert":
            return done, [DeadLetter(f"the revert could not be committed to GitOps: {reason}",
                                     "compensation_refused")]
        case StepRefused(step=step, reason=reason, now=now) if step == flight.step:
            return done, [_send(env, f"failed/{step}", action,
                                RecordBackupStepFailed(e.backup_id, e.operation_id, step, reason, "failed"), now)]
        case StepTimedOut(step=step, now=now) if step == flight.step and step != "revert":
            reason = f"step {step} did not finish within {state.timeouts[step]} s"
            return done, [_send(env, f"timeout/{step}", action,
                                RecordBackupStepFailed(e.backup_id, e.operation_id, step, reason, "timed_out"), now)]
    return state, []


def _cdc_result(state: SagaState, flight: InFlight, message: Message) -> Reaction:
    """A step of a CDC operation answered: record it, as for services (no compensation: a failed
    enabling leaves the connector's file for a disabling to remove, with what the PoP set up)."""
    env = flight.env
    e = env.payload
    action = "enable-cdc" if isinstance(e, CdcEnableRequested) else "disable-cdc"
    done = _landed(state, flight)
    match message:
        case Rendered(path=path, content=content, now=now) if flight.step == "render":
            digest = hashlib.sha256((content or "").encode()).hexdigest()
            verb = "Enable" if content is not None else "Disable"
            deadline = env.occurred_at + timedelta(seconds=state.timeouts["render"] + state.timeouts["commit"])
            commit = Commit(path, content, f"{verb} CDC of {env.tenant_id}/{e.service_name} in {e.pop}",
                            e.operation_id, env.correlation_id, deadline)
            return (_flying(state, replace(flight, step="commit", path=path, content=content)),
                    [_send(env, "render", action, RecordCdcRendered(e.service_id, e.operation_id, digest), now),
                     commit])
        case Committed(sha=sha, changed=changed, now=now) if flight.step == "commit":
            recorded = RecordCdcCommitted(e.service_id, e.operation_id, flight.path or "", sha, changed)
            return done, [_send(env, "commit", action, recorded, now)]
        case StepRefused(step=step, reason=reason, now=now) if step == flight.step:
            return done, [_send(env, f"failed/{step}", action,
                                RecordCdcStepFailed(e.service_id, e.operation_id, step, reason, "failed"), now)]
        case StepTimedOut(step=step, now=now) if step == flight.step:
            reason = f"step {step} did not finish within {state.timeouts[step]} s"
            return done, [_send(env, f"timeout/{step}", action,
                                RecordCdcStepFailed(e.service_id, e.operation_id, step, reason, "timed_out"), now)]
    return state, []


def _result(state: SagaState, flight: InFlight, message: Message) -> Reaction:
    env = flight.env
    e = env.payload
    if hasattr(e, "backup_id"):
        return _backup_result(state, flight, message)
    if isinstance(e, CdcEnableRequested | CdcDisableRequested):
        return _cdc_result(state, flight, message)
    action = getattr(e, "action", "revert")
    done = _landed(state, flight)
    match message:
        case Rendered(path=path, content=content, now=now, also=also) if flight.step == "render":
            digest = hashlib.sha256((content or "").encode()).hexdigest()
            verb = "Remove" if content is None else "Apply"
            deadline = env.occurred_at + timedelta(seconds=state.timeouts["render"] + state.timeouts["commit"])
            commit = Commit(path, content, f"{verb} {env.tenant_id}/{e.name} in {e.pop}", e.operation_id,
                            env.correlation_id, deadline, also)
            return (_flying(state, replace(flight, step="commit", path=path, content=content)),
                    [_send(env, "render", action, RecordServiceClaimRendered(e.service_id, e.operation_id, digest),
                           now), commit])
        case Committed(sha=sha, changed=changed, now=now) if flight.step == "commit":
            recorded = RecordServiceClaimCommitted(e.service_id, e.operation_id, e.pop, flight.path or "", sha,
                                                   changed)
            return done, [_send(env, "commit", action, recorded, now)]
        case Reverted(sha=sha, now=now) if flight.step == "revert":
            return done, [_send(env, "revert", "revert", RecordServiceClaimReverted(e.service_id, e.operation_id,
                                                                                    sha), now)]
        case StepRefused(step="revert", reason=reason) if flight.step == "revert":
            # Nothing can fail a compensation: the service's queue stays blocked until an operator
            # corrects the repository and replays the dead letter; every other service moves on.
            return done, [DeadLetter(f"the revert could not be committed to GitOps: {reason}",
                                     "compensation_refused")]
        case StepRefused(step=step, reason=reason, now=now) if step == flight.step:
            return done, [_send(env, f"failed/{step}", action,
                                RecordStepFailed(e.service_id, e.operation_id, step, reason), now)]
        case StepTimedOut(step=step, now=now) if step == flight.step and step != "revert":
            return done, [_send(env, f"timeout/{step}", action,
                                RecordStepTimedOut(e.service_id, e.operation_id, step, state.timeouts[step]), now)]
    return state, []  # an answer about another step than the one in flight changes nothing


def _flying(state: SagaState, flight: InFlight) -> SagaState:
    """`state` with `flight` as its operation's step in flight."""
    return replace(state, in_flight=MappingProxyType({**state.in_flight, flight.operation_id: flight}))


def _landed(state: SagaState, flight: InFlight) -> SagaState:
    """`state` without a step in flight for `flight`'s operation."""
    rest = {op: f for op, f in state.in_flight.items() if op != flight.operation_id}
    return replace(state, in_flight=MappingProxyType(rest))


def _send(env: Envelope, step: str, action: str, payload, now: datetime) -> Send:
    return Send(CommandEnvelope(
        command_id=step_command_id(payload.operation_id, step), tenant_id=env.tenant_id, actor=SAGA_ACTOR,
        issued_at=now, correlation_id=env.correlation_id, payload=payload, causation_id=env.event_id),
        step, action)


def _expire(state: SagaState, now: datetime) -> Reaction:
    due = [(op, a) for op, a in state.awaiting.items() if a.deadline <= now]
    if not due:
        return state, []
    rest = {op: a for op, a in state.awaiting.items() if a.deadline > now}
    sends: list[Effect] = [Send(CommandEnvelope(
        command_id=step_command_id(op, "timeout/pop-report"), tenant_id=a.tenant_id, actor=SAGA_ACTOR,
        issued_at=now, correlation_id=a.correlation_id,
        payload=_report_timed_out(op, a)), "timeout/pop-report", "pop-report")
        for op, a in due]
    return replace(state, awaiting=MappingProxyType(rest)), sends


def _report_timed_out(op: str, a: Awaiting) -> RecordStepTimedOut | RecordBackupStepFailed | RecordCdcStepFailed:
    if a.cdc:
        return RecordCdcStepFailed(a.service_id, op, "pop-report", f"the PoP did not report within {a.seconds} s",
                                   "timed_out")
    if a.backup_id is None:
        return RecordStepTimedOut(a.service_id, op, "pop-report", a.seconds)
    return RecordBackupStepFailed(a.backup_id, op, "pop-report", f"the PoP did not report within {a.seconds} s",
                                  "timed_out")


def _relay(r: PopReport) -> Effect:
    """A PoP reports only for itself: the PoP named is the one whose key signed the report (and
    `decide` checks the service runs there)."""
    if r.unverified is not None:
        return DeadLetter(r.unverified, "unauthenticated")
    if r.key_kind != "pop" or r.key_pop != r.pop:
        return DeadLetter(f"key {r.key_id!r} does not speak for PoP {r.pop!r}", "unauthenticated")
    payload: RecordPopReport | RecordBackupReport | RecordCdcReport
    if r.connector is not None:
        payload = RecordCdcReport(r.service_id, r.operation_id, r.pop, r.phase, r.connector, r.reason)
    elif r.backup_id is not None:
        payload = RecordBackupReport(r.backup_id, r.operation_id, r.pop, r.phase, r.reason, r.details)
    else:
        payload = RecordPopReport(r.service_id, r.operation_id, r.pop, r.phase, r.endpoint, r.reason, r.credentials)
    return Send(CommandEnvelope(
        command_id=step_command_id(r.operation_id, f"report/{r.report_id}"), tenant_id=r.tenant_id,
        actor=Actor(f"system:pop:{r.pop}", ("system",)), issued_at=r.now, correlation_id=r.report_id,
        payload=payload), "report", r.phase)
