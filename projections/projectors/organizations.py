"""The `organizations` read model: one row per tenant, from OrganizationCreated.

Imports `events` and `projections.projectors`.
"""

from __future__ import annotations

from events import Envelope, OrganizationCreated
from projections.projectors import Change, Handler

NAME = "organizations"


def _created(env: Envelope) -> Change:
    e: OrganizationCreated = env.payload  # type: ignore[assignment]
    return Change(e.slug, env.sequence, {
        "display_name": e.display_name,
        "owner": e.owner,
        "created_at": env.occurred_at,
        "updated_at": env.occurred_at,
    }, creates=True)


HANDLERS: dict[type, Handler] = {
    OrganizationCreated: _created,
}
