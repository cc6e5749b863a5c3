"""Scale-out by partitions: two instances each of the command processor, the projector and the
saga (`dbaas stack up --replicas 2`) share the event log's partitions through their consumer groups.
One of the two of each is SIGKILLed at a random point under load (its supervisor restarts it; the
group moves its partitions meanwhile): every command still has exactly one outcome, no event is
written twice, every operation has exactly one GitOps commit, and the read model equals a rebuild
from the log."""
from __future__ import annotations

import os
import random
import subprocess
import uuid
from collections import Counter

import psycopg
from confluent_kafka.admin import AdminClient

from commands import CreateOrganization, CreateService, SetQuota, operation_id
from events import CommandRejected, Quota, ResourceLimit
from projections.settings import Settings
from runtime.kafka import partition_for
from tests.conftest import wait_for
from tests.integration.crash_support import (
    PARTITIONS,
    equals_a_rebuild,
    judged_once,
    publish_while_killing,
    wait_all_visible,
)
from tests.integration.kafka_support import command

COMPONENTS = ("command-processor", "projector", "saga")


def groups(stack) -> list[str]:
    """The consumer groups of the command processors, the platform's projectors and the sagas."""
    projectors = Settings(kafka_bootstrap=stack.kafka, registry_url=stack.registry,
                          database_url=stack.postgres_dsn).consumer_group
    return ["dbaas-command-processor", projectors, "dbaas-service-saga"]


def assignments(stack, group: str) -> list[set[int]]:
    """The partitions (of any topic) each member of consumer group `group` holds."""
    admin = AdminClient(stack.kafka.client())
    described = admin.describe_consumer_groups([group])[group].result(30)
    return [{tp.partition for tp in m.assignment.topic_partitions} for m in described.members]


def shared(stack) -> bool:
    """Each group has two members, each holding partitions, together all of them."""
    for group in groups(stack):
        held = assignments(stack, group)
        if len(held) != 2 or not all(held) or set().union(*held) != set(range(PARTITIONS)):
            return False
    return True


def one_tenant_per_partition() -> list[str]:
    tenants: dict[int, str] = {}
    while len(tenants) < PARTITIONS:
        name = f"scale-{uuid.uuid4().hex[:6]}"
        tenants.setdefault(partition_for(name.encode(), PARTITIONS), name)
    return [tenants[p] for p in range(PARTITIONS)]


def test_two_instances_share_the_partitions_and_one_sigkilled_loses_and_repeats_nothing(stack):
    stack.stack_cli("up", "--replicas", "2", "--json")
    try:
        wait_for(lambda: shared(stack), timeout=180, interval=1,
                 what="two instances of the command processor, projector and saga sharing the partitions")
        _load_kill_and_compare(stack)
    finally:
        stack.stack_cli("up", "--replicas", "1", "--json")
    # a stopped instance leaves its groups as it closes; one stopped the hard way (after the stop's
    # grace) is taken out only when its session times out (10 s): poll past that, then judge
    wait_for(lambda: all(len(assignments(stack, g)) == 1 for g in groups(stack)), timeout=60, interval=1,
             what="one member in each group: no instance outlived --replicas 1")


def _load_kill_and_compare(stack) -> None:
    rng = random.Random(os.environ.get("DBAAS_SCALE_SEED", uuid.uuid4().int))
    tenants = one_tenant_per_partition()
    roomy = SetQuota(Quota(10000, ResourceLimit(100000, 100000, 1000000)))
    cmds = [c for t in tenants for c in (command(t, CreateOrganization(t, t)), command(t, roomy))]
    creates = [command(tenants[i % PARTITIONS], CreateService(str(uuid.uuid4()), f"db-{i}", "scylla", "ashburn",
                                                              "small")) for i in range(240)]
    cmds += creates
    duplicates = rng.sample(creates, 30)  # re-published: judged once
    # one of the two instances of each component, each killed once at a random point of the load
    victims = [rng.choice([name, f"{name}-1"]) for name in COMPONENTS]
    rng.shuffle(victims)
    kill_points = sorted(rng.sample(range(40, len(cmds)), len(victims)))

    killed = publish_while_killing(stack, cmds, dict(zip(kill_points, victims, strict=True)), duplicates)
    assert len(killed) == len(COMPONENTS), f"a kill did not happen: {killed}"

    wait_all_visible(stack, cmds)
    created = [operation_id(c.tenant_id, c.command_id) for c in creates]
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        def committed() -> int:
            return conn.execute("select count(*) from operations where id = any(%s) and done_steps >= 2",
                                (created,)).fetchone()[0]
        wait_for(lambda: committed() == len(created), timeout=300, interval=0.5,
                 what="every creation committed to GitOps")

    log = judged_once(stack, cmds, tenants)
    assert not any(isinstance(e.payload, CommandRejected) for e in log), "a command was rejected"

    remote = stack.gitops_remote.removeprefix("file://")
    trailers = subprocess.run(["git", "--git-dir", remote, "log", "--format=%(trailers:key=Operation-Id,valueonly)",
                               "main"], capture_output=True, text=True, check=True).stdout.split()
    per_op = Counter(op for op in trailers if op in set(created))
    assert per_op == Counter({op: 1 for op in created}), "an operation has no commit or more than one"

    live = equals_a_rebuild(stack, tenants)
    assert len(live["operations"]) == len(cmds)
