"""`python -m bench.cdc [--rate 1000] [--seconds 20]`: change-data-capture latency, INSERT → a
tenant's consumer, at `--rate` rows/s, through the platform (a yugabyte service in PoP local whose
CDC was enabled by command: the saga's KafkaConnector, registered by the local PoP agent) against a
Debezium connector registered by hand on the same database in the same run (same converter, same
inserts; its own slot and publication). Each row carries the time it was sent; a consumer per
topic decodes every change (Avro, schema registry) and takes the difference. Prints p50/p99/max."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid

import psycopg
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bench.common import command, org, platform
from commands import CreateService, DisableCdc, EnableCdc, operation_id
from operators.localpop.cdc import converter_registry_url
from operators.localpop.provisioners import service_identifier
from runtime import connect as connect_client
from runtime import kafka
from runtime.publisher import Publisher
from runtime.signing import Signer
from runtime.topics import topic_for

TABLE = "ticks"


def _wait_operation(dsn: str, op_id: str, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("select state, message from operations where id = %s", (op_id,)).fetchone()
            if row and row[0] == "Succeeded":
                return
            if row and row[0] == "Failed":
                raise SystemExit(f"{what} failed: {row[1]}")
            time.sleep(0.5)
    raise SystemExit(f"{what} did not finish within {timeout:.0f} s")


def _by_hand(connect_url: str, registry: str, dsn: str, database: str, name: str, tenant: str) -> str:
    """The baseline: Debezium's PostgreSQL connector configured directly, Avro like the platform's."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    avro = {"apicurio.registry.url": converter_registry_url(registry), "apicurio.registry.auto-register": "true",
            "apicurio.registry.find-latest": "true", "apicurio.registry.as-confluent": "true",
            "apicurio.registry.use-id": "contentId", "apicurio.registry.headers.enabled": "false"}
    prefix = f"bench.raw.{name}"
    spec = topic_for("dbaas.cdc.yugabyte.{tenant}.{table}", tenant=tenant, table=TABLE)
    config = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector", "plugin.name": "pgoutput",
        "database.hostname": info["host"], "database.port": str(info["port"]), "database.user": info["user"],
        "database.password": info["password"], "database.dbname": database, "topic.prefix": prefix,
        "slot.name": name, "publication.name": name, "publication.autocreate.mode": "filtered",
        "table.include.list": f"public.{TABLE}", "tasks.max": "1",
        "topic.creation.default.partitions": str(spec.partitions), "topic.creation.default.replication.factor": "1",
        "key.converter": "io.apicurio.registry.utils.converter.AvroConverter",
        "value.converter": "io.apicurio.registry.utils.converter.AvroConverter",
        **{f"{side}.converter.{k}": v for side in ("key", "value") for k, v in avro.items()},
    }
    connect_client.client(connect_url).put_config(name, config)
    return f"{prefix}.public.{TABLE}"


class Latencies(threading.Thread):
    """Reads `topic` from its start, recording now − sent for every row whose id ≥ `first`."""

    def __init__(self, bootstrap: str, registry: str, topic: str, expected: int):
        super().__init__(daemon=True)
        self.topic, self.expected = topic, expected
        # subjects by topic: the default strategy (ASSOCIATED) asks an API the registry lacks
        self.decode = AvroDeserializer(SchemaRegistryClient({"url": registry, "timeout": 30}),
                                       conf={"subject.name.strategy.type": "TOPIC"})
        self.consumer = Consumer(kafka.consumer_config(bootstrap, f"bench-cdc-{uuid.uuid4().hex[:8]}", **{
            "fetch.wait.max.ms": 10, "topic.metadata.refresh.interval.ms": 1000}))
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        self.consumer.subscribe([self.topic])
        ctx = SerializationContext(self.topic, MessageField.VALUE)
        while not self.stop.is_set() and len(self.seen) < self.expected:
            for msg in self.consumer.consume(1000, 0.2):
                if msg.error() or msg.value() is None:
                    continue
                now = time.time()
                after = self.decode(msg.value(), ctx)["after"]
                self.seen.setdefault(after["id"], now - after["sent"])
        self.consumer.close()


def _running(client, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.status(name)
        if state is not None and state.running:
            return
        time.sleep(0.5)
    raise SystemExit(f"connector {name} did not run within {timeout:.0f} s")


def _insert(dsn: str, rate: int, seconds: float) -> int:
    """`rate` rows/s for `seconds`, 10 rows per transaction every 10 ms; each row's `sent` is
    the wall-clock time its statement went out."""
    per, tick = max(1, rate // 100), 0.01
    n, started = 0, time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() - started < seconds:
            due = started + (n // per) * tick
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            conn.execute(f"insert into {TABLE} (id, sent) select g, %s from generate_series(%s::bigint, %s::bigint) g",
                         (time.time(), n + 1, n + per))
            n += per
    return n


def _summary(label: str, seen: dict[int, float], sent: int) -> str:
    ms = sorted(v * 1000 for v in seen.values())
    if not ms:
        return f"{label}: nothing received"
    p = statistics.quantiles(ms, n=100)
    return (f"{label}: {len(ms)}/{sent} rows, p50 {p[49]:.0f} ms, p99 {p[98]:.0f} ms, max {ms[-1]:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="rows per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--instance", default="bench-cdc", help="the platform instance (folder under .data)")
    parser.add_argument("--port-offset", type=int, default=2600, help="its ports' offset")
    args = parser.parse_args()
    ep = platform(name=args.instance, offset=args.port_offset)
    status = json.loads(subprocess.run([sys.executable, "-m", "cli.main", "stack", "status", "--home", str(ep.home),
                                        "--json", "--show-secrets"], capture_output=True, text=True,
                                       check=True).stdout)["endpoints"]
    tenant = f"bench-cdc-{uuid.uuid4().hex[:6]}"
    service_id = str(uuid.uuid4())
    secrets = json.loads((ep.home / "secrets.json").read_text())  # the platform's commands are signed
    pub = Publisher(ep.kafka, ep.registry, "dbaas.commands",
                    signer=Signer.from_text("gateway", secrets["signing_key_gateway"]))
    for c in org(tenant):
        pub.publish(c)
    create = command(tenant, CreateService(service_id, "ticks", "yugabyte", "local", "small"))
    pub.publish(create)
    _wait_operation(status["postgres_dsn"], operation_id(tenant, create.command_id), "the service's creation")
    database = service_identifier(tenant, service_id)
    db_dsn = psycopg.conninfo.make_conninfo(status["postgres_dsn"], dbname=database)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(f'set role "{database}"')
        conn.execute(f"create table {TABLE} (id bigint primary key, sent double precision not null)")
    enable = command(tenant, EnableCdc(service_id, (TABLE,)))
    pub.publish(enable)
    _wait_operation(status["postgres_dsn"], operation_id(tenant, enable.command_id), "enabling CDC")
    raw_name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    raw_topic = _by_hand(status["connect_url"], ep.registry, status["postgres_dsn"], database, raw_name, tenant)
    expected = args.rate * int(args.seconds)
    readers = [Latencies(ep.kafka, ep.registry, f"dbaas.cdc.yugabyte.{tenant}.{TABLE}", expected),
               Latencies(ep.kafka, ep.registry, raw_topic, expected)]
    client = connect_client.client(status["connect_url"])
    _running(client, raw_name)
    for r in readers:
        r.start()
    try:
        sent = _insert(db_dsn, args.rate, args.seconds)
        for r in readers:
            r.join(timeout=120)
            r.stop.set()
        print(f"CDC latency at {args.rate} rows/s for {args.seconds:.0f} s (INSERT → consumer):")
        print("  " + _summary("platform connector (EnableCdc)", readers[0].seen, sent))
        print("  " + _summary("connector registered by hand  ", readers[1].seen, sent))
    finally:
        _clean(client, status["postgres_dsn"], db_dsn, raw_name)
        pub.publish(command(tenant, DisableCdc(service_id)))  # the platform removes its own


def _clean(client, dsn: str, db_dsn: str, raw_name: str) -> None:
    """The hand-registered connector, its slot and its publication."""
    client.remove(raw_name)
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and conn.execute(
                "select 1 from pg_replication_slots where slot_name = %s and active", (raw_name,)).fetchone():
            time.sleep(0.5)  # the removed task lets go of its slot
        conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                     "where slot_name = %s", (raw_name,))
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(f'drop publication if exists "{raw_name}"')


if __name__ == "__main__":
    main()
