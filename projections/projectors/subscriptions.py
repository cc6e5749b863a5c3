"""The `subscriptions` read model: one row per tenant subscription, with its principal, consumer
group prefix and status; never its password (the event carries it sealed, and this model leaves
it out). Versioned by the subscription aggregate's sequence. Imports `events` and
`projections.projectors`.
"""

from __future__ import annotations

from events import (
    Envelope,
    SubscriptionFailed,
    SubscriptionGranted,
    SubscriptionRequested,
    SubscriptionRevocationRequested,
    SubscriptionRevoked,
)
from projections.projectors import Change, Handler

NAME = "subscriptions"


def _requested(env: Envelope) -> Change:
    e: SubscriptionRequested = env.payload  # type: ignore[assignment]
    return Change(e.subscription_id, env.sequence, {
        "tenant_id": env.tenant_id, "name": e.name, "principal": e.principal, "group_prefix": e.group_prefix,
        "status": "Requested", "reason": None, "requested_by": env.actor_subject,
        "created_at": env.occurred_at, "updated_at": env.occurred_at}, creates=True)


def _status(status: str) -> Handler:
    def handle(env: Envelope) -> Change:
        e = env.payload
        return Change(e.subscription_id, env.sequence, {  # type: ignore[union-attr]
            "status": status, "updated_at": env.occurred_at,
            **({"reason": e.reason} if isinstance(e, SubscriptionFailed) else {})})
    return handle


HANDLERS: dict[type, Handler] = {
    SubscriptionRequested: _requested,
    SubscriptionGranted: _status("Active"),
    SubscriptionRevocationRequested: _status("Revoking"),
    SubscriptionRevoked: _status("Revoked"),
    SubscriptionFailed: _status("Failed"),
}
