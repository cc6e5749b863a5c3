"""The `organizations` read model: one row per tenant, from OrganizationCreated.

Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from events import Envelope, OrganizationCreated, QuotaSet
from projections.projectors import Change, Handler
from schemas import as_record

NAME = "organizations"


def _created(env: Envelope) -> Change:
    e: OrganizationCreated = env.payload  # type: ignore[assignment]
    return Change(e.slug, env.sequence, {
        "display_name": e.display_name,
        "owner": e.owner,
        "quota": None,
        "created_at": env.occurred_at,
        "updated_at": env.occurred_at,
    }, creates=True)


def _quota_set(env: Envelope) -> Change:
    e: QuotaSet = env.payload  # type: ignore[assignment]
    return Change(env.aggregate_id, env.sequence, {"quota": as_record(e.quota), "updated_at": env.occurred_at})


HANDLERS: dict[type, Handler] = {
    OrganizationCreated: _created,
    QuotaSet: _quota_set,
}
