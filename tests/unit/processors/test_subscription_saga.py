"""The subscription saga: its policy (given/when/then through `react`), its runner with fakes of
the broker and the sealing key, and the sealed format."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from commands import RecordSubscriptionFailed, RecordSubscriptionGranted, RecordSubscriptionRevoked
from commands.catalog import subscription_seal_context
from events import (
    Envelope,
    SubscriptionGranted,
    SubscriptionRequested,
    SubscriptionRevocationRequested,
)
from processors.sagas import subscription as policy
from processors.sagas.subscription import EventArrived, EventReplayed, Grant, Granted, Resume, Revoke, Send, State
from processors.sagas.subscription_runner import SubscriptionRunner
from runtime import sealing

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SUB, OP, OP2 = "3e1f5a2b-7c4d-4e8f-9a0b-1c2d3e4f5a6b", "7f3e2d1c-0b9a-4876-a543-210fedcba987", \
    "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
KEY = sealing.generate()


def env(payload, seq: int = 1) -> Envelope:
    return Envelope(event_id=f"e{seq}", tenant_id="acme", aggregate_type="subscription", aggregate_id=SUB,
                    sequence=seq, occurred_at=T0, command_id=f"c{seq}", correlation_id="corr", causation_id=None,
                    payload=payload)


def requested(password: bytes = b"pw", subscription_id: str = SUB) -> Envelope:
    sealed = sealing.seal(sealing.public_key(KEY), "subscriptions", password, subscription_seal_context(subscription_id))
    return env(SubscriptionRequested(SUB, OP, "analytics", "sub.acme.analytics", "sub.acme.analytics.", sealed))


def test_the_grants_are_the_tenants_own_prefixes_and_literal_topics():
    grants = policy.grants("acme", "sub.acme.analytics.")
    topics = {(g.name, g.prefixed) for g in grants if g.kind == "topic"}
    assert ("dbaas.cdc.yugabyte.acme.", True) in topics and ("dbaas.cdc.vitess.acme.", True) in topics
    # a prefix here would reach acme-2's topics: literal names
    assert {("dbaas.audit.acme", False), ("dbaas.alerts.acme", False), ("dbaas.metrics.acme", False)} <= topics
    assert all(g.operations == ("READ", "DESCRIBE") for g in grants)
    assert [g for g in grants if g.kind == "group"][0].name == "sub.acme.analytics."
    assert not any("commands" in g.name or g.name == "dbaas.events" for g in grants)


@pytest.mark.parametrize("given, when, then, reason", [
    ([], EventArrived(requested()), [Grant], "a request is granted at once"),
    ([requested()], Resume(T0), [Grant], "a request replayed without its outcome is granted after the replay"),
    ([requested(), env(SubscriptionGranted(SUB, OP), 2)], Resume(T0), [], "a granted one is left alone"),
    ([requested()], Granted(SUB, T0), [Send], "the grant is recorded"),
    ([requested(), env(SubscriptionGranted(SUB, OP), 2)], EventArrived(env(SubscriptionRevocationRequested(SUB, OP2), 3)),
     [Revoke], "a revocation is carried out"),
    ([], Granted(SUB, T0), [], "an answer for nothing pending changes nothing"),
])
def test_policy(given, when, then, reason):
    state = State()
    for e in given:
        state, _ = policy.react(state, EventReplayed(e))
    _, effects = policy.react(state, when)
    assert [type(e) for e in effects] == then, reason


class FakeLog:
    def __init__(self, replayed, later=()):
        self.replayed, self.later = list(replayed), list(later)

    def replay(self):
        return iter(self.replayed)

    def poll(self, timeout):
        out, self.later = self.later, []
        return out


class Raw:
    def __init__(self, env, kind=None):
        self.env, self.kind = env, kind

    def value(self):
        return self.env

    def headers(self):
        return [("event-type", self.kind.encode())] if self.kind else None


class FakeAccess:
    def __init__(self, fail_times: int = 0):
        self.calls, self.fail_times = [], fail_times

    def grant(self, user, password, grants):
        if self.fail_times:
            self.fail_times -= 1
            raise TimeoutError("broker busy")
        self.calls.append(("grant", user, password))

    def revoke(self, user):
        self.calls.append(("revoke", user))


class Sent(list):
    def send(self, command):
        self.append(command)


def runner(log, access, sent) -> SubscriptionRunner:
    class Decoder:
        def event(self, value):
            return value

    class Opener:
        def open(self, sealed, context):
            return sealing.open_sealed(KEY, sealed, context)

    class Clock:
        def now(self):
            return T0

    return SubscriptionRunner(events=log, decoder=Decoder(), access=access, opener=Opener(), commands=sent,
                              clock=Clock(), is_transient=lambda exc: isinstance(exc, TimeoutError), sleep=lambda s: None)


def test_the_runner_grants_with_the_opened_password_retrying_a_busy_broker():
    access, sent = FakeAccess(fail_times=2), Sent()
    runner(FakeLog([Raw(requested(b"s3cret"))]), access, sent).replay()
    assert access.calls == [("grant", "sub.acme.analytics", b"s3cret")]
    assert [type(c.payload) for c in sent] == [RecordSubscriptionGranted]
    assert sent[0].command_id == policy.step_command_id(OP, "granted")  # the same on every attempt


def test_a_password_sealed_for_another_subscription_fails_the_grant():
    access, sent = FakeAccess(), Sent()
    copied = requested(b"s3cret", subscription_id="another")
    runner(FakeLog([Raw(copied)]), access, sent).replay()
    assert access.calls == []
    assert [type(c.payload) for c in sent] == [RecordSubscriptionFailed]
    assert "does not open" in sent[0].payload.reason


def test_the_runner_revokes():
    access, sent = FakeAccess(), Sent()
    r = runner(FakeLog([Raw(requested()), Raw(env(SubscriptionGranted(SUB, OP), 2))],
                       [Raw(env(SubscriptionRevocationRequested(SUB, OP2), 3))]), access, sent)
    r.replay()

    class Once:
        n = 0

        def is_set(self):
            self.n += 1
            return self.n > 1
    r.loop(Once())
    assert access.calls == [("revoke", "sub.acme.analytics")]
    assert [type(c.payload) for c in sent] == [RecordSubscriptionRevoked]


def test_the_runner_decodes_only_the_events_its_policy_folds():
    access, sent = FakeAccess(), Sent()

    class Undecodable:  # what decoding a service event would meet: the runner must not get there
        def __getattr__(self, name):
            raise AssertionError("an event the policy does not fold was decoded")

    log = FakeLog([Raw(Undecodable(), "ServiceRequested"), Raw(requested(b"s3cret"), "SubscriptionRequested"),
                   Raw(Undecodable(), "OperationStarted")])
    runner(log, access, sent).replay()
    assert access.calls == [("grant", "sub.acme.analytics", b"s3cret")]
    assert policy.FOLDED == {"SubscriptionRequested", "SubscriptionRevocationRequested", "SubscriptionGranted",
                             "SubscriptionFailed", "SubscriptionRevoked"}


def test_sealed_values_open_only_with_their_key_and_context():
    secret = b"a pass word!"  # spaces and "!": no base64 text can hold it by chance (b"pw" could, ~2 % of runs)
    sealed = sealing.seal(sealing.public_key(KEY), "subscriptions", secret, b"ctx")
    assert sealing.open_sealed(KEY, sealed, b"ctx") == secret
    assert secret not in sealed.encode()
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(KEY, sealed, b"other")
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(sealing.generate(), sealed, b"ctx")
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(KEY, sealed[:-4] + "AAAA", b"ctx")
    assert sealing.key_id_of(sealed) == "subscriptions"
