"""Crash safety of the service saga: SIGKILLed again and again while operations flow (sent in waves,
since the saga commits what a batch of input asks for together), it ends
with exactly one GitOps commit per operation (found by its Operation-Id trailer), every
operation committed and awaiting its PoP, and no step recorded twice."""
from __future__ import annotations

import subprocess
import uuid
from collections import Counter

import psycopg

from commands import CreateOrganization, CreateService, DeleteService, ScaleService, operation_id
from events import ServiceClaimCommitted, ServiceClaimRendered, ServiceClaimReverted
from processors.saga import revert_operation_id
from tests.conftest import wait_for
from tests.integration.kafka_support import command, read_events
from tests.integration.process_support import kill


def test_saga_killed_at_step_boundaries_commits_each_operation_once(stack):
    tenant = f"sagacrash-{uuid.uuid4().hex[:6]}"
    publisher = stack.publisher()
    creates = [command(tenant, CreateService(str(uuid.uuid4()), f"db-{i}", "scylla", "ashburn", "small"))
               for i in range(24)]
    ops = [operation_id(tenant, c.command_id) for c in creates]

    def committed() -> int:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            return conn.execute("select count(*) from operations where id = any(%s) and done_steps >= 2",
                                (ops,)).fetchone()[0]

    # Kill the saga as soon as each wave of creations has moved it on, until all are committed.
    try:
        publisher.publish(command(tenant, CreateOrganization(tenant, tenant)))
        kills = _in_waves(stack, publisher, [creates[i:i + 6] for i in range(0, len(creates), 6)], committed,
                          "the saga to make progress")
    finally:
        publisher.close()
    wait_for(lambda: committed() == len(ops), timeout=180, what="every creation to be committed")
    assert kills >= 3

    remote = stack.gitops_remote.removeprefix("file://")
    log = subprocess.run(["git", "--git-dir", remote, "log", "--format=%(trailers:key=Operation-Id,valueonly)",
                          "main"], capture_output=True, text=True, check=True).stdout.split()
    per_op = Counter(op for op in log if op in ops)
    assert per_op == Counter({op: 1 for op in ops}), "an operation has no commit or more than one"

    steps = [e for e in read_events(stack, "dbaas.events", 12) if e.tenant_id == tenant
             and isinstance(e.payload, (ServiceClaimRendered, ServiceClaimCommitted))]
    recorded = Counter((type(e.payload).__name__, e.payload.operation_id) for e in steps)
    assert set(recorded.values()) == {1} and len(recorded) == 2 * len(ops)


def _pop_reports(stack, tenant: str, reports: list[tuple[str, str, str]]) -> None:
    """(service id, operation id, phase) reports from PoP ashburn, as its status bridge sends them."""
    for service_id, op_id, phase in reports:
        stack.report("ashburn", tenant, service_id, op_id, phase,
                     reason="no capacity" if phase == "Failed" else None)


def _in_waves(stack, publisher, waves, progress, what: str) -> int:
    """Publish `waves` of commands one after the other and SIGKILL the saga as soon as each has moved
    `progress()` on (the rest of the wave may still be in flight). The saga commits what a batch of
    input asks for together, so commands sent all at once would be done before a second kill."""
    kills = 0
    for wave in waves:
        before = progress()
        for c in wave:
            publisher.publish_async(c)
        publisher.producer.flush(30)
        wait_for(lambda before=before: progress() > before, timeout=180, what=what)
        kill(stack, "saga", timeout=90)
        kills += 1
    return kills


def _kill_while(stack, progress, total: int, what: str, most: int = 4) -> int:
    """SIGKILL the saga each time `progress()` moved on, until it reaches `total`."""
    kills, seen = 0, -1
    while (done := progress()) < total:
        if done > seen and kills < most:
            kill(stack, "saga", timeout=90)
            kills += 1
            seen = done
        wait_for(lambda: progress() > done or progress() == total, timeout=180, what=what)
    return kills


def test_saga_killed_during_scales_deletes_and_compensations_ends_each_once(stack):
    """Ready services get a scale (half of them) or a delete (the other half); then half of the
    scales fail at the PoP and are compensated — with the saga killed all along. Every operation
    ends (scale: Succeeded or Failed with its revert Done; delete: committed), each with one commit,
    each revert with one commit, each step recorded once."""
    tenant = f"sagacrash2-{uuid.uuid4().hex[:6]}"
    ids = [str(uuid.uuid4()) for _ in range(12)]
    publisher = stack.publisher()
    try:
        publisher.publish(command(tenant, CreateOrganization(tenant, tenant)))
        creates = [command(tenant, CreateService(sid, f"db-{i}", "aerospike", "ashburn", "small"))
                   for i, sid in enumerate(ids)]
        for c in creates:
            publisher.publish_async(c)
        publisher.producer.flush(30)

        def rows(op_ids, condition: str) -> int:
            with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
                return conn.execute(f"select count(*) from operations where id = any(%s) and {condition}",
                                    (op_ids,)).fetchone()[0]

        create_ops = [operation_id(tenant, c.command_id) for c in creates]
        wait_for(lambda: rows(create_ops, "done_steps >= 2") == len(ids), timeout=240, what="creates committed")
        _pop_reports(stack, tenant, [(sid, op, "Ready") for sid, op in zip(ids, create_ops, strict=True)])
        wait_for(lambda: rows(create_ops, "state = 'Succeeded'") == len(ids), timeout=120, what="creates Ready")

        scales = [command(tenant, ScaleService(sid, cpu=2)) for sid in ids[:6]]
        deletes = [command(tenant, DeleteService(sid)) for sid in ids[6:]]
        scale_ops = [operation_id(tenant, c.command_id) for c in scales]
        delete_ops = [operation_id(tenant, c.command_id) for c in deletes]
        ops = scale_ops + delete_ops
        mixed = [c for pair in zip(scales, deletes, strict=True) for c in pair]
        kills = _in_waves(stack, publisher, [mixed[i:i + 4] for i in range(0, len(mixed), 4)],
                          lambda: rows(ops, "done_steps >= 2"), "scales and deletes to commit")
    finally:
        publisher.close()
    kills += _kill_while(stack, lambda: rows(ops, "done_steps >= 2"), len(ops), "scales and deletes to commit")

    failing, passing = scale_ops[:3], scale_ops[3:]
    _pop_reports(stack, tenant, [(ids[scale_ops.index(op)], op, "Failed") for op in failing]
                 + [(ids[scale_ops.index(op)], op, "Ready") for op in passing]
                 + [(ids[6 + delete_ops.index(op)], op, "Deleted") for op in delete_ops])
    kills += _kill_while(stack, lambda: rows(failing, "compensation->>'state' = 'Done'"), len(failing),
                         "compensations to finish", most=3)
    assert kills >= 3
    wait_for(lambda: rows(passing + delete_ops, "state = 'Succeeded'") == len(passing) + len(delete_ops),
             timeout=120, what="the other operations to succeed")
    assert rows(failing, "state = 'Failed'") == len(failing)

    remote = stack.gitops_remote.removeprefix("file://")
    log = subprocess.run(["git", "--git-dir", remote, "log", "--format=%(trailers:key=Operation-Id,valueonly)",
                          "main"], capture_output=True, text=True, check=True).stdout.split()
    reverts = [revert_operation_id(op) for op in failing]
    per_op = Counter(op for op in log if op in ops or op in reverts)
    assert per_op == Counter({op: 1 for op in (*ops, *reverts)}), "an operation or revert has 0 or 2+ commits"

    recorded = Counter(
        (type(e.payload).__name__, e.payload.operation_id)
        for e in read_events(stack, "dbaas.events", 12) if e.tenant_id == tenant
        and isinstance(e.payload, (ServiceClaimRendered, ServiceClaimCommitted, ServiceClaimReverted)))
    assert set(recorded.values()) == {1}
    assert len(recorded) == 2 * (len(ids) + len(ops)) + len(failing)  # creates, scales and deletes, reverts
