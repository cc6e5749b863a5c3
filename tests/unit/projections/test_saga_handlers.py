"""Read-model changes of the service-operation events (pure handlers)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from events import (
    Envelope,
    OperationStarted,
    Resources,
    ServiceClaimCommitted,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
)
from projections.projectors import PROJECTIONS

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
R = Resources(1.0, 2, 10, 1)


def env(payload, sequence: int = 5) -> Envelope:
    return Envelope("e", "acme", "service", "s1", sequence, T, "c1", "corr", "c1", payload)


def change(projection: str, payload):
    return PROJECTIONS[projection].change(env(payload))


@pytest.mark.parametrize("payload, projection, expected", [
    (OperationStarted("op", "s1", "apply", "db", "yugabyte", "v", "local", "small", R), "services", None),
    (OperationStarted("op", "s1", "delete", "db", "yugabyte", "v", "local", "small", R), "services",
     {"status": "Deleting", "updated_at": T, "last_operation_id": "c1"}),
    (ServiceReady("op", "s1", "h:1", "token"), "services", {"status": "Ready", "updated_at": T, "credentials": "token"}),
    (ServiceReady("op", "s1", None), "services", {"status": "Ready", "updated_at": T}),
    (ServiceDeleted("op", "s1"), "services", {"status": "Deleted", "updated_at": T, "credentials": None,
                                                 "deleted_at": T}),
    (ServiceFailed("op", "s1", "no room"), "services", {"status": "Failed", "updated_at": T}),
], ids=["apply-start-keeps-status", "delete-start", "ready-keeps-encrypted-credentials",
        "ready-without-credentials-keeps-the-old", "deleted-forgets-credentials", "failed"])
def test_service_changes(payload, projection, expected):
    got = change(projection, payload)
    assert (None if got is None else dict(got.values)) == expected
    if got is not None:
        assert (got.key, got.version, got.creates) == ("s1", 5, False)


def test_operation_steps_and_outcomes():
    committed = change("operations", ServiceClaimCommitted("op", "s1", "local", "tenants/a/local/db.yaml", "abc"))
    assert committed.key == "op" and committed.values["done_steps"] == 2 and committed.values["state"] == "Running"
    assert committed.values["commit_step"] == {"state": "Done", "ref": "abc", "at": T.isoformat()}
    failed = change("operations", ServiceFailed("op", "s1", "disk full"))
    assert (failed.values["state"], failed.values["message"], failed.values["report_step"]["state"]) == (
        "Failed", "disk full", "Failed")
    ready = change("operations", ServiceReady("op", "s1", "h:1", "secret-token"))
    assert ready.values["state"] == "Succeeded" and "secret-token" not in repr(ready.values)
