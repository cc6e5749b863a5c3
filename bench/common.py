"""What the benchmarks share: their own platform instance, command builders, read-model polling."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from commands import Actor, CommandEnvelope, CreateOrganization, CreateService, SetQuota
from events import Quota, ResourceLimit

REPO = Path(__file__).resolve().parents[1]
OWNER = Actor("bench", ("org-owner",))


@dataclass(frozen=True)
class Endpoints:
    kafka: str
    registry: str
    dsn: str
    home: Path


def platform(without: str = "", name: str = "bench-stack", offset: int = 2000) -> Endpoints:
    """Start (or reuse) a benchmark's own platform instance: `.data/<name>`, ports +`offset`.

    `without`: components to leave out, e.g. "saga,localpop-agent" to measure the event spine alone.
    The GitOps benchmark uses an instance of its own: a saga started on the event spine's instance
    would first work through every operation those benchmarks created."""
    home = Path(os.environ.get("DBAAS_BENCH_HOME", REPO / ".data")) / name
    # e.g. DBAAS_BENCH_ALSO_WITHOUT=audit: what a component costs (on a fresh `up` of the instance)
    without = ",".join(filter(None, [without, os.environ.get("DBAAS_BENCH_ALSO_WITHOUT", "")]))
    offset = int(os.environ.get("DBAAS_BENCH_PORT_OFFSET", "2000")) - 2000 + offset
    proc = subprocess.run([sys.executable, "-m", "cli.main", "stack", "up", "--home", str(home),
                           "--port-offset", str(offset), "--json"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                          # No PoP ever reports to the benchmark instance: its operations must not time
                          # out (and be reverted) during a later run.
                          env={**os.environ, "DBAAS_STACK_WITHOUT": without,
                               "DBAAS_SAGA_STEP_TIMEOUTS": "pop-report=31536000"})
    if proc.returncode:
        raise SystemExit(f"the benchmark platform did not start; see {home}/logs")
    ep = json.loads(proc.stdout)["endpoints"]
    return Endpoints(ep["kafka_bootstrap"], ep["schema_registry_url"], ep["postgres_dsn"], home)


def command(tenant: str, payload) -> CommandEnvelope:
    return CommandEnvelope(command_id=str(uuid.uuid4()), tenant_id=tenant, actor=OWNER,
                           issued_at=datetime.now(timezone.utc), correlation_id=str(uuid.uuid4()),
                           payload=payload)


def org(tenant: str) -> list[CommandEnvelope]:
    """The organization, and a quota roomy enough for every service a benchmark creates in it."""
    roomy = Quota(10000, ResourceLimit(1_000_000, 1_000_000, 1_000_000))
    return [command(tenant, CreateOrganization(tenant, tenant)), command(tenant, SetQuota(roomy))]


def service(tenant: str, i: int) -> CommandEnvelope:
    return command(tenant, CreateService(str(uuid.uuid4()), f"svc-{i}", "yugabyte", "frankfurt", "small"))


def wait_visible(dsn: str, ids: list[str], timeout: float = 600.0, on_progress=None) -> dict[str, float]:
    """Poll the operations read model until every id is there; returns first-seen times."""
    pending = set(ids)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while pending:
            rows = conn.execute("select id from operations where id = any(%s)", (list(pending),)).fetchall()
            now = time.perf_counter()
            for (op_id,) in rows:
                seen[op_id] = now
                pending.discard(op_id)
            if on_progress:
                on_progress(len(ids) - len(pending), len(ids))
            if pending and time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} commands not visible after {timeout:.0f}s")
            if pending:
                time.sleep(0.01)
    return seen


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def progress(label: str):
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or done == total:
            print(f"\r  {label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
            last[0] = now
    return show
