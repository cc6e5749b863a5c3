"""Crash safety of the event spine: the command processor and the projector are SIGKILLed at
random points while commands flow; after their supervisors restart them every command has
exactly one outcome, no event is duplicated, sequences have no gaps, and the read model equals
a rebuild from the log."""
from __future__ import annotations

import os
import random
import uuid
from collections import defaultdict

from commands import CreateOrganization, CreateService, ScaleService, SetQuota
from events import Quota, ResourceLimit
from tests.integration.crash_support import (
    equals_a_rebuild,
    judged_once,
    publish_while_killing,
    wait_all_visible,
)
from tests.integration.kafka_support import command
from tests.integration.process_support import paused


def test_sigkill_at_random_points_loses_and_repeats_nothing(stack):
    # PoP ashburn: the Kubernetes PoP tests start frankfurt's and lagos's API servers, whose GitOps
    # sync would otherwise have to apply these 900 claims first
    with paused(stack, "saga"):
        _crash_and_compare(stack)


def _crash_and_compare(stack) -> None:
    rng = random.Random(os.environ.get("DBAAS_CRASH_SEED", uuid.uuid4().int))
    tenants = [f"crash-{uuid.uuid4().hex[:6]}" for _ in range(6)]
    roomy = SetQuota(Quota(10000, ResourceLimit(100000, 100000, 1000000)))
    cmds = [c for t in tenants for c in (command(t, CreateOrganization(t, t)), command(t, roomy))]
    services: dict[str, list[str]] = defaultdict(list)
    for i in range(900):
        tenant = tenants[i % len(tenants)]
        if services[tenant] and rng.random() < 0.3:
            cmds.append(command(tenant, ScaleService(rng.choice(services[tenant]), replicas=rng.randint(1, 9))))
        else:
            sid = str(uuid.uuid4())
            services[tenant].append(sid)
            cmds.append(command(tenant, CreateService(sid, f"db-{i}", "yugabyte", "ashburn", "small")))
    duplicates = rng.sample(cmds[2 * len(tenants):], 40)  # re-published: must be judged once
    kill_points = sorted(rng.sample(range(50, len(cmds)), 6))
    victims = ["command-processor", "projector"] * 3
    rng.shuffle(victims)

    killed = publish_while_killing(stack, cmds, dict(zip(kill_points, victims, strict=True)), duplicates)
    assert len(killed) == 6, "a kill did not happen"

    wait_all_visible(stack, cmds)
    judged_once(stack, cmds, tenants)
    live = equals_a_rebuild(stack, tenants)
    assert len(live["operations"]) == len(cmds)
