"""`python -m bench [e2e] [latency] [rebuild] [replicas]`: the control plane's benchmarks against baselines
measured in the same run on the same platform instance.

(a) e2e      N commands published until all are visible in the read model, vs raw
             confluent-kafka produce+consume of the same number of same-size messages; then the
             same N with tracing and service metrics on (every process exporting spans to the
             instance's Jaeger, `DBAAS_OTLP_ENDPOINT` set, default sampling; a fleet of 1,000
             services' metrics samples, one per service every 10 s, streamed onto the tenants'
             metrics topics for the alerts processor and the telemetry projector) against both
             off (no Jaeger, no samples), in one invocation
             (`--tracing off,on,full,on,off` orders and repeats the runs, `full` recording every
             command's trace; `--tracing skip` leaves them out).
(b) latency  p50/p99 from publish to read-model visibility at a fixed offered rate, vs raw
             produce->consume latency at the same rate.
(c) rebuild  projection rebuild events/s, vs raw PostgreSQL inserts of the same rows (executemany;
             COPY of them printed for scale); `--rebuild-events N` first grows the log to N
             events through the command processor.
(e) replicas the event spine with one and two instances each of the command processor and the
             projector sharing the partitions (`--replicas 1,2,2,1`), the same N commands per run.
(warm-up)    before (a) and (b), runs of N commands until the broker spends little of its CPU
             compiling (`--warmup RUNS`, at most 3 by default): what is measured is a platform
             warmed up as a long-running one is, not a JVM compiling its hot paths.
(d) reads    the query side with 10,000 organizations and 100,000 services (`bench.reads`; not
             in the default list: `make bench` runs `python -m bench.reads` on its own).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import (
    Endpoints,
    MetricsStream,
    appended,
    compiling_seconds,
    cpu_between,
    log_ends,
    operations,
    org,
    percentile,
    platform,
    platform_cpu,
    progress,
    service,
    settle,
    wait_visible,
    watch_visible,
)
from commands import to_avro
from projections.stream import fetch
from runtime.publisher import Publisher


def _raw_topic(ep: Endpoints, partitions: int = 12) -> str:
    name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(ep.kafka.client())
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result()
    return name


def _tenants(pub: Publisher, ep: Endpoints, count: int) -> list[str]:
    tenants = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    cmds = [c for t in tenants for c in org(t)]
    for c in cmds:
        pub.publish_async(c)
    pub.producer.flush(30)
    wait_visible(ep.dsn, operations(cmds))
    return tenants


def _at_its_best(ep: Endpoints, consumer: Consumer) -> None:
    """Before a raw Kafka baseline: the platform done with what came before (after a run the audit
    writer, the alerts processor and the scheduler still fold its events for a while; after a
    restart they fold the log), and the consumer holding its partitions (else the first messages,
    or the clock, wait for its group to form)."""
    settle(ep.home)
    joined = time.monotonic() + 60
    while not consumer.assignment() and time.monotonic() < joined:
        consumer.poll(0.1)


def _throughput(ep: Endpoints, pub: Publisher, n: int) -> tuple[float, int]:
    """N CreateService commands over 50 new tenants: commands/s from the first publish until the
    last is in the read model, and the size of one command."""
    tenants = _tenants(pub, ep, 50)  # also a warm-up: a restarted processor has rebuilt its state
    cmds = [service(tenants[i % len(tenants)], i) for i in range(n)]
    size = len(pub.serde.encode(to_avro(cmds[0])))
    started = time.perf_counter()
    for c in cmds:
        pub.publish_async(c)
    pub.producer.flush(60)
    wait_visible(ep.dsn, operations(cmds), on_progress=progress("visible"))
    return n / (time.perf_counter() - started), size


# The event spine alone: the saga would render and commit every created service meanwhile
# (measured by `python -m bench.gitops`), competing for the same two cores.
EVENT_SPINE = "saga,localpop-agent"
RAW_AT_LEAST = 50_000  # messages per raw run: fewer take tens of milliseconds, whose fixed costs swing the rate
RAW_RUNS = 3


def _raw(ep: Endpoints, size: int, count: int) -> tuple[float, dict[str, int]]:
    """Raw confluent-kafka produce+consume of `count` messages of `size` bytes on a new topic, keyed
    as the commands are spread: messages/s, and what the broker appended meanwhile."""
    topic = _raw_topic(ep)
    payload = os.urandom(size)
    tenants = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(50)]  # keys as the commands' are spread
    producer = Producer({**ep.kafka.client(), "enable.idempotence": True, "acks": "all",
                         "linger.ms": 2})
    consumer = Consumer({**ep.kafka.client(), "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    _at_its_best(ep, consumer)
    ends = log_ends(ep)
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=tenants[i % len(tenants)].encode(), value=payload)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    got = 0
    while got < count:
        got += sum(1 for m in fetch(consumer, 1000, 1.0) if not m.error())  # no wait for a batch to fill
    rate = count / (time.perf_counter() - started)
    consumer.close()
    return rate, appended(ends, log_ends(ep))


def bench_e2e(ep: Endpoints, pub: Publisher, n: int, ours: float | None = None) -> None:
    """`ours`: the control plane's figure when measured already (by `bench_tracing`, tracing on).
    The raw baseline is the median of `RAW_RUNS` runs of at least `RAW_AT_LEAST` messages."""
    print(f"(a) end-to-end throughput, {n} CreateService commands over 50 tenants")
    if ours is None:
        ours, size = _throughput(ep, pub, n)
    else:
        size = len(pub.serde.encode(to_avro(service("size", 0))))
    count = max(n, RAW_AT_LEAST)
    runs = [_raw(ep, size, count) for _ in range(RAW_RUNS)]
    raw = sorted(rate for rate, _ in runs)[len(runs) // 2]
    print(f"    control plane: {ours:8.0f} commands/s   (target >= 2000)")
    print(f"    raw Kafka    : {raw:8.0f} messages/s, the median of "
          + " / ".join(f"{rate:.0f}" for rate, _ in runs)
          + f" ({count} {size}-byte messages per run, produce + consume); " + _appends(runs[-1][1], count, "message"))
    print(f"    ratio        : {ours / raw:8.3f}")


@dataclass(frozen=True)
class Run:
    """One measured run of N commands (`_run`)."""

    n: int
    rate: float  # commands/s until the last command was visible in the read model
    spent: dict[str, float]  # CPU s per component until then
    settled: dict[str, float]  # ... until the platform settled (processes off the path caught up)
    grown: dict[str, int]  # records the broker appended until then, per topic

    @property
    def per_command(self) -> float:
        """µs of the platform's CPU per command until the last was visible."""
        return sum(self.spent.values()) / self.n * 1e6

    def show(self) -> None:
        """Its CPU per component, both ways, and the broker's appends per command."""
        print("      CPU s per component: " + ", ".join(f"{k} {v:.1f}" for k, v in self.spent.items() if v >= 0.1))
        print(f"      until the platform settled: {sum(self.settled.values()) / self.n * 1e6:6.0f} µs per command; "
              + ", ".join(f"{k} {v:.1f}" for k, v in self.settled.items() if v >= 0.1))
        print("      " + _appends(self.grown, self.n, "command"))


def _run(ep: Endpoints, pub: Publisher, n: int, during: AbstractContextManager[object] | None = None) -> Run:
    """`_throughput` of `n` commands on a settled platform (inside `during`, e.g. a metrics stream),
    with what it cost the platform until the last command was visible and until it settled again."""
    settle(ep.home)  # the processes `up` restarted have folded the event log
    used, ends = platform_cpu(ep.home), log_ends(ep)
    with during or nullcontext():
        rate, _ = _throughput(ep, pub, n)
    spent = cpu_between(used, platform_cpu(ep.home))
    settled = cpu_between(used, settle(ep.home))
    return Run(n, rate, spent, settled, appended(ends, log_ends(ep)))


def _appends(grown: dict[str, int], n: int, per: str) -> str:
    """The records the broker appended (`bench.common.appended`) per `per`, in all and by topic."""
    shown = ", ".join(f"{name} {count / n:.2f}" for name, count in grown.items() if count / n >= 0.01)
    return f"broker log appends per {per}: {sum(grown.values()) / n:.2f} ({shown})"


def bench_tracing(n: int, order: str = "off,on") -> dict[str, float]:
    """The same end-to-end run with tracing off (the instance without Jaeger: no process gets
    DBAAS_OTLP_ENDPOINT) and on (Jaeger running, every process exporting its spans), in `order`
    (e.g. `off,on,on,off` to even out what the order does): `up` restarts the control plane with the
    other environment between two runs. Returns the mean commands/s per mode."""
    print(f"(a') tracing's and service metrics' cost end to end, {n} CreateService commands over 50 tenants per run")
    measured: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for mode in order.split(","):
        # on: as configured by default (every API request, one in ten commands published without a
        # context); full: every command's trace recorded
        ep = platform(without=EVENT_SPINE + (",tracing" if mode == "off" else ""),
                      env={"DBAAS_TRACE_ROOT_RATIO": "1" if mode == "full" else ""})
        pub = ep.publisher()
        try:
            _tenants(pub, ep, 1)
            samples = None if mode == "off" else MetricsStream(ep)
            run = _run(ep, pub, n, samples)
        finally:
            pub.close()
        measured.setdefault(mode, []).append(run.rate)
        cpu.setdefault(mode, []).append(run.per_command)
        extra = f", {samples.sent} metrics samples meanwhile" if samples is not None else ""
        print(f"    tracing {mode:<4}  : {run.rate:8.0f} commands/s   {run.per_command:6.0f} µs of the platform's CPU "
              f"per command until the last was visible{extra}")
        run.show()
    means = {mode: sum(rates) / len(rates) for mode, rates in measured.items()}
    cpu_means = {mode: sum(v) / len(v) for mode, v in cpu.items()}
    for mode in ("on", "full"):
        if mode in means and "off" in means:
            print(f"    ratio {mode + '/off':<7}: {means[mode] / means['off']:8.3f}   (means of {len(measured[mode])} "
                  f"and {len(measured['off'])} runs{'; target >= 0.90' if mode == 'on' else ''}); CPU per command "
                  f"{cpu_means[mode] / cpu_means['off']:.3f}x")
    return means


def bench_latency(ep: Endpoints, pub: Publisher, rate: int, seconds: float) -> None:
    total = int(rate * seconds)
    print(f"(b) latency publish -> read model at {rate} commands/s for {seconds:.0f}s ({total} commands)")
    tenants = _tenants(pub, ep, 50)
    settle(ep.home)  # processes `up` restarted fold the event log first: not while latency is measured
    cmds = [service(tenants[i % len(tenants)], i) for i in range(total)]
    ops = operations(cmds)
    sent: list[float] = []  # publish time of cmds[i], appended as they go out
    seen: dict[int, float] = {}
    poller = threading.Thread(target=watch_visible, args=(ep.dsn, ops, lambda: len(sent), seen))
    poller.start()
    start = time.perf_counter()
    for i, c in enumerate(cmds):
        due = start + i / rate
        while time.perf_counter() < due:
            time.sleep(min(0.001, max(due - time.perf_counter(), 0)))
        sent.append(time.perf_counter())
        pub.publish_async(c)
    poller.join()
    lat = [(seen[i] - sent[i]) * 1000 for i in range(total)]

    topic = _raw_topic(ep)
    producer = Producer({**ep.kafka.client(), "enable.idempotence": True, "acks": "all",
                         "linger.ms": 2})
    consumer = Consumer({**ep.kafka.client(), "group.id": topic, "auto.offset.reset": "earliest",
                         "fetch.wait.max.ms": 10})
    consumer.subscribe([topic])
    _at_its_best(ep, consumer)
    raw_lat: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while len(raw_lat) < total:
            for m in fetch(consumer, 100, 0.1):  # as the projector reads: no batch waited for
                if not m.error():
                    raw_lat.append((time.perf_counter() - float(m.value().decode())) * 1000)
        done.set()
    reader = threading.Thread(target=consume)
    reader.start()
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        while time.perf_counter() < due:
            time.sleep(min(0.001, max(due - time.perf_counter(), 0)))
        producer.produce(topic, value=repr(time.perf_counter()).encode())
        producer.poll(0)
    producer.flush(30)
    reader.join(120)
    consumer.close()
    p50, p99, r50, r99 = (percentile(lat, 50), percentile(lat, 99), percentile(raw_lat, 50),
                          percentile(raw_lat, 99))
    print(f"    control plane: p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   (target p99 <= 250 ms)")
    print(f"    raw Kafka    : p50 {r50:7.1f} ms   p99 {r99:7.1f} ms")
    print(f"    ratio        : p50 {p50 / r50:7.1f}x     p99 {p99 / r99:7.1f}x")


REBUILT = ("organizations", "services", "operations", "members", "backups", "subscriptions")


def _log_events(ep: Endpoints) -> int:
    consumer = Consumer({**ep.kafka.client(), "group.id": "bench-watermarks"})
    try:
        parts = consumer.list_topics("dbaas.events", timeout=30).topics["dbaas.events"].partitions
        return sum(high - low for low, high in (consumer.get_watermark_offsets(TopicPartition("dbaas.events", p),
                                                                                  timeout=30) for p in parts))
    finally:
        consumer.close()


def _seed(ep: Endpoints, pub: Publisher, events: int) -> None:
    """Grow the event log to about `events` events with CreateService commands judged by the command
    processor (3 events each), when it is shorter."""
    have = _log_events(ep)
    if have >= events:
        return
    tenants = _tenants(pub, ep, 50)
    cmds = [service(tenants[i % len(tenants)], i) for i in range((events - have) // 3 + 1)]
    for c in cmds:
        pub.publish_async(c)
    pub.producer.flush(120)
    wait_visible(ep.dsn, operations(cmds), on_progress=progress("seeding the log"))


def bench_rebuild(ep: Endpoints, pub: Publisher, events: int = 0) -> None:
    """The rebuild against raw inserts of the very rows it wrote (every rebuilt table), executemany in
    one transaction (psycopg pipelines it: the best plain INSERT); COPY of the same rows for scale."""
    from projections.rebuild import rebuild
    from projections.replay import default_workers
    from projections.settings import Settings

    if events:
        _seed(ep, pub, events)
    settle(ep.home)  # processes `up` restarted fold the event log first: not while the rebuild is timed
    settings = Settings(kafka_bootstrap=ep.kafka, registry_url=ep.registry, database_url=ep.dsn)
    print("(c) projection rebuild (6 read models)")
    show = progress("replayed")
    started = time.perf_counter()
    result = rebuild(settings, progress=lambda p: show(p.replayed, p.total))
    elapsed = time.perf_counter() - started
    events_per_s = result.replayed / elapsed
    wrap = lambda v: psycopg.types.json.Jsonb(v) if isinstance(v, (dict, list)) else v
    with psycopg.connect(ep.dsn, autocommit=True) as conn:
        tables = {}
        for name in REBUILT:
            cur = conn.execute(f"select * from {name}")
            tables[name] = ([d.name for d in cur.description], [[wrap(v) for v in row] for row in cur.fetchall()])
        rows = sum(len(r) for _c, r in tables.values())

        def load(shape: str, copy: bool) -> float:
            """Rows/s writing every row into temporary tables of each table's `shape`, in one transaction."""
            prefix = f"raw_{'copy' if copy else 'insert'}_{shape.split()[-1]}"
            for name in REBUILT:
                conn.execute(f"create temporary table {prefix}_{name} (like {name} {shape})")
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                for name, (columns, values) in tables.items():
                    if copy:
                        with cur.copy(f"copy {prefix}_{name} ({', '.join(columns)}) from stdin") as out:
                            for row in values:
                                out.write_row(row)
                    elif values:
                        cur.executemany(f"insert into {prefix}_{name} ({', '.join(columns)}) "
                                        f"values ({', '.join(['%s'] * len(columns))})", values)
            return rows / (time.perf_counter() - started)

        raw = load("including all", copy=False)
        bare = load("including defaults", copy=False)
        copied = load("including all", copy=True)
    print(f"    rebuild      : {events_per_s:8.0f} events/s ({result.replayed} events -> {rows} rows, "
          f"{rows / elapsed:.0f} rows/s, {elapsed:.1f}s, {default_workers(result.replayed)} replaying processes; "
          "target >= 0.5 of raw inserts)")
    print("    phases (s)   : " + ", ".join(f"{phase} {s:.2f}" for phase, s in result.seconds.items()))
    print(f"    raw inserts  : {raw:8.0f} rows/s (the same rows, executemany, one transaction, same indexes)")
    print(f"    ratio        : {events_per_s / raw:8.3f}   (rows/s: {rows / elapsed / raw:.3f})")
    print(f"    without the indexes: {bare:8.0f} rows/s (ratio {events_per_s / bare:.3f}); COPY, same indexes: "
          f"{copied:.0f} rows/s (ratio {events_per_s / copied:.3f})")


def bench_replicas(n: int, order: str = "1,2") -> None:
    """The event spine with one and with two instances each of the command processor and the
    projector sharing the partitions (`up --replicas`), the same N commands per run, in `order`
    (`up` starts or stops the second instances between two runs): commands/s and the platform's CPU
    per command, and the ratio of two instances to one."""
    print(f"(e) scale-out by partitions, {n} CreateService commands over 50 tenants per run")
    measured: dict[int, list[float]] = {}
    for replicas in (int(r) for r in order.split(",")):
        ep = platform(without=EVENT_SPINE + ",tracing", replicas=replicas)
        pub = ep.publisher()
        try:
            _tenants(pub, ep, 1)
            run = _run(ep, pub, n)  # settled first: the instances `up` started have folded their partitions
        finally:
            pub.close()
        measured.setdefault(replicas, []).append(run.rate)
        print(f"    {replicas} instance(s) : {run.rate:8.0f} commands/s   {run.per_command:6.0f} µs of the "
              "platform's CPU per command until the last was visible")
        run.show()
    means = {r: sum(v) / len(v) for r, v in measured.items()}
    if 1 in means and 2 in means:
        print(f"    ratio 2/1       : {means[2] / means[1]:8.3f}   (means of {len(measured[2])} and {len(measured[1])} "
              "runs; one host of 2 cores: two processes judge and commit side by side, no core is added)")


def warm_up(n: int, rounds: int, compiling: float = 0.25) -> None:
    """Bring the platform to the state a long-running one is in before anything is measured: the
    broker is a JVM, and a fresh one spends its first runs compiling its hot paths, at a higher CPU
    cost per command (docs/architecture.md, "Known limits"). Runs of `n` commands until the
    broker's compilations took at most `compiling` of its CPU in a run (their elapsed time,
    `compiling_seconds`: an upper bound), `rounds` at most (all of them where that time cannot be
    read); prints each run's figures."""
    print(f"(warm-up) up to {rounds} runs of {n} CreateService commands, until the broker is warm")
    ep = platform(without=EVENT_SPINE)  # as (b) and (c) find it: no process restarted after the warm-up
    pub = ep.publisher()
    try:
        _tenants(pub, ep, 1)
        for i in range(1, rounds + 1):
            compiled = compiling_seconds(ep.home)
            run = _run(ep, pub, n)
            after, broker = compiling_seconds(ep.home), run.settled.get("kafka", 0.0)
            share = (after - compiled) / broker if compiled is not None and after is not None and broker else None
            print(f"    run {i}: {run.rate:6.0f} commands/s, the broker {broker / n * 1e6:5.0f} µs of CPU per command"
                  + (f", compiling {share:.0%} of it" if share is not None else "")
                  + f" (the platform {sum(run.settled.values()) / n * 1e6:5.0f} µs)")
            if share is not None and share <= compiling:
                return
        print(f"    {rounds} warm-up runs: the broker may still be compiling, the figures below show it")
    finally:
        pub.close()


def _modes(text: str) -> str:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if modes != ["skip"] and (not modes or not set(modes) <= {"off", "on", "full"}):
        raise argparse.ArgumentTypeError("a list of off, on and full (e.g. off,on,full,on,off), or skip")
    return ",".join(modes)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("which", nargs="*", default=["e2e", "latency", "rebuild", "replicas"])
    parser.add_argument("-n", type=int, default=10000, help="commands for the e2e benchmark")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--rebuild-events", type=int, default=60000,
                        help="rebuild: grow the event log to this many events first (0: as it is)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tracing", default="off,on", type=_modes,
                        help="e2e: runs with tracing off, on (default sampling) and full (every trace "
                             "recorded), in this order (default off,on), or skip")
    parser.add_argument("--replicas", default="1,2,2,1",
                        help="replicas: instances per run, in this order (default 1,2,2,1)")
    parser.add_argument("--warmup", type=int, default=3, metavar="RUNS",
                        help="e2e, latency: at most this many runs of N commands first, until the broker "
                             "is warm (default 3; 0: none)")
    args = parser.parse_args()
    if args.warmup and {"e2e", "latency"} & set(args.which):
        warm_up(args.n, args.warmup)
    traced = bench_tracing(args.n, args.tracing) if "e2e" in args.which and args.tracing != "skip" else {}
    ep = platform(without=EVENT_SPINE)
    pub = ep.publisher()
    try:
        if "e2e" in args.which:
            bench_e2e(ep, pub, args.n, traced.get("on"))
        if "latency" in args.which:
            bench_latency(ep, pub, args.rate, args.seconds)
        if "rebuild" in args.which:
            bench_rebuild(ep, pub, args.rebuild_events)
        if "replicas" in args.which:
            pub.close()
            bench_replicas(args.n, args.replicas)
            ep = platform(without=EVENT_SPINE)  # one instance each again
            pub = ep.publisher()
        if "reads" in args.which:
            from bench.reads import bench_memory, bench_reads

            bench_reads(ep)
            bench_memory(100_000, 10_000, 12_000)
    finally:
        pub.close()
    print(f"(the benchmark platform stays up: `dbaas stack down --home {ep.home}` stops it)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
