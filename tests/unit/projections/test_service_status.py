"""The services projector copies the status an event carries and works none out itself; events
recorded before they carried it fall back to what the lifecycle table says they mean on their own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from events import Envelope, OperationStarted, Resources, ServiceClaimRendered, ServiceDeleted, ServiceReady
from projections.projectors import PROJECTIONS

T = datetime(2025, 1, 1, tzinfo=UTC)
R = Resources(1.0, 2, 10, 1)


def status_after(payload) -> str | None:
    change = PROJECTIONS["services"].change(Envelope("e", "acme", "service", "s1", 5, T, "c1", "corr", "c1", payload))
    return None if change is None else change.values["status"]


@pytest.mark.parametrize("payload, expected", [
    (OperationStarted("op", "s1", "apply", "db", "yugabyte", "v", "local", "small", R, status="Scaling"), "Scaling"),
    (OperationStarted("op", "s1", "apply", "db", "yugabyte", "v", "local", "small", R), None),
    (OperationStarted("op", "s1", "delete", "db", "yugabyte", "v", "local", "small", R), "Deleting"),
    (ServiceReady("op", "s1", None, status="Deleting"), "Deleting"),
    (ServiceReady("op", "s1", None), "Ready"),
    (ServiceClaimRendered("op", "s1", "d", "Provisioning"), "Provisioning"),
    (ServiceClaimRendered("op", "s1", "d"), None),
    (ServiceDeleted("op", "s1"), "Deleted"),
], ids=["carried-start", "old-apply-start-keeps", "old-delete-start", "carried-ready-behind-deletion",
        "old-ready", "carried-render", "old-render-keeps", "old-deleted"])
def test_the_status_comes_from_the_event(payload, expected) -> None:
    assert status_after(payload) == expected
