"""A step the saga cannot carry out for good (`RecordStepFailed`: the chart refused the values, the
change cannot be committed): what `decide` answers and where the service ends. Like a timeout
before the commit: the operation fails with the saga's reason, nothing is reverted, the next
queued operation starts."""

from __future__ import annotations

import pytest
from domain_builders import DB1, MEMBER, SYSTEM, TENANT, cmd, committed, op, rendered, run, saga, trusted

from commands import (
    CreateOrganization,
    CreateService,
    RecordStepFailed,
    ScaleService,
    decide,
    fingerprint_of,
)
from events import CommandRejected, OperationStarted, Resources, ServiceFailed, ServiceStatus

ORG = cmd(CreateOrganization(TENANT, "Acme"))
CREATE = cmd(CreateService(DB1, "orders", "yugabyte", "frankfurt", "small"))
SCALE = cmd(ScaleService(DB1, cpu=2))
SCALE_AGAIN = cmd(ScaleService(DB1, memory_gb=8))
C, S, S2 = op(CREATE), op(SCALE), op(SCALE_AGAIN)
SMALL = Resources(1.0, 2, 10, 1)
READY = [ORG, CREATE, *saga(DB1, C)]
REFUSED = "the service's manifests could not be rendered: release name is over 53 characters"


def failed(operation_id: str, step: str = "render", reason: str = REFUSED, actor=SYSTEM):
    return cmd(RecordStepFailed(DB1, operation_id, step, reason), actor=actor)


def payloads(steps, when) -> list:
    state, _ = run(steps)
    return [e.payload for e in decide(state, when, fingerprint_of(when.payload), trusted(when))]


def service(steps):
    return run(steps)[0].services[DB1]


def test_a_refused_render_fails_the_creation_with_the_reason_and_nothing_to_revert():
    assert payloads([ORG, CREATE], failed(C)) == [
        ServiceFailed(C, DB1, REFUSED, code="render_failed", step="render")]
    s = service([ORG, CREATE, failed(C)])
    assert (s.status, s.running, s.compensating) == (ServiceStatus.FAILED, None, None)


def test_a_refused_commit_of_a_scale_leaves_the_service_ready_and_starts_the_next():
    steps = [*READY, SCALE, SCALE_AGAIN, rendered(DB1, S)]
    answer = payloads(steps, failed(S, "commit"))
    assert answer[0] == ServiceFailed(S, DB1, REFUSED, status="Ready", resources=SMALL, code="commit_failed",
                                      step="commit")
    assert isinstance(answer[1], OperationStarted) and answer[1].operation_id == S2
    s = service([*steps, failed(S, "commit")])
    assert (s.running, s.status) == (S2, ServiceStatus.SCALING)


@pytest.mark.parametrize("steps, report, why", [
    ([*READY, SCALE, rendered(DB1, S)], failed(S, "render"), "the render is done already"),
    ([*READY, SCALE, rendered(DB1, S), committed(DB1, S)], failed(S, "commit"), "the commit is recorded"),
    (READY, failed(C), "the operation finished"),
    ([ORG, CREATE, failed(C)], failed(C), "reported twice"),
])
def test_a_stale_or_repeated_failure_changes_nothing(steps, report, why):
    assert payloads(steps, report) == [], why


@pytest.mark.parametrize("report, code, why", [
    (failed(C, "pop-report"), "invalid", "the PoP's report is the PoP's to fail, not the saga's"),
    (failed(C, actor=MEMBER), "forbidden", "only the platform reports its steps"),
])
def test_a_failure_the_saga_may_not_report_is_rejected(report, code, why):
    answer = payloads([ORG, CREATE], report)
    assert len(answer) == 1 and isinstance(answer[0], CommandRejected), why
    assert answer[0].reason_code == code, why
