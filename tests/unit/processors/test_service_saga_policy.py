"""The service saga as a policy: every step, timeout, cancellation and compensation path driven
through `react` (given a state and a message, then these effects and this state), and a few
through the runner with fakes of its ports (git, helm, the command sink, dead letters, the
keyring, the clock). No broker, no git, no helm."""
from __future__ import annotations

import hashlib
import pickle
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from commands.records import (
    Actor,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    RecordServiceClaimReverted,
    RecordStepFailed,
    RecordStepTimedOut,
)
from events import (
    Envelope,
    OperationCancelled,
    OperationStarted,
    Resources,
    ServiceClaimCommitted,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
)
from gitops.errors import InvalidChange, PushConflict, RemoteRejected
from gitops.helm import RenderError
from processors.sagas.runner import SagaRunner
from processors.sagas.service import (
    SAGA_ACTOR,
    Awaiting,
    Commit,
    Committed,
    DeadLetter,
    EventArrived,
    EventReplayed,
    InFlight,
    PopReport,
    Render,
    Rendered,
    Revert,
    Reverted,
    SagaState,
    Send,
    StepRefused,
    StepTimedOut,
    Tick,
    Undecodable,
    react,
    revert_operation_id,
    step_command_id,
)
from runtime.signing import Keyring, Signer, TrustedKey
from schemas import PoisonMessage

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OP, SVC, TENANT, CORR = "op-1", "svc-1", "acme", "corr-1"
TIMEOUTS = {"render": 120, "commit": 300, "pop-report": 1800, "pop-report@lagos": 3600}
PATH = "tenants/acme/frankfurt/orders.yaml"
MANIFESTS = "kind: ServiceClaim\n"


def env(payload, at: datetime = T0, event_id: str = "ev-1", tenant: str = TENANT, corr: str = CORR) -> Envelope:
    return Envelope(event_id, tenant, "service", SVC, 3, at, "cmd-1", corr, None, payload)


def started(action: str = "apply", op: str = OP, pop: str = "frankfurt", name: str = "orders",
            service: str = SVC) -> OperationStarted:
    return OperationStarted(op, service, action, name, "yugabyte", "2024.2", pop, "small", Resources(1.0, 2, 10, 1))


def fresh() -> SagaState:
    return SagaState.start(TIMEOUTS)


def sent(effects) -> list:
    return [e.command.payload for e in effects if isinstance(e, Send)]


def run(state: SagaState, *messages):
    """Feed messages in turn; the last state and every effect."""
    effects = []
    for message in messages:
        state, more = react(state, message)
        effects += more
    return state, effects


# -- steps of an operation -------------------------------------------------------------------
def test_a_started_operation_asks_for_a_render_due_by_the_events_time_plus_the_render_timeout():
    state, effects = react(fresh(), EventArrived(env(started()), T0 + timedelta(seconds=5)))
    assert effects == [Render(TENANT, started(), T0 + timedelta(seconds=120))]
    assert state.in_flight == {OP: InFlight(env(started()), "render")}


def test_a_render_is_recorded_then_committed_with_the_operations_trailers_and_a_longer_deadline():
    state, _ = react(fresh(), EventArrived(env(started()), T0))
    now = T0 + timedelta(seconds=1)
    state, effects = react(state, Rendered(OP, PATH, MANIFESTS, now))
    record, commit = effects
    assert record == Send(replace(record.command, payload=RecordServiceClaimRendered(
        SVC, OP, hashlib.sha256(MANIFESTS.encode()).hexdigest())), "render", "apply")
    c = record.command
    assert (c.command_id, c.tenant_id, c.actor, c.issued_at, c.correlation_id, c.causation_id) == (
        step_command_id(OP, "render"), TENANT, SAGA_ACTOR, now, CORR, "ev-1")
    assert commit == Commit(PATH, MANIFESTS, "Apply acme/orders in frankfurt", OP, CORR, T0 + timedelta(seconds=420))
    assert state.in_flight == {OP: InFlight(env(started()), "commit", PATH, MANIFESTS)}


def test_a_commit_is_recorded_with_its_sha_and_ends_the_step():
    state, effects = run(fresh(), EventArrived(env(started()), T0), Rendered(OP, PATH, MANIFESTS, T0),
                         Committed(OP, "abc", True, T0))
    assert sent(effects)[-1] == RecordServiceClaimCommitted(SVC, OP, "frankfurt", PATH, "abc", True)
    assert effects[-1].command.command_id == step_command_id(OP, "commit")
    assert not state.in_flight


def test_a_delete_removes_the_file_and_records_the_digest_of_nothing():
    _, effects = run(fresh(), EventArrived(env(started("delete")), T0), Rendered(OP, PATH, None, T0))
    assert sent(effects) == [RecordServiceClaimRendered(SVC, OP, hashlib.sha256(b"").hexdigest())]
    assert effects[-1] == Commit(PATH, None, "Remove acme/orders in frankfurt", OP, CORR, T0 + timedelta(seconds=420))
    assert effects[1].action == "delete"


def test_a_commit_that_changed_nothing_is_recorded_as_such():
    _, effects = run(fresh(), EventArrived(env(started()), T0), Rendered(OP, PATH, MANIFESTS, T0),
                     Committed(OP, "tip", False, T0))
    assert sent(effects)[-1] == RecordServiceClaimCommitted(SVC, OP, "frankfurt", PATH, "tip", False)


@pytest.mark.parametrize("step, before", [
    ("render", ()),
    ("commit", (Rendered(OP, PATH, MANIFESTS, T0),)),
], ids=["the chart refuses the values", "git refuses the change"])
def test_a_step_refused_for_good_fails_the_operation_with_the_reason(step, before):
    state, _ = run(fresh(), EventArrived(env(started()), T0), *before)
    state, effects = react(state, StepRefused(OP, step, "the reason", T0))
    assert sent(effects) == [RecordStepFailed(SVC, OP, step, "the reason")] and len(effects) == 1
    assert effects[-1].command.command_id == step_command_id(OP, f"failed/{step}")
    assert not state.in_flight


@pytest.mark.parametrize("step, before, seconds", [
    ("render", (), 120),
    ("commit", (Rendered(OP, PATH, MANIFESTS, T0),), 300),
], ids=["render ran out of time", "commit ran out of time"])
def test_a_step_out_of_time_times_the_operation_out(step, before, seconds):
    state, effects = run(fresh(), EventArrived(env(started()), T0), *before, StepTimedOut(OP, step, T0))
    assert sent(effects)[-1] == RecordStepTimedOut(SVC, OP, step, seconds)
    assert effects[-1].command.command_id == step_command_id(OP, f"timeout/{step}")
    assert not state.in_flight


@pytest.mark.parametrize("answer, reason", [
    (Committed(OP, "abc", True, T0), "a commit answered while the render is in flight"),
    (Rendered("op-other", PATH, MANIFESTS, T0), "an answer about another operation"),
    (StepRefused(OP, "commit", "x", T0), "a refusal of another step"),
    (StepTimedOut(OP, "commit", T0), "a timeout of another step"),
    (Reverted(OP, None, T0), "a revert answered while rendering"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_stale_answer_changes_nothing(answer, reason):
    state, _ = react(fresh(), EventArrived(env(started()), T0))
    assert react(state, answer) == (state, []), reason


def test_an_answer_with_nothing_in_flight_changes_nothing():
    assert react(fresh(), Committed(OP, "abc", True, T0)) == (fresh(), [])


@pytest.mark.parametrize("payload", [
    ServiceReady(OP, SVC, "h:1"), ServiceDeleted(OP, SVC), ServiceFailed(OP, SVC, "no", compensate=False),
    OperationCancelled(OP, SVC, compensate=False, status="Ready"),
    ServiceClaimCommitted(OP, SVC, "frankfurt", PATH, "abc", changed=False),
], ids=["ready", "deleted", "failed-without-compensation", "dropped-from-the-queue", "unchanged-commit"])
def test_events_the_saga_does_nothing_about(payload):
    state, effects = react(fresh(), EventArrived(env(payload), T0))
    assert (state, effects) == (fresh(), [])


# -- deadlines of operations awaiting their PoP ----------------------------------------------
def committed(op: str = OP, pop: str = "frankfurt", at: datetime = T0, tenant: str = TENANT) -> Envelope:
    return env(ServiceClaimCommitted(op, SVC, pop, PATH, "abc", True), at, tenant=tenant)


def test_a_commit_that_changed_the_repository_awaits_its_pop_until_commit_time_plus_its_timeout():
    state, effects = react(fresh(), EventArrived(committed(), T0 + timedelta(seconds=2)))
    assert effects == []
    assert dict(state.awaiting) == {OP: Awaiting(TENANT, SVC, CORR, 1800, T0 + timedelta(seconds=1800))}


def test_a_pop_with_a_timeout_of_its_own_gets_it():
    state, _ = react(fresh(), EventArrived(committed(pop="lagos"), T0))
    assert state.awaiting[OP].deadline == T0 + timedelta(seconds=3600)


def test_no_report_by_the_deadline_times_the_operation_out_once():
    state, _ = react(fresh(), EventArrived(committed(), T0))
    assert react(state, Tick(T0 + timedelta(seconds=1799))) == (state, [])
    late = T0 + timedelta(seconds=1800)
    state, effects = react(state, Tick(late))
    assert sent(effects) == [RecordStepTimedOut(SVC, OP, "pop-report", 1800)]
    c = effects[0].command
    assert (c.command_id, c.tenant_id, c.correlation_id, c.issued_at, c.actor) == (
        step_command_id(OP, "timeout/pop-report"), TENANT, CORR, late, SAGA_ACTOR)
    assert dict(state.awaiting) == {}
    assert react(state, Tick(late + timedelta(seconds=1))) == (state, [])


def test_only_the_due_operations_time_out():
    state, _ = run(fresh(), EventArrived(committed("op-a", at=T0), T0),
                   EventArrived(committed("op-b", at=T0 + timedelta(seconds=600)), T0))
    state, effects = react(state, Tick(T0 + timedelta(seconds=1900)))
    assert [p.operation_id for p in sent(effects)] == ["op-a"]
    assert list(state.awaiting) == ["op-b"]


@pytest.mark.parametrize("payload", [
    ServiceReady(OP, SVC, "h:1"), ServiceDeleted(OP, SVC), ServiceFailed(OP, SVC, "pop said no"),
    ServiceFailed(OP, SVC, "pop said no", compensate=True),
    OperationCancelled(OP, SVC, compensate=True, status="Ready"), ServiceClaimReverted(OP, SVC, "def", status="Ready"),
], ids=["ready", "deleted", "failed", "failed-compensated", "cancelled-compensated", "reverted"])
def test_an_operation_that_ends_or_is_compensated_no_longer_awaits_its_pop(payload):
    state, _ = run(fresh(), EventArrived(committed(), T0), EventArrived(env(payload), T0))
    assert dict(state.awaiting) == {}
    assert sent(react(state, Tick(T0 + timedelta(days=1)))[1]) == []


def test_the_same_operation_ids_of_two_tenants_never_mix():
    state, _ = run(fresh(), EventArrived(committed("op-x", tenant="acme"), T0),
                   EventArrived(committed("op-y", tenant="globex"), T0))
    _, effects = react(state, Tick(T0 + timedelta(hours=1)))
    assert {(e.command.tenant_id, e.command.payload.operation_id) for e in effects} == {
        ("acme", "op-x"), ("globex", "op-y")}


def test_replaying_the_log_rebuilds_deadlines_and_asks_for_nothing():
    log = [env(started()), committed(), env(started("apply", "op-2")), env(ServiceFailed("op-0", SVC, "x", True))]
    state, effects = run(fresh(), *(EventReplayed(e) for e in log))
    assert effects == [] and not state.in_flight
    assert list(state.awaiting) == [OP]
    # The consumer then reads the same commit again: nothing changes.
    assert react(state, EventArrived(committed(), T0)) == (state, [])


def test_state_is_an_immutable_value():
    state = fresh()
    after, _ = react(state, EventArrived(committed(), T0))
    assert dict(state.awaiting) == {} and OP in after.awaiting
    with pytest.raises(TypeError):
        after.awaiting["x"] = None  # type: ignore[index]
    with pytest.raises(AttributeError):
        after.in_flight = None  # type: ignore[misc]


def test_the_policy_is_deterministic():
    messages = [EventArrived(env(started()), T0), Rendered(OP, PATH, MANIFESTS, T0), Committed(OP, "a", True, T0)]
    assert run(fresh(), *messages) == run(fresh(), *messages)


# -- compensation and cancellation -----------------------------------------------------------
@pytest.mark.parametrize("payload", [
    ServiceFailed(OP, SVC, "pop said no", compensate=True),
    ServiceFailed(OP, SVC, "no report in time", compensate=True, code="timed_out"),
    OperationCancelled(OP, SVC, compensate=True, status="Ready"),
], ids=["pop-failed", "pop-report-timed-out", "cancelled-awaiting-its-pop"])
def test_a_compensated_operation_is_reverted_then_recorded(payload):
    state, effects = react(fresh(), EventArrived(env(payload), T0))
    assert effects == [Revert(OP, revert_operation_id(OP), f"Revert operation {OP} of {TENANT}", CORR)]
    state, effects = react(state, Reverted(OP, "def", T0))
    assert effects == [Send(replace(effects[0].command, payload=RecordServiceClaimReverted(SVC, OP, "def")),
                            "revert", "revert")]
    assert effects[0].command.command_id == step_command_id(OP, "revert")
    assert not state.in_flight


def test_a_revert_that_changed_nothing_is_recorded_without_a_sha():
    _, effects = run(fresh(), EventArrived(env(OperationCancelled(OP, SVC, True, "Ready")), T0), Reverted(OP, None, T0))
    assert sent(effects) == [RecordServiceClaimReverted(SVC, OP, None)]


def test_a_revert_refused_for_good_dead_letters_its_event():
    state, effects = run(fresh(), EventArrived(env(ServiceFailed(OP, SVC, "x", True)), T0),
                         StepRefused(OP, "revert", "a folder of that name exists", T0))
    assert effects[-1] == DeadLetter("the revert could not be committed to GitOps: a folder of that name exists",
                                     "compensation_refused")
    assert sent(effects) == [] and not state.in_flight


def test_a_revert_never_times_out():
    state, _ = react(fresh(), EventArrived(env(ServiceFailed(OP, SVC, "x", True)), T0))
    assert react(state, StepTimedOut(OP, "revert", T0)) == (state, [])


# -- PoP reports -----------------------------------------------------------------------------
def report(**overrides) -> PopReport:
    base = PopReport(TENANT, SVC, OP, "frankfurt", "Ready", "h:5432", None, "fernet-token", "rep-1", T0,
                     key_id="pop-frankfurt", key_kind="pop", key_pop="frankfurt")
    return replace(base, **overrides)


def test_a_report_signed_by_its_pops_key_is_relayed_as_that_pop():
    _, effects = react(fresh(), report())
    (send,) = effects
    assert send.command.payload == RecordPopReport(SVC, OP, "frankfurt", "Ready", "h:5432", None, "fernet-token")
    c = send.command
    assert (c.command_id, c.tenant_id, c.actor, c.correlation_id, c.issued_at) == (
        step_command_id(OP, "report/rep-1"), TENANT, Actor("system:pop:frankfurt", ("system",)), "rep-1", T0)


@pytest.mark.parametrize("overrides, reason", [
    ({"unverified": "the message is not signed", "key_id": None, "key_kind": None, "key_pop": None},
     "the message is not signed"),
    ({"key_pop": "lagos", "key_id": "pop-lagos"}, "key 'pop-lagos' does not speak for PoP 'frankfurt'"),
    ({"key_kind": "gateway", "key_pop": None, "key_id": "gw"}, "key 'gw' does not speak for PoP 'frankfurt'"),
], ids=["unsigned", "another-pops-key", "not-a-pop-key"])
def test_a_report_no_key_of_its_pop_signed_is_dead_lettered(overrides, reason):
    assert react(fresh(), report(**overrides)) == (fresh(), [DeadLetter(reason, "unauthenticated")])


def test_undecodable_input_is_dead_lettered_with_the_reason():
    assert react(fresh(), Undecodable("bad magic byte")) == (fresh(), [DeadLetter("bad magic byte")])


# -- the runner, with fakes of its ports ------------------------------------------------------
@dataclass
class FakeMessage:
    topic_: str
    value_: bytes
    key_: bytes = b"acme"
    headers_: list = field(default_factory=list)
    offset_: int = 0
    partition_: int = 0

    def topic(self): return self.topic_
    def key(self): return self.key_
    def value(self): return self.value_
    def headers(self): return self.headers_
    def partition(self): return self.partition_
    def offset(self): return self.offset_


class FakeDecoder:
    """Values are pickled records; anything else is undecodable."""

    def event(self, value):
        obj = pickle.loads(value) if value.startswith(b"\x80") else None
        if not isinstance(obj, Envelope):
            raise PoisonMessage("not an event")  # what the real decoder raises, and only that
        return obj

    def report(self, value):
        return pickle.loads(value)


@dataclass
class Result:
    sha: str | None
    changed: bool


class FakeGit:
    """A repository as a list of commits (operation ids, files after it, files of each operation);
    `failures` are raised by the next `apply`/`apply_group` calls, in turn."""

    def __init__(self, files=None):
        self.commits: list[tuple[str, str, dict]] = [("root", "bootstrap", dict(files or {}))]
        self.owners: dict[str, dict[str, set]] = {}  # sha -> operation -> its files, of group commits
        self.failures: list[Exception] = []
        self.applied = 0
        self.groups: list[list[str]] = []  # the operations of each group commit
        self.searches = 0
        self.refused: set[str] = set()  # paths git refuses for good (InvalidChange)

    def files(self) -> dict:
        return self.commits[-1][2]

    def find_commit(self, operation_id):
        return next((sha for sha, op, _ in self.commits if operation_id in op.split(",")), None)

    def find_commits(self, operation_ids):
        self.searches += 1
        return {op: sha for op in operation_ids if (sha := self.find_commit(op)) is not None}

    def before(self, sha, operation_id=None):
        i = next(i for i, c in enumerate(self.commits) if c[0] == sha)
        prev, this = self.commits[i - 1][2], self.commits[i][2]
        mine = self.owners.get(sha, {}).get(operation_id)
        return {p: prev.get(p) for p in set(prev) | set(this)
                if prev.get(p) != this.get(p) and (mine is None or p in mine)}

    def apply(self, changes, message, *, operation_id, correlation_id, trace=None):
        if self.failures:
            raise self.failures.pop(0)
        self._refuse(changes)
        self.applied += 1
        return self._commit(changes, operation_id)

    def _refuse(self, changes):
        if bad := sorted(self.refused & set(changes)):
            raise InvalidChange(f"cannot write {bad[0]!r}: a folder of that name exists")

    def apply_group(self, group, *, apart=(), once=False):
        if self.failures:
            raise self.failures.pop(0)
        for change in group:
            self._refuse(change.changes)
        self.applied += 1
        found = self.find_commits([c.operation_id for c in group]) if once else {}
        for change in apart:
            self._commit(change.changes, change.operation_id)
        results = iter(self._group([c for c in group if c.operation_id not in found]))
        return [Result(found[c.operation_id], True) if c.operation_id in found else next(results) for c in group]

    def _group(self, group):
        if not group:
            return []
        base = self.files()
        changed = [c for c in group if any(base.get(p) != t for p, t in c.changes.items())]
        result = self._commit({p: t for c in group for p, t in c.changes.items()},
                              ",".join(c.operation_id for c in changed))
        if result.changed:
            self.groups.append([c.operation_id for c in changed])
            self.owners[result.sha] = {c.operation_id: set(c.changes) for c in changed}
        return [result if c in changed else Result(self.commits[-2 if result.changed else -1][0], False)
                for c in group]

    def _commit(self, changes, operation_ids):
        files = {**self.files(), **changes}
        files = {p: c for p, c in files.items() if c is not None}
        if files == self.files():
            return Result(self.commits[-1][0], False)
        sha = f"sha{len(self.commits)}"
        self.commits.append((sha, operation_ids, files))
        return Result(sha, True)


class FakeRenderer:
    def __init__(self):
        self.failures: list[Exception] = []

    def render(self, tenant_id, e):
        if self.failures:
            raise self.failures.pop(0)
        return f"tenants/{tenant_id}/{e.pop}/{e.name}.yaml", (None if e.action == "delete" else MANIFESTS)


class FakeClock:
    def __init__(self):
        self.t = T0

    def now(self):
        return self.t

    def wait(self, stop, seconds):
        self.t += timedelta(seconds=seconds)
        return stop.is_set()


class Sink(list):
    def __init__(self):
        super().__init__()
        self.flushed = 0  # how many were sent when last flushed

    def send(self, *args):
        self.append(args if len(args) > 1 else args[0])

    def flush(self):
        self.flushed = len(self)


class FakeSource:
    events_topic = "dbaas.events"

    def __init__(self, log=(), incoming=()):
        self.log, self.incoming, self.committed = list(log), list(incoming), []

    def replay(self, partitions=None):
        return iter([m for m in self.log if partitions is None or m.partition() in partitions])

    def poll(self):
        batch, self.incoming = self.incoming, []
        return batch

    def commit(self, msg):
        self.committed.append(msg.offset())


POP_KEY = Signer.generate("pop-frankfurt")


def runner(git=None, renderer=None, source=None, state=None):
    keys = Keyring(None, [TrustedKey.from_dict({"key_id": "pop-frankfurt", "kind": "pop", "pop": "frankfurt",
                                                "public_key": POP_KEY.public_text()})])
    return SagaRunner(state or fresh(), source=source or FakeSource(), decoder=FakeDecoder(), git=git or FakeGit(),
                      renderer=renderer or FakeRenderer(), commands=Sink(), dead_letters=Sink(), keys=keys,
                      clock=FakeClock(), pop_status_topic="dbaas.pop.status")


def event_msg(payload, at=T0, offset=0) -> FakeMessage:
    return FakeMessage("dbaas.events", pickle.dumps(env(payload, at)), offset_=offset)


STOP = threading.Event()


def payloads(r: SagaRunner) -> list:
    return [c.payload for c in r.commands]


def test_runner_carries_an_operation_through_render_and_commit():
    r = runner()
    r.handle(event_msg(started()), STOP)
    assert payloads(r) == [RecordServiceClaimRendered(SVC, OP, hashlib.sha256(MANIFESTS.encode()).hexdigest()),
                           RecordServiceClaimCommitted(SVC, OP, "frankfurt", PATH, "sha1", True)]
    assert r.git.files() == {PATH: MANIFESTS} and r.git.commits[-1][1] == OP
    assert not r.state.in_flight


def test_runner_never_commits_an_operation_twice():
    git = FakeGit()
    r = runner(git)
    r.handle(event_msg(started()), STOP)
    again = runner(git)  # restarted after a crash before its offset was committed
    again.handle(event_msg(started()), STOP)
    assert git.applied == 1
    assert payloads(again)[-1] == RecordServiceClaimCommitted(SVC, OP, "frankfurt", PATH, "sha1", True)


def test_runner_retries_a_transient_failure_with_backoff():
    r = runner()
    r.git.failures = [PushConflict("others kept moving main", attempts=5), OSError("connection reset")]
    r.handle(event_msg(started()), STOP)
    assert payloads(r)[-1] == RecordServiceClaimCommitted(SVC, OP, "frankfurt", PATH, "sha1", True)
    assert r.clock.now() == T0 + timedelta(seconds=0.5 + 1.0)


def test_runner_gives_up_a_step_when_its_time_is_spent():
    r = runner()
    r.git.failures = [OSError("connection refused")] * 100
    r.handle(event_msg(started()), STOP)
    assert payloads(r)[-1] == RecordStepTimedOut(SVC, OP, "commit", 300)
    assert len(r.git.commits) == 1 and r.clock.now() <= T0 + timedelta(seconds=420)


def test_runner_fails_an_operation_the_chart_refuses_and_goes_on():
    r = runner()
    r.renderer.failures = [RenderError("x", chart="c", stderr="Error: release name too long\nUse --debug")]
    r.handle(event_msg(started()), STOP)
    (failed,) = payloads(r)
    assert failed == RecordStepFailed(SVC, OP, "render", "the service's manifests could not be rendered: release "
                                      "name too long; nothing was committed; send the request again with values "
                                      "the service chart accepts")
    r.handle(event_msg(started("apply", "op-2"), offset=1), STOP)
    assert payloads(r)[-1].operation_id == "op-2"


def test_runner_stops_on_a_fault_of_the_platform():
    r = runner()
    r.git.failures = [RemoteRejected("hook declined")]
    with pytest.raises(RemoteRejected):
        r.handle(event_msg(started()), STOP)
    assert len(r.git.commits) == 1


def test_runner_reverts_a_failed_operation_once():
    git = FakeGit({PATH: "old"})
    r = runner(git)
    r.handle(event_msg(started()), STOP)
    r.handle(event_msg(ServiceFailed(OP, SVC, "pop said no", compensate=True)), STOP)
    assert git.files() == {PATH: "old"} and git.commits[-1][1] == revert_operation_id(OP)
    assert payloads(r)[-1] == RecordServiceClaimReverted(SVC, OP, git.commits[-1][0])
    again = runner(git)
    again.handle(event_msg(ServiceFailed(OP, SVC, "pop said no", compensate=True)), STOP)
    assert len(git.commits) == 3 and payloads(again) == [payloads(r)[-1]]


def test_runner_reverts_a_cancelled_creation_by_removing_its_file():
    git = FakeGit()
    r = runner(git)
    r.handle(event_msg(started()), STOP)
    r.handle(event_msg(OperationCancelled(OP, SVC, compensate=True, status="Deleted")), STOP)
    assert git.files() == {}


def test_runner_dead_letters_a_revert_git_refuses_for_good():
    r = runner()
    r.handle(event_msg(started()), STOP)
    r.git.failures = [InvalidChange("a folder of that name exists")]
    failed = event_msg(ServiceFailed(OP, SVC, "x", compensate=True), offset=7)
    r.handle(failed, STOP)
    assert r.dead_letters == [(failed, "the revert could not be committed to GitOps: a folder of that name exists",
                               "compensation_refused")]


def test_an_instance_follows_only_the_operations_of_the_partitions_it_is_given():
    """Two saga instances share the partitions: each rebuilds the deadlines of the partitions it is
    given and forgets those taken from it, so only the owner of an operation's partition times it out."""
    def on(partition, tenant, op):
        return FakeMessage("dbaas.events", pickle.dumps(committed(op, tenant=tenant)), partition_=partition)

    partition_of = {"acme": 0, "globex": 1}.__getitem__
    source = FakeSource(log=[on(0, "acme", "op-a"), on(1, "globex", "op-g")])
    r = runner(source=source)
    r.adopt([1], partition_of)
    assert list(r.state.awaiting) == ["op-g"]
    r.adopt([0], partition_of)
    assert sorted(r.state.awaiting) == ["op-a", "op-g"]
    r.adopt([0], partition_of)  # given again (a rebalance that moved nothing): nothing twice
    assert sorted(r.state.awaiting) == ["op-a", "op-g"]
    r.release([1], partition_of)
    assert list(r.state.awaiting) == ["op-a"]
    r.clock.t = T0 + timedelta(seconds=1800)
    r.tick(STOP)
    assert [c.operation_id for c in payloads(r)] == ["op-a"]  # op-g is the other instance's to time out


def test_runner_rebuilds_deadlines_from_the_log_and_times_out_on_a_tick():
    source = FakeSource(log=[event_msg(ServiceClaimCommitted(OP, SVC, "frankfurt", PATH, "abc")),
                             FakeMessage("dbaas.events", b"garbage")])
    r = runner(source=source)
    r.replay()
    assert list(r.state.awaiting) == [OP]
    r.tick(STOP)
    assert payloads(r) == []
    r.clock.t = T0 + timedelta(seconds=1800)
    r.tick(STOP)
    assert payloads(r) == [RecordStepTimedOut(SVC, OP, "pop-report", 1800)]


def test_runner_relays_a_signed_report_and_dead_letters_an_unsigned_one():
    r = runner()
    value = pickle.dumps({"tenant_id": TENANT, "service_id": SVC, "operation_id": OP, "pop": "frankfurt",
                          "phase": "Ready", "endpoint": "h:1", "reason": None, "report_id": "rep-1"})
    signed = FakeMessage("dbaas.pop.status", value, headers_=POP_KEY.headers("dbaas.pop.status", b"acme", value))
    unsigned = FakeMessage("dbaas.pop.status", value)
    r.handle(signed, STOP)
    r.handle(unsigned, STOP)
    assert payloads(r) == [RecordPopReport(SVC, OP, "frankfurt", "Ready", "h:1", None, None)]
    assert [(m, code) for m, _, code in r.dead_letters] == [(unsigned, "unauthenticated")]


def test_runner_dead_letters_undecodable_input_and_commits_offsets_after_effects():
    bad = FakeMessage("dbaas.events", b"garbage", offset_=1)
    source = FakeSource(incoming=[event_msg(started(), offset=0), bad])
    r = runner(source=source)
    dead_before = REGISTRY.get_sample_value("dbaas_saga_dead_lettered_total")

    class OnceThrough:
        def __init__(self):
            self.calls = 0

        def is_set(self):
            self.calls += 1
            return self.calls > 1

    r.run(OnceThrough())
    assert source.committed == [1]  # the batch's last offset, once its commands were delivered
    assert r.commands.flushed == len(r.commands)
    assert [m for m, _, _ in r.dead_letters] == [bad]
    assert REGISTRY.get_sample_value("dbaas_saga_dead_lettered_total") == dead_before + 1
    assert len(payloads(r)) == 2


APP = "argocd/applications/acme-frankfurt.yaml"
RECORD = "tenants/acme/frankfurt/deletions/orders.yaml"


class KubeRenderer(FakeRenderer):
    """A Kubernetes PoP's renderer: the (tenant, PoP) Application and the deletion record too."""

    def render(self, tenant_id, e):
        path, content = super().render(tenant_id, e)
        record = f"tenants/{tenant_id}/{e.pop}/deletions/{e.name}.yaml"  # RECORD for "orders"
        return path, content, {APP: "application", record: "record" if e.action == "delete" else None}


class ReadableGit(FakeGit):
    def read(self, path):
        return self.files().get(path)


def test_runner_commits_a_kube_pops_application_apart_so_a_revert_never_removes_it():
    git = ReadableGit()
    r = runner(git, KubeRenderer())
    r.handle(event_msg(started()), STOP)
    assert [op for _, op, _ in git.commits][1:] == [git.commits[1][1], OP]
    assert git.commits[1][2] == {APP: "application"} and git.commits[2][2] == {APP: "application", PATH: MANIFESTS}
    r.handle(event_msg(ServiceFailed(OP, SVC, "pop said no", compensate=True)), STOP)
    assert git.files() == {APP: "application"}  # the creation is reverted, the Application stays


def test_runner_writes_a_deletion_record_only_when_there_is_something_to_delete():
    git = ReadableGit()
    r = runner(git, KubeRenderer())
    r.handle(event_msg(started(action="delete")), STOP)
    assert git.files() == {APP: "application"}  # nothing was there: no record, and the commit changed nothing
    assert payloads(r)[-1] == RecordServiceClaimCommitted(SVC, OP, "frankfurt", PATH, git.commits[-1][0], False)
    git2 = ReadableGit({PATH: MANIFESTS, APP: "application"})
    r2 = runner(git2, KubeRenderer())
    r2.handle(event_msg(started(action="delete")), STOP)
    assert git2.files() == {APP: "application", RECORD: "record"}


# -- several operations at once: the policy keeps each in flight, the runner commits them together
def test_several_operations_are_in_flight_at_once_and_answered_in_any_order():
    other = started(op="op-2", name="users", service="svc-2")
    state, _ = run(fresh(), EventArrived(env(started()), T0), EventArrived(env(other, event_id="ev-2"), T0))
    assert set(state.in_flight) == {OP, "op-2"}
    state, effects = run(state, Rendered("op-2", "tenants/acme/frankfurt/users.yaml", MANIFESTS, T0),
                         Rendered(OP, PATH, MANIFESTS, T0))
    assert [e.operation_id for e in effects if isinstance(e, Commit)] == ["op-2", OP]
    state, effects = run(state, Committed(OP, "abc", True, T0))
    assert sent(effects) == [RecordServiceClaimCommitted(SVC, OP, "frankfurt", PATH, "abc", True)]
    assert set(state.in_flight) == {"op-2"}
    state, effects = run(state, Committed("op-2", "abc", True, T0))
    assert sent(effects)[0].operation_id == "op-2" and not state.in_flight


def creations(n: int, at=T0) -> list[FakeMessage]:
    return [event_msg(started(op=f"op-{i}", name=f"svc-{i}", service=f"svc-{i}"), at=at, offset=i) for i in range(n)]


def committed_records(r: SagaRunner) -> dict:
    return {p.operation_id: p for p in payloads(r) if isinstance(p, RecordServiceClaimCommitted)}


def test_runner_commits_a_batchs_operations_in_one_commit_each_recorded_with_it():
    r = runner()
    r.handle_batch(creations(3), STOP)
    assert r.git.groups == [["op-0", "op-1", "op-2"]] and len(r.git.commits) == 2 and r.git.searches == 1
    assert committed_records(r) == {f"op-{i}": RecordServiceClaimCommitted(
        f"svc-{i}", f"op-{i}", "frankfurt", f"tenants/acme/frankfurt/svc-{i}.yaml", "sha1", True) for i in range(3)}
    kinds = [type(p).__name__ for p in payloads(r)]
    assert kinds == ["RecordServiceClaimRendered"] * 3 + ["RecordServiceClaimCommitted"] * 3
    assert r.commands.flushed == 6 and not r.state.in_flight and r._started == {}


def test_runner_never_commits_a_group_twice_after_a_crash():
    git = FakeGit()
    runner(git).handle_batch(creations(3), STOP)
    again = runner(git)  # restarted before the batch's offsets were committed; one more came meanwhile
    again.handle_batch(creations(4), STOP)
    assert git.groups == [["op-0", "op-1", "op-2"], ["op-3"]] and len(git.commits) == 3
    assert git.commits[-1][1] == "op-3" and git.searches == 2
    assert {op: p.sha for op, p in committed_records(again).items()} == {
        "op-0": "sha1", "op-1": "sha1", "op-2": "sha1", "op-3": "sha2"}


def test_runner_reverts_one_operation_of_a_group_alone():
    git = FakeGit()
    r = runner(git)
    r.handle_batch(creations(3), STOP)
    r.handle(event_msg(ServiceFailed("op-1", "svc-1", "pop said no", compensate=True)), STOP)
    assert sorted(git.files()) == ["tenants/acme/frankfurt/svc-0.yaml", "tenants/acme/frankfurt/svc-2.yaml"]
    assert payloads(r)[-1] == RecordServiceClaimReverted("svc-1", "op-1", "sha2")


def test_runner_records_an_operation_the_repository_already_holds_as_unchanged():
    git = FakeGit({"tenants/acme/frankfurt/svc-1.yaml": MANIFESTS})
    r = runner(git)
    r.handle_batch(creations(3), STOP)
    assert git.groups == [["op-0", "op-2"]]
    assert {op: (p.sha, p.changed) for op, p in committed_records(r).items()} == {
        "op-0": ("sha1", True), "op-1": ("root", False), "op-2": ("sha1", True)}


def test_runner_commits_a_refused_group_one_operation_at_a_time_so_only_the_faulty_one_fails():
    git = FakeGit()
    git.refused = {"tenants/acme/frankfurt/svc-1.yaml"}
    r = runner(git)
    r.handle_batch(creations(3), STOP)
    assert [op for _, op, _ in git.commits[1:]] == ["op-0", "op-2"]
    failed = [p for p in payloads(r) if isinstance(p, RecordStepFailed)]
    assert [(p.operation_id, p.step) for p in failed] == [("op-1", "commit")]
    assert "a folder of that name exists" in failed[0].reason
    assert sorted(committed_records(r)) == ["op-0", "op-2"]


def test_runner_retries_a_group_each_operation_until_its_own_deadline():
    r = runner()
    late = event_msg(started(op="op-late", name="late", service="svc-late"), at=T0 - timedelta(seconds=405))
    r.git.failures = [OSError("connection reset")] * 6  # retried after 0.5, 1, 2, 4, 8, 16 s
    r.handle_batch([late, *creations(2)], STOP)
    assert [p for p in payloads(r) if isinstance(p, RecordStepTimedOut)] == [
        RecordStepTimedOut("svc-late", "op-late", "commit", 300)]
    assert r.git.groups == [["op-0", "op-1"]] and sorted(committed_records(r)) == ["op-0", "op-1"]


def test_runner_handles_an_input_twice_in_one_batch_without_a_second_commit():
    r = runner()
    batch = creations(2)
    r.handle_batch([*batch, batch[0]], STOP)
    assert len(r.git.commits) == 2 and r.git.groups == [["op-0", "op-1"]]
    assert sorted(committed_records(r)) == ["op-0", "op-1"]
    assert len([p for p in payloads(r) if isinstance(p, RecordServiceClaimCommitted)]) == 2


def test_runner_commits_what_waits_before_a_revert():
    git = FakeGit()
    r = runner(git)
    r.handle(event_msg(started(op="op-9", name="old", service="svc-9")), STOP)
    r.handle_batch([*creations(2), event_msg(ServiceFailed("op-9", "svc-9", "no", compensate=True), offset=5)], STOP)
    assert [op for _, op, _ in git.commits[1:]] == ["op-9", "op-0,op-1", revert_operation_id("op-9")]


def test_runner_commits_a_kube_pops_applications_apart_once_for_a_group():
    git = ReadableGit()
    r = runner(git, KubeRenderer())
    r.handle_batch(creations(3), STOP)
    assert git.commits[1][2] == {APP: "application"} and git.groups == [["op-0", "op-1", "op-2"]]
    r.handle(event_msg(ServiceFailed("op-1", "svc-1", "pop said no", compensate=True)), STOP)
    assert sorted(git.files()) == [APP, "tenants/acme/frankfurt/svc-0.yaml", "tenants/acme/frankfurt/svc-2.yaml"]


class AheadRenderer(FakeRenderer):
    """A renderer that can render ahead: records what it was asked for before its renders."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def prefetch(self, started):
        self.calls.append(("prefetch", [e.operation_id for _, e in started]))

    def forget(self):
        self.calls.append(("forget",))

    def render(self, tenant_id, e):
        self.calls.append(("render", e.operation_id))
        return super().render(tenant_id, e)


def test_runner_asks_a_renderer_for_a_batchs_services_ahead_and_then_forgets_the_rest():
    r = runner(renderer=AheadRenderer())
    r.handle_batch([*creations(2), FakeMessage("dbaas.events", b"garbage", offset_=9)], STOP)
    assert r.renderer.calls == [("prefetch", ["op-0", "op-1"]), ("render", "op-0"), ("render", "op-1"),
                                ("forget",)]
    assert r.git.groups == [["op-0", "op-1"]]
