"""The subscription saga's policy: what to do on the broker for tenants' subscriptions. Pure.

A subscription's principal may READ and DESCRIBE, and nothing else:

- its organization's change data capture topics, one *prefixed* ACL per engine's topic pattern
  (`dbaas.cdc.yugabyte.<tenant>.`, `dbaas.cdc.vitess.<tenant>.`, … — the trailing dot keeps
  `acme` from reaching `acme-2`'s topics);
- its audit, alerts and metrics topics, each a *literal* ACL (`dbaas.audit.<tenant>`: a prefix
  would reach `dbaas.audit.<tenant>-2`);
- consumer groups starting with its group prefix (`sub.<tenant>.<name>.`, decided by `decide`).

Messages: `EventReplayed` (the log at start: only folded), `Resume` (the replay is over: what is
still pending is done now), `EventArrived`, and the answers to effects (`Granted`, `Revoked`,
`GrantRefused`). Effects: `Grant` (credential + ACLs), `Revoke` (ACLs, then the credential),
`Send` (the system command recording the outcome). Every effect is safe to repeat, and the command
ids derive from (operation, outcome), so a saga killed anywhere repeats at most harmless work.

May import `events`, `commands.records` and `commands.catalog` only.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from commands.catalog import SUBSCRIPTION_TENANT_TOPICS, subscription_cdc_prefixes
from commands.records import (
    Actor,
    CommandEnvelope,
    RecordSubscriptionFailed,
    RecordSubscriptionGranted,
    RecordSubscriptionRevoked,
)
from events import (
    Envelope,
    SubscriptionFailed,
    SubscriptionGranted,
    SubscriptionRequested,
    SubscriptionRevocationRequested,
    SubscriptionRevoked,
)

READS = ("READ", "DESCRIBE")
SUBSCRIPTION_ACTOR = Actor("system:subscription-saga", ("system",))
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:subscription-saga")


@dataclass(frozen=True)
class TenantGrant:
    kind: str  # topic | group
    name: str
    prefixed: bool
    operations: tuple[str, ...] = READS


def grants(tenant: str, group_prefix: str) -> list[TenantGrant]:
    """The ACLs of a subscription of `tenant` (the topic names are the catalog's)."""
    return [*(TenantGrant("topic", prefix, True) for prefix in subscription_cdc_prefixes(tenant)),
            *(TenantGrant("topic", pattern.format(tenant=tenant), False) for pattern in SUBSCRIPTION_TENANT_TOPICS),
            TenantGrant("group", group_prefix, True)]


# -- state, messages, effects -------------------------------------------------------------------
@dataclass(frozen=True)
class Pending:
    """What the broker still has to be made to match for one subscription."""

    action: str  # grant | revoke
    tenant_id: str
    subscription_id: str
    operation_id: str
    principal: str
    group_prefix: str
    sealed_password: str | None  # grant only
    correlation_id: str


@dataclass(frozen=True)
class State:
    pending: dict[str, Pending] = field(default_factory=dict)  # by subscription id
    principals: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> (principal, group prefix, tenant)


@dataclass(frozen=True)
class EventReplayed:
    envelope: Envelope


@dataclass(frozen=True)
class EventArrived:
    envelope: Envelope


@dataclass(frozen=True)
class Resume:
    now: datetime


@dataclass(frozen=True)
class Granted:
    subscription_id: str
    now: datetime


@dataclass(frozen=True)
class GrantRefused:
    subscription_id: str
    reason: str
    now: datetime


@dataclass(frozen=True)
class Revoked:
    subscription_id: str
    now: datetime


@dataclass(frozen=True)
class Grant:
    principal: str
    sealed_password: str
    subscription_id: str
    grants: tuple[TenantGrant, ...]


@dataclass(frozen=True)
class Revoke:
    principal: str
    subscription_id: str


@dataclass(frozen=True)
class Send:
    command: CommandEnvelope


Effect = Grant | Revoke | Send
Message = EventReplayed | EventArrived | Resume | Granted | GrantRefused | Revoked


def step_command_id(operation_id: str, outcome: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{operation_id}/{outcome}"))


# The only events `react` folds: the runner skips the others by their event-type header, undecoded.
FOLDED = frozenset(t.__name__ for t in (SubscriptionRequested, SubscriptionRevocationRequested, SubscriptionGranted,
                                         SubscriptionFailed, SubscriptionRevoked))


def react(state: State, message: Message) -> tuple[State, list[Effect]]:
    match message:
        case EventReplayed(envelope=env):
            return _fold(state, env), []
        case Resume():
            return state, [_effect(p) for p in state.pending.values()]
        case EventArrived(envelope=env):
            new = _fold(state, env)
            p = new.pending.get(getattr(env.payload, "subscription_id", ""))
            started = isinstance(env.payload, SubscriptionRequested | SubscriptionRevocationRequested)
            return new, ([_effect(p)] if started and p is not None else [])
        case Granted(subscription_id=sid, now=now):
            p = state.pending.get(sid)
            if p is None or p.action != "grant":
                return state, []
            return state, [_send(p, RecordSubscriptionGranted(sid, p.operation_id), "granted", now)]
        case GrantRefused(subscription_id=sid, reason=reason, now=now):
            p = state.pending.get(sid)
            if p is None or p.action != "grant":
                return state, []
            return state, [_send(p, RecordSubscriptionFailed(sid, p.operation_id, reason), "failed", now)]
        case Revoked(subscription_id=sid, now=now):
            p = state.pending.get(sid)
            if p is None or p.action != "revoke":
                return state, []
            return state, [_send(p, RecordSubscriptionRevoked(sid, p.operation_id), "revoked", now)]
    raise TypeError(f"not a message of the subscription saga: {message!r}")


def _fold(state: State, env: Envelope) -> State:
    e = env.payload
    match e:
        case SubscriptionRequested():
            principals = {**state.principals, e.subscription_id: (e.principal, e.group_prefix, env.tenant_id)}
            p = Pending("grant", env.tenant_id, e.subscription_id, e.operation_id, e.principal, e.group_prefix,
                        e.sealed_password, env.correlation_id)
            return State({**state.pending, e.subscription_id: p}, principals)
        case SubscriptionRevocationRequested() if e.subscription_id in state.principals:
            principal, prefix, tenant = state.principals[e.subscription_id]
            p = Pending("revoke", tenant, e.subscription_id, e.operation_id, principal, prefix, None,
                        env.correlation_id)
            return State({**state.pending, e.subscription_id: p}, state.principals)
        case SubscriptionGranted() | SubscriptionFailed() | SubscriptionRevoked():
            pending = state.pending.get(e.subscription_id)
            if pending is None or pending.operation_id != e.operation_id:
                return state
            return State({k: v for k, v in state.pending.items() if k != e.subscription_id}, state.principals)
    return state


def _effect(p: Pending) -> Effect:
    if p.action == "grant":
        return Grant(p.principal, p.sealed_password or "", p.subscription_id,
                     tuple(grants(p.tenant_id, p.group_prefix)))
    return Revoke(p.principal, p.subscription_id)


def _send(p: Pending, payload, outcome: str, now: datetime) -> Send:
    return Send(CommandEnvelope(step_command_id(p.operation_id, outcome), p.tenant_id, SUBSCRIPTION_ACTOR, now,
                                p.correlation_id, payload, causation_id=p.operation_id))
