"""Crash safety of the service saga: SIGKILLed again and again while operations flow, it ends
with exactly one GitOps commit per operation (found by its Operation-Id trailer), every
operation committed and awaiting its PoP, and no step recorded twice."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import psycopg

from commands import CreateOrganization, CreateService
from commands.publisher import Publisher
from events import ServiceClaimCommitted, ServiceClaimRendered
from tests.conftest import wait_for
from tests.integration.kafka_support import command, read_events


def _child(stack) -> int:
    return int(Path(stack.home, "run", "saga.child.pid").read_text())


def test_saga_killed_at_step_boundaries_commits_each_operation_once(stack):
    tenant = f"sagacrash-{uuid.uuid4().hex[:6]}"
    publisher = Publisher(stack.kafka, stack.registry)
    creates = [command(tenant, CreateService(str(uuid.uuid4()), f"db-{i}", "scylla", "ashburn", "small"))
               for i in range(24)]
    try:
        publisher.publish(command(tenant, CreateOrganization(tenant, tenant)))
        for c in creates:
            publisher.publish_async(c)
        publisher.producer.flush(30)
    finally:
        publisher.close()
    ops = [c.command_id for c in creates]

    def committed() -> int:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            return conn.execute("select count(*) from operations where id = any(%s) and done_steps >= 2",
                                (ops,)).fetchone()[0]

    # Kill the saga whenever it has moved on by at least one operation, until all are committed.
    kills, seen = 0, -1
    while (done := committed()) < len(ops):
        if done > seen and kills < 5:
            pid = _child(stack)
            os.kill(pid, signal.SIGKILL)
            kills += 1
            seen = done
            wait_for(lambda: _child(stack) != pid, timeout=90, what="the saga to be restarted")
        wait_for(lambda: committed() > done or committed() == len(ops), timeout=180,
                 what="the saga to make progress after a restart")
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
