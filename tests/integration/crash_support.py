"""What the crash tests share: publishing commands while platform processes are SIGKILLed, and the
checks that nothing was lost or repeated — every command judged exactly once, every event written
once with gap-free sequences, and a read model equal to a rebuild from the log."""
from __future__ import annotations

import queue
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence

import psycopg

from commands import CommandEnvelope, operation_id
from events import CommandRejected, Envelope, OperationAccepted
from projections.rebuild import rebuild
from projections.settings import Settings
from tests.conftest import wait_for
from tests.integration.kafka_support import read_events
from tests.integration.process_support import kill

PARTITIONS = 12  # of dbaas.commands and dbaas.events (deploy/topics.yaml)


def publish_while_killing(stack, cmds: Sequence[CommandEnvelope], kills: dict[int, str],
                          duplicates: Sequence[CommandEnvelope] = ()) -> list[str]:
    """Publish `cmds`, then `duplicates` again; once command i of `kills` is with the broker, its
    component is SIGKILLed (one killer thread: each kill waits for the previous victim's restart).
    Returns the components killed, in order."""
    orders: queue.Queue = queue.Queue()
    killed: list[str] = []

    def killer():
        while (victim := orders.get()) is not None:
            kill(stack, victim)
            killed.append(victim)
    killing = threading.Thread(target=killer)
    killing.start()
    publisher = stack.publisher()
    try:
        for i, c in enumerate(cmds):
            publisher.publish_async(c)
            if i in kills:
                publisher.producer.flush(30)
                orders.put(kills[i])
        for c in duplicates:
            publisher.publish_async(c)
        publisher.producer.flush(60)
    finally:
        publisher.close()
        orders.put(None)
        killing.join(300)
    return killed


def wait_all_visible(stack, cmds: Sequence[CommandEnvelope], timeout: float = 300) -> None:
    """Until every command's operation is in the read model."""
    operations = [operation_id(c.tenant_id, c.command_id) for c in cmds]  # scoped to the tenant
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        def all_visible():
            seen = conn.execute("select count(*) from operations where id = any(%s)", (operations,)).fetchone()[0]
            return seen == len(operations)
        wait_for(all_visible, timeout=timeout, interval=0.5, what="every command's operation in the read model")


def judged_once(stack, cmds: Sequence[CommandEnvelope], tenants: Sequence[str]) -> list[Envelope]:
    """Assert every command has exactly one outcome, no event was written twice and every
    aggregate's sequence runs 1, 2, 3 … without a gap; returns the tenants' events."""
    log = [e for e in read_events(stack, "dbaas.events", PARTITIONS) if e.tenant_id in tenants]
    outcomes = Counter(e.command_id for e in log if isinstance(e.payload, (OperationAccepted, CommandRejected)))
    assert set(outcomes) == {c.command_id for c in cmds}, "a command has no outcome"
    assert [cid for cid, n in outcomes.items() if n != 1] == [], "a command was judged twice"
    assert len({e.event_id for e in log}) == len(log), "an event was written twice"
    by_aggregate: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in log:
        by_aggregate[(e.aggregate_type, e.aggregate_id)].append(e.sequence)
    gaps = {k: s for k, s in by_aggregate.items() if s != list(range(1, len(s) + 1))}
    assert gaps == {}, f"sequence gaps or reordering: {list(gaps.items())[:3]}"
    return log


def read_model(dsn: str, tenants: Sequence[str]) -> dict:
    """The tenants' rows of the organizations, services and operations read models."""
    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"select * from {table} where {col} = any(%s) order by id",
                                    (list(tenants),)).fetchall()
                for table, col in (("organizations", "id"), ("services", "tenant_id"), ("operations", "tenant_id"))}


def equals_a_rebuild(stack, tenants: Sequence[str]) -> dict:
    """Assert the tenants' read model is the same after a rebuild from the log; returns it."""
    live = read_model(stack.postgres_dsn, tenants)
    rebuild(Settings(kafka_bootstrap=stack.kafka, registry_url=stack.registry, database_url=stack.postgres_dsn))
    assert read_model(stack.postgres_dsn, tenants) == live
    return live
