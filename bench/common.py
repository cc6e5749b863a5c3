"""What the benchmarks share: their own platform instance, command builders, read-model polling."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from commands import Actor, CommandEnvelope, CreateOrganization, CreateService, SetQuota, operation_id
from events import Quota, ResourceLimit
from runtime.kafka import KafkaAccess

REPO = Path(__file__).resolve().parents[1]
OWNER = Actor("bench", ("org-owner",))


@dataclass(frozen=True)
class Endpoints:
    kafka: KafkaAccess  # the platform's administrator principal
    registry: str
    dsn: str
    home: Path
    api: str = ""  # the instance's HTTP API (the gateway process the launcher runs)

    def signer(self):
        """The instance's gateway key: the command processor believes the actors it signs for."""
        from runtime.signing import Signer

        return Signer.from_text("gateway", json.loads((self.home / "secrets.json").read_text())["signing_key_gateway"])

    def publisher(self):
        from runtime.publisher import Publisher

        return Publisher(self.kafka, self.registry, signer=self.signer())

    def pop_signer(self):
        """The local PoP's key: the projector and the alerts processor believe the samples it signs."""
        from runtime.signing import Signer

        return Signer.from_text("pop-local", json.loads((self.home / "secrets.json").read_text())["signing_key_pop-local"])


def platform_cpu(home: Path) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each component of the instance at `home` (by the
    name of its pid file): each component runs in its own session, whose id is the pid in its pid
    file (children included: PostgreSQL's backends, a supervisor's child). A process that exited is
    no longer counted: compare two readings of components that ran throughout."""
    sessions: dict[int, str] = {}
    for pid_file in (home / "run").glob("*.pid"):
        words = pid_file.read_text().split()
        if words and words[0].isdigit():
            sessions[int(words[0])] = pid_file.stem
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = sessions.get(int(fields[3]))  # field 6 of stat: the session id
        if name is not None:
            used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


def cpu_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each component used between two `platform_cpu` readings, most first."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def compiling_seconds(home: Path, component: str = "kafka") -> float | None:
    """Seconds the JVM of `component` (its pid file's pid) has spent compiling its code so far
    (HotSpot's `java.ci.totalTime`, through `jcmd`: elapsed time of the compilations, an upper bound
    of their CPU); None where it cannot be read (no `jcmd`, not a HotSpot JVM)."""
    import shutil

    jcmd, pid_file = shutil.which("jcmd"), home / "run" / f"{component}.pid"
    words = pid_file.read_text().split() if pid_file.exists() else []
    if jcmd is None or not words or not words[0].isdigit():
        return None
    try:
        out = subprocess.run([jcmd, words[0], "PerfCounter.print"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    counters = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    try:
        return int(counters["java.ci.totalTime"]) / int(counters["sun.os.hrt.frequency"])
    except (KeyError, ValueError, ZeroDivisionError):
        return None


def log_ends(ep: Endpoints) -> dict[str, int]:
    """The broker's log end offsets summed per topic (the topics of one pattern of the topic spec
    counted together under it, e.g. `dbaas.audit.{tenant}`), internal ones included: between two
    readings, how many records the broker appended — data records and transaction markers alike (a
    marker takes an offset in every partition its transaction wrote), consumer offsets and
    transaction states too."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    from runtime import topics as topic_spec

    prefixes = {pattern.split("{", 1)[0]: pattern for pattern in topic_spec.load()[1]}

    admin = AdminClient(ep.kafka.client())
    topics = admin.list_topics(timeout=30).topics
    asked = {TopicPartition(name, p): OffsetSpec.latest() for name, t in topics.items() for p in t.partitions}
    ends: dict[str, int] = {}
    for tp, future in admin.list_offsets(asked, request_timeout=30).items():
        try:
            end = future.result().offset
        except KafkaException:  # a topic being created or deleted as the broker was asked: left out
            continue
        group = next((pattern for prefix, pattern in prefixes.items() if tp.topic.startswith(prefix)), tp.topic)
        ends[group] = ends.get(group, 0) + end
    return ends


def appended(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Records the broker appended per topic between two `log_ends` readings, most first (a topic
    that appeared in between counted from 0)."""
    grown = {name: end - before.get(name, 0) for name, end in after.items()}
    return dict(sorted(((k, v) for k, v in grown.items() if v > 0), key=lambda kv: -kv[1]))


def settle(home: Path, busy: float = 0.25, quiet: int = 3, timeout: float = 240.0) -> dict[str, float]:
    """Wait until the instance's processes use less than `busy` of a core over `quiet` two-second
    windows in a row: those a restart made fold the event log (the alerts processor, the scheduler)
    are done with it, not merely waiting for their consumer group between two folds. Returns the
    `platform_cpu` reading taken when the quiet windows began: what the work before cost, without
    the idle windows waited out."""
    deadline = time.monotonic() + timeout
    calm = 0
    quiet_from = reading = platform_cpu(home)
    while time.monotonic() < deadline and calm < quiet:
        time.sleep(2.0)
        after = platform_cpu(home)
        if (sum(after.values()) - sum(reading.values())) / 2.0 < busy:
            calm += 1
        else:
            calm, quiet_from = 0, after
        reading = after
    return quiet_from


class MetricsStream:
    """What a fleet's metrics sampling sends the control plane: ``services`` services, each sampled
    every ``interval`` seconds, as signed ``ServiceMetrics`` records on the tenants'
    ``dbaas.metrics.{tenant}`` topics (the PoP agents' publisher), spread evenly over each second,
    for the alerts processor and the telemetry projector to consume while a benchmark runs."""

    def __init__(self, ep: Endpoints, services: int = 1000, interval: float = 10.0, tenants: int = 50):
        import threading

        from operators.localpop.metrics import MetricsPublisher

        self.publisher = MetricsPublisher(ep.kafka, ep.registry, ep.pop_signer(), flush_timeout=5.0)
        self.services = [(f"bench-metrics-{i % tenants:02d}", str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-{i}")))
                         for i in range(services)]
        self.per_second = max(1, round(services / interval))
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _record(self, tenant: str, service_id: str, i: int) -> dict:
        return {"tenant_id": tenant, "service_id": service_id, "engine": "yugabyte", "pop": "local",
                "sampled_at": datetime.now(timezone.utc), "connections": 3 + i % 5, "max_connections": 100,
                "transactions_per_s": 12.5, "ops_per_s": None, "storage_bytes": 50_000_000 + i,
                "storage_limit_bytes": 1_000_000_000, "storage_estimated": False, "keys": None}

    def _run(self) -> None:
        i, tick = 0, time.monotonic()
        while not self._stop.is_set():
            batch = [self._record(*self.services[(i + k) % len(self.services)], i + k) for k in range(self.per_second)]
            i += len(batch)
            self.sent += self.publisher.publish(batch)
            tick += 1.0
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def __enter__(self) -> MetricsStream:
        self.publisher.publish([self._record(t, s, 0) for t, s in self.services[:50]])  # topics made before timing
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.publisher.close()


def platform(without: str = "", name: str = "bench-stack", offset: int = 2000,
             env: dict[str, str] | None = None, replicas: int = 1) -> Endpoints:
    """Start (or reuse) a benchmark's own platform instance: `.data/<name>`, ports +`offset`.

    `without`: components to leave out, e.g. "saga,localpop-agent" to measure the event spine alone;
    `env`: settings for this `up` (a value "" removes the variable); `replicas`: instances each of the
    command processor, projector and saga (`up --replicas`).
    The GitOps benchmark uses an instance of its own: a saga started on the event spine's instance
    would first work through every operation those benchmarks created."""
    home = Path(os.environ.get("DBAAS_BENCH_HOME", REPO / ".data")) / name
    # e.g. DBAAS_BENCH_ALSO_WITHOUT=audit: what a component costs (on a fresh `up` of the instance)
    without = ",".join(filter(None, [without, os.environ.get("DBAAS_BENCH_ALSO_WITHOUT", "")]))
    offset = int(os.environ.get("DBAAS_BENCH_PORT_OFFSET", "2000")) - 2000 + offset
    proc = subprocess.run([sys.executable, "-m", "cli.main", "stack", "up", "--home", str(home),
                           "--port-offset", str(offset), "--replicas", str(replicas), "--json", "--show-secrets"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                          # No PoP ever reports to the benchmark instance: its operations must not time
                          # out (and be reverted) during a later run.
                          env={k: v for k, v in {**os.environ, "DBAAS_STACK_WITHOUT": without,
                                                  "DBAAS_SAGA_STEP_TIMEOUTS": "pop-report=31536000",
                                                  **(env or {})}.items() if v != ""})
    if proc.returncode:
        raise SystemExit(f"the benchmark platform did not start; see {home}/logs")
    ep = json.loads(proc.stdout)["endpoints"]
    kafka = KafkaAccess(ep["kafka_bootstrap"], ep["kafka_username"], ep["kafka_password"])
    return Endpoints(kafka, ep["schema_registry_url"], ep["postgres_dsn"], home, ep.get("api_url", ""))


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


def operations(cmds: list[CommandEnvelope]) -> list[str]:
    """The operation ids the commands start (scoped to their organizations)."""
    return [operation_id(c.tenant_id, c.command_id) for c in cmds]


def watch_visible(dsn: str, ops: list[str], published: Callable[[], int], seen: dict[int, float],
                  timeout: float = 600.0, on_progress=None) -> None:
    """Record in `seen` when each operation `ops[i]` first shows in the operations read model, for
    the first `published()` of them (a count that may grow while this runs), until all are seen.
    Each poll asks only for those published and not seen yet, so that polling while commands flow
    in at a steady rate loads neither PostgreSQL nor the cores it measures."""
    first = 0
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while first < len(ops):
            ready = published()
            window = [i for i in range(first, ready) if i not in seen]
            if window:
                rows = conn.execute("select id from operations where id = any(%s)",
                                    ([ops[i] for i in window],)).fetchall()
                now = time.perf_counter()
                found = {op for (op,) in rows}
                seen.update((i, now) for i in window if ops[i] in found)
                while first < ready and first in seen:
                    first += 1
                if on_progress:
                    on_progress(len(seen), len(ops))
            if first < len(ops) and time.monotonic() > deadline:
                raise SystemExit(f"{len(ops) - len(seen)} commands not visible after {timeout:.0f}s")
            time.sleep(0.005)


def wait_visible(dsn: str, ids: list[str], timeout: float = 600.0, on_progress=None) -> dict[str, float]:
    """Poll the operations read model until every operation id is there; returns first-seen times."""
    seen: dict[int, float] = {}
    watch_visible(dsn, ids, lambda: len(ids), seen, timeout, on_progress)
    return {ids[i]: at for i, at in seen.items()}


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
