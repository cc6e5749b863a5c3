"""An accepted CreateService is built at once (`commands.decide._creation`): its three events and
the state after them. They must be exactly what the general path gives — each event numbered and
folded in turn, the status it leads to stamped on it (`_accepted`) — for any creation, in any
organization (services before it, ready or deleted, a scale queued behind a creation)."""

from __future__ import annotations

import pytest
from domain_builders import GATEWAY, TENANT, cmd, op, run, saga
from hypothesis import event, given, settings
from hypothesis import strategies as st

from commands import (
    CreateOrganization,
    CreateService,
    DeleteService,
    ScaleService,
    decide_and_evolve,
    fingerprint_of,
)
from commands.catalog import OPERATION_STEPS
from commands.decide import _accepted, _changes
from events import OperationAccepted, Service, TenantState, evolve, new_service, replace
from schemas.catalog import ENGINES, POPS, SIZES

ORG = cmd(CreateOrganization(TENANT, "Acme"))
LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)


def _general(state: TenantState, command) -> tuple[list, TenantState]:
    """The general path every other accepted command takes (`_accepted`), from the creation's events
    without the statuses `_create_service` gives them: `_envelopes` stamps each with the status the
    lifecycle gives it after the events before it, which must be the status given."""
    operation = op(command)
    changes = [(kind, key, replace(e, status=None)) for kind, key, e in _changes(state, command, operation)]
    start = OperationAccepted(operation, command.command_type, command.payload.service_id,
                              OPERATION_STEPS[command.command_type], fingerprint_of(command.payload))
    return _accepted(state, command, changes, start, operation)


def _services(n: int) -> list:
    return [f"{i:08x}-0000-4000-8000-000000000000" for i in range(n)]


@st.composite
def organizations(draw) -> TenantState:
    """An organization with a few services: some ready, one deleted (its name free again), one with
    a scale queued behind its creation."""
    ids = _services(draw(st.integers(0, 4)))
    steps = [ORG]
    for i, service_id in enumerate(ids):
        steps.append(cmd(CreateService(service_id, f"db-{i}", draw(st.sampled_from(ENGINES)), "frankfurt", "small")))
        if draw(st.booleans()):
            steps += saga(service_id, op(steps[-1]))
            if draw(st.booleans()):
                steps.append(cmd(DeleteService(service_id)))
                steps += saga(service_id, op(steps[-1]), "Deleted")
        elif draw(st.booleans()):
            steps.append(cmd(ScaleService(service_id, replicas=3)))
    return run(steps)[0]


@st.composite
def creations(draw, name: str = "new-db") -> CreateService:
    return CreateService(
        "ffffffff-0000-4000-8000-000000000000",
        draw(st.sampled_from([name, "db-0"])),  # db-0: free again when its service was deleted
        draw(st.sampled_from(ENGINES)),
        draw(st.sampled_from(POPS)),
        draw(st.sampled_from(SIZES)),
        replicas=draw(st.none() | st.integers(1, 3)),
        storage_gb=draw(st.none() | st.integers(10, 200)),
        deletion_protection=draw(st.booleans()),
        labels=draw(st.dictionaries(LABEL, LABEL, max_size=3)),
    )


@settings(max_examples=150, deadline=None)
@given(organizations(), creations())
def test_a_creation_gives_the_events_and_state_of_the_general_path(state: TenantState, creation: CreateService):
    command = cmd(creation)
    produced, after = decide_and_evolve(state, command, fingerprint_of(creation), GATEWAY)
    if len(produced) == 1:  # rejected (a name in use, an engine the PoP lacks): not a creation's path
        event("rejected")
        return
    event("accepted")
    assert (produced, after) == _general(state, command)
    folded = state
    for envelope in produced:
        folded = evolve(folded, envelope)
    assert after == folded
    assert [e.payload.status for e in produced if hasattr(e.payload, "status")] == ["Requested", "Requested"]


def test_new_service_builds_what_the_constructor_builds():
    fields = {"service_id": "s", "name": "n", "engine": "yugabyte", "engine_version": "2.25", "pop": "local",
              "size": "small", "resources": None, "deletion_protection": False, "labels": {}, "status": "Requested",
              "operation_id": "o"}
    assert new_service(**fields) == Service(**fields)
    assert new_service(**fields, running="o", step=2).__dict__ == Service(**fields, running="o", step=2).__dict__
    with pytest.raises(TypeError, match="colour"):
        new_service(**fields, colour="red")
    with pytest.raises(TypeError, match="labels"):
        new_service(**{k: v for k, v in fields.items() if k != "labels"})
