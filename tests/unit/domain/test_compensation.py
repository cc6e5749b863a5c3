"""Step timeouts, compensation (revert the commit, release the quota), cancellation, and commits
that changed nothing: what `decide` answers and where the service ends."""

from __future__ import annotations

from domain_builders import op, DB1, DB2, MEMBER, SYSTEM, TENANT, cmd, committed, rendered, reported, reverted, run, saga, trusted

from commands import (
    CancelOperation,
    CreateOrganization,
    CreateService,
    DeleteService,
    RecordServiceClaimCommitted,
    RecordStepTimedOut,
    ScaleService,
    decide,
    fingerprint_of,
)
from events import (
    CommandRejected,
    OperationCancelled,
    OperationStarted,
    Resources,
    ServiceClaimReverted,
    ServiceDeleted,
    ServiceFailed,
    ServiceReady,
    ServiceStatus,
    TenantState,
    replay,
)

ORG = cmd(CreateOrganization(TENANT, "Acme"))
CREATE = cmd(CreateService(DB1, "orders", "yugabyte", "frankfurt", "small"))
SCALE = cmd(ScaleService(DB1, cpu=2))
SCALE_AGAIN = cmd(ScaleService(DB1, memory_gb=8))
DELETE = cmd(DeleteService(DB1))
C, S, S2, D = op(CREATE), op(SCALE), op(SCALE_AGAIN), op(DELETE)
SMALL = Resources(1.0, 2, 10, 1)
SCALED = Resources(2.0, 2, 10, 1)
READY = [ORG, CREATE, *saga(DB1, C)]


def timed_out(operation_id: str, step: str, seconds: int = 60):
    return cmd(RecordStepTimedOut(DB1, operation_id, step, seconds), actor=SYSTEM)


def cancel(operation_id: str, actor=None, command_id=None):
    return cmd(CancelOperation(operation_id), command_id=command_id, **({"actor": actor} if actor else {}))


def payloads(steps, when) -> list:
    state, _ = run(steps)
    return [e.payload for e in decide(state, when, fingerprint_of(when.payload), trusted(when))]


def service(steps):
    return run(steps)[0].services[DB1]


# -- timeouts ----------------------------------------------------------------------------------------

def test_a_render_timeout_fails_the_creation_without_compensation():
    assert payloads([ORG, CREATE], timed_out(C, "render")) == [
        ServiceFailed(C, DB1, "step render did not finish within 60 s", code="timed_out", step="render")]
    assert service([ORG, CREATE, timed_out(C, "render")]).status is ServiceStatus.FAILED


def test_a_commit_timeout_of_a_scale_leaves_the_service_ready_as_it_was():
    steps = [*READY, SCALE, rendered(DB1, S), timed_out(S, "commit", 300)]
    s = service(steps)
    assert (s.status, s.resources, s.running) == (ServiceStatus.READY, SMALL, None)
    assert payloads(steps[:-1], steps[-1]) == [ServiceFailed(
        S, DB1, "step commit did not finish within 300 s", status="Ready", resources=SMALL, code="timed_out",
        step="commit")]


def test_a_timeout_awaiting_the_pop_is_compensated():
    steps = [*READY, SCALE, rendered(DB1, S), committed(DB1, S), timed_out(S, "pop-report", 1800)]
    assert payloads(steps[:-1], steps[-1]) == [ServiceFailed(
        S, DB1, "step pop-report did not finish within 1800 s", compensate=True, status="Failed",
        code="timed_out")]
    s = service(steps)
    assert (s.running, s.compensating) == (S, "failed")
    after = service([*steps, reverted(DB1, S)])
    assert (after.status, after.resources, after.running) == (ServiceStatus.READY, SMALL, None)


def test_a_stale_timeout_changes_nothing():
    steps = [*READY, SCALE, rendered(DB1, S)]
    assert payloads(steps, timed_out(S, "render")) == []  # render is done already
    assert payloads(READY, timed_out(C, "pop-report")) == []  # the operation finished


# -- compensation ------------------------------------------------------------------------------------

def test_reports_during_compensation_are_ignored():
    failing = [ORG, CREATE, *saga(DB1, C, "Failed", reason="no nodes")]
    assert payloads(failing, reported(DB1, C, "Ready")) == []
    assert payloads(failing, reverted(DB1, C, "beef")) == [ServiceClaimReverted(C, DB1, "beef", "Failed")]
    assert payloads([*failing, reverted(DB1, C)], reverted(DB1, C)) == []  # delivered twice


def test_a_failed_creation_releases_its_quota_and_can_be_deleted():
    failed = [ORG, CREATE, *saga(DB1, C, "Failed"), reverted(DB1, C)]
    state, _ = run(failed)
    assert not state.services[DB1].counts_toward_quota
    delete_events = payloads(failed, DELETE)
    assert any(isinstance(p, OperationStarted) and p.action == "delete" for p in delete_events)
    # the file is already gone: the saga's commit changes nothing, and that finishes the deletion
    unchanged = cmd(RecordServiceClaimCommitted(DB1, D, "frankfurt", "p", "abc", changed=False), actor=SYSTEM)
    gone = [*failed, DELETE, rendered(DB1, D)]
    assert payloads(gone, unchanged)[-1] == ServiceDeleted(D, DB1, "Deleted")


def test_an_unchanged_apply_finishes_ready_and_starts_the_next():
    unchanged = cmd(RecordServiceClaimCommitted(DB1, S, "frankfurt", "p", "abc", changed=False), actor=SYSTEM)
    steps = [*READY, SCALE, DELETE, rendered(DB1, S)]
    out = payloads(steps, unchanged)
    assert isinstance(out[1], ServiceReady) and out[1].endpoint is None
    assert isinstance(out[2], OperationStarted) and out[2].action == "delete"


# -- cancellation ------------------------------------------------------------------------------------

def test_cancelling_a_queued_scale_drops_it_and_restores_the_desired_resources():
    steps = [*READY, SCALE, SCALE_AGAIN]
    out = payloads(steps, cancel(S2))
    assert out[0] == OperationCancelled(S2, DB1, False, "Scaling", SCALED)
    s = service([*steps, cancel(S2)])
    assert (s.resources, [q.operation_id for q in s.queued], s.running) == (SCALED, [], S)


def test_cancelling_a_queued_deletion_restores_the_status():
    s = service([*READY, SCALE, DELETE, cancel(D)])
    assert (s.status, s.queued) == (ServiceStatus.SCALING, ())


def test_cancelling_while_rendering_or_committing_is_refused():
    [rejected] = [p for p in payloads([ORG, CREATE], cancel(C)) if isinstance(p, CommandRejected)]
    assert (rejected.reason_code, rejected.field) == ("conflict", "operation_id")
    assert "being rendered and committed" in rejected.message


def test_cancelling_a_creation_awaiting_the_pop_reverts_it_and_ends_the_service():
    awaiting = [ORG, CREATE, rendered(DB1, C), committed(DB1, C), SCALE]
    out = payloads(awaiting, cancel(C))
    assert out[0] == OperationCancelled(C, DB1, True, "Scaling")
    done = payloads([*awaiting, cancel(C)], reverted(DB1, C))
    assert done == [OperationCancelled(S, DB1, False, "Scaling"),
                    ServiceClaimReverted(C, DB1, "5ca1ab1e", "Deleted")]
    state, produced = run([*awaiting, cancel(C), reverted(DB1, C)])
    assert state.services[DB1].status is ServiceStatus.DELETED
    assert replay(TENANT, produced) == state
    # its name is free again
    again = cmd(CreateService(DB2, "orders", "vitess", "lagos", "small"))
    assert any(isinstance(p, OperationStarted) for p in payloads([*awaiting, cancel(C), reverted(DB1, C)], again))


def test_cancelling_a_scale_awaiting_the_pop_restores_the_previous_resources():
    steps = [*READY, SCALE, rendered(DB1, S), committed(DB1, S), cancel(S), reverted(DB1, S)]
    s = service(steps)
    assert (s.status, s.resources, s.running) == (ServiceStatus.READY, SMALL, None)


def test_cancel_refusals_say_why():
    def refusal(steps, command):
        [r] = [p for p in payloads(steps, command) if isinstance(p, CommandRejected)]
        return r.reason_code, r.message

    code, message = refusal(READY, cancel(C))
    assert code == "conflict" and "nothing to cancel" in message
    code, message = refusal(READY, cancel("5b7e1d2c-3a4f-4e6d-8c9b-0a1b2c3d4e5f"))
    assert code == "not_found"
    code, _ = refusal([*READY, SCALE, DELETE], cancel(D, actor=MEMBER))
    assert code == "forbidden"
    again = cancel(S, command_id="9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
    code, message = refusal([*READY, SCALE, rendered(DB1, S), committed(DB1, S), cancel(S)], again)
    assert code == "conflict" and "being reverted" in message


def test_a_pop_report_for_a_cancelled_operation_is_ignored():
    steps = [*READY, SCALE, rendered(DB1, S), committed(DB1, S), cancel(S)]
    assert payloads(steps, reported(DB1, S)) == []


def test_every_journey_replays_to_the_same_state():
    for steps in (
        [*READY, SCALE, SCALE_AGAIN, cancel(S2), *saga(DB1, S)],
        [ORG, CREATE, *saga(DB1, C, "Failed"), reverted(DB1, C), DELETE],
        [*READY, SCALE, DELETE, rendered(DB1, S), committed(DB1, S), timed_out(S, "pop-report"),
         reverted(DB1, S), *saga(DB1, D, "Deleted")],
    ):
        state, produced = run(steps)
        assert replay(TENANT, produced) == state
        assert isinstance(state, TenantState)
