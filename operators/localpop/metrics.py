"""Service metrics of the local PoP: every ``DBAAS_LOCALPOP_METRICS_INTERVAL`` seconds the agent
samples, on the real servers, each service it runs, and publishes one ``ServiceMetrics`` record per
service (``schemas/service_metrics.avsc``) on ``dbaas.metrics.{tenant}`` (key: the service id),
signed with the PoP's key like its status reports.

What is measured, per server (each service is a database, a user or a key prefix named
``service_identifier(tenant, service_id)``; one batch of queries per server and sample, whatever
the number of services):

- **PostgreSQL** (yugabyte): ``pg_stat_database`` of the service's database — ``numbackends``
  (connections) and ``xact_commit + xact_rollback`` (transactions per second from the difference
  between two samples) — and ``pg_database_size``; the most connections are the role's
  ``CONNECTION LIMIT`` or, when lower, the server's ``max_connections`` less its superuser
  reserve.
- **MariaDB** (vitess): the user's sessions (``information_schema.PROCESSLIST``), its database's
  tables' data and index length (``information_schema.TABLES``, InnoDB's estimate), and the user's
  own statements per second (``ops_per_s``: ``SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS``
  of the server's user statistics, ``information_schema.USER_STATISTICS``, which the launcher turns
  on with ``--userstat`` and the sampler when it finds it off). No transactions per second: the
  same table's ``COMMIT_TRANSACTIONS`` counts a commit once per storage engine taking part (InnoDB
  and the binlog) and read statements too, and the server's ``Com_commit`` counts every user's.
  The most connections are the user's ``max_user_connections``, else the server's, else
  ``max_connections``.
- **Redis** (dragonfly): the user's connections (``CLIENT LIST``), its keys — one ``SCAN`` pass per
  logical database and sample, shared by every service (keys counted by their ``<name>:`` prefix),
  cut at ``max_scan`` keys (counts then extrapolated from the share of the database visited),
  ``MEMORY USAGE`` summed over at most
  ``sample_keys`` keys of each service and extrapolated to all of them (``storage_estimated``) —
  and the server's commands per second (``total_commands_processed`` between two samples: Redis
  keeps no count per user or prefix, so ``ops_per_s`` is the whole server's). The most connections
  are the server's ``maxclients``.

Rates come from counter differences (``per_second``): none on a service's first sample, and none
after a counter went backwards (a server restart or a statistics reset). The storage limit is the
service's size from its ServiceClaim (``spec.resources.storage``) times
``DBAAS_LOCALPOP_STORAGE_SCALE`` (a development setting of the local PoP, default 1: a test
platform lowers it to reach a service's limit with little data).

A server that does not answer is skipped for that sample (logged, counted); a lost sample is not
sent again: the next one follows. ``dbaas.metrics.{tenant}`` is created from the topic spec's
pattern on the tenant's first sample.

May import: the standard library, the engines' clients, confluent-kafka, ``runtime``, ``schemas``
and ``operators.localpop.provisioners`` — nothing of the domain.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Histogram

from operators.localpop.provisioners import (
    AdminEndpoint,
    ProvisioningError,
    ServerUnavailable,
    service_identifier,
)

log = structlog.get_logger("operators.localpop.metrics")

SAMPLES = Counter("dbaas_localpop_metrics_samples_total", "Service metric samples by engine and outcome",
                  ["engine", "outcome"])
SAMPLE_SECONDS = Histogram("dbaas_localpop_metrics_seconds", "Duration of one round of service metric samples",
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


# -- values -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A service the agent runs, to be sampled: where it lives and the storage it was given."""

    tenant: str
    service_id: str
    engine: str
    storage_limit_bytes: int | None = None

    @property
    def identifier(self) -> str:
        return service_identifier(self.tenant, self.service_id)


@dataclass(frozen=True)
class Reading:
    """What a server said about one service at one moment. ``transactions`` and ``operations`` are
    cumulative counters (rates come from two readings); None: not measured for the engine."""

    connections: int
    storage_bytes: int
    max_connections: int | None = None
    transactions: int | None = None
    operations: int | None = None
    storage_estimated: bool = False
    keys: int | None = None


Previous = tuple[datetime, int]  # (when, counter value)


def per_second(previous: Previous | None, value: int | None, at: datetime) -> float | None:
    """The rate of a cumulative counter between two readings; None on the first reading, when no
    time passed, when the counter is unknown, or when it went backwards (a reset)."""
    if previous is None or value is None:
        return None
    then, before = previous
    elapsed = (at - then).total_seconds()
    if elapsed <= 0 or value < before:
        return None
    return (value - before) / elapsed


class Rates:
    """The previous value of each service's counters, to turn the next one into a rate."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Previous] = {}

    def rate(self, service_id: str, counter: str, value: int | None, at: datetime) -> float | None:
        key = (service_id, counter)
        rate = per_second(self._seen.get(key), value, at)
        if value is None:
            self._seen.pop(key, None)
        else:
            self._seen[key] = (at, value)
        return rate

    def keep_only(self, service_ids: Iterable[str]) -> None:
        """Forget the counters of services no longer sampled."""
        keep = set(service_ids)
        self._seen = {k: v for k, v in self._seen.items() if k[0] in keep}


def record(target: Target, reading: Reading, pop: str, at: datetime, rates: Rates) -> dict[str, Any]:
    """The ``ServiceMetrics`` record (``schemas/service_metrics.avsc``) of a reading."""
    return {
        "tenant_id": target.tenant, "service_id": target.service_id, "engine": target.engine, "pop": pop,
        "sampled_at": at, "connections": reading.connections, "max_connections": reading.max_connections,
        "transactions_per_s": _rounded(rates.rate(target.service_id, "transactions", reading.transactions, at)),
        "ops_per_s": _rounded(rates.rate(target.service_id, "operations", reading.operations, at)),
        "storage_bytes": reading.storage_bytes, "storage_limit_bytes": target.storage_limit_bytes,
        "storage_estimated": reading.storage_estimated, "keys": reading.keys,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def scaled_limit(storage_bytes: int | None, scale: float) -> int | None:
    """The storage limit a sample carries: the claim's size times the PoP's storage scale."""
    return None if storage_bytes is None else max(1, int(storage_bytes * scale))


def effective_limit(*limits: int | None) -> int | None:
    """The lowest of the limits that apply (None or negative: no limit)."""
    known = [limit for limit in limits if limit is not None and limit > 0]
    return min(known) if known else None


# -- samplers -----------------------------------------------------------------------------------
class Sampler(Protocol):
    engine_server: str

    def read(self, targets: list[Target]) -> dict[str, Reading]:
        """service id -> its reading, for the targets the server has (others left out)."""
        ...


class PostgresSampler:
    engine_server = "postgres"

    def __init__(self, admin: AdminEndpoint, *, admin_database: str = "postgres", connect_timeout: float = 5.0):
        self.admin = admin
        self.admin_database = admin_database
        self.connect_timeout = connect_timeout

    def read(self, targets: list[Target]) -> dict[str, Reading]:
        import psycopg

        by_name = {t.identifier: t for t in targets}
        where = f"PostgreSQL at {self.admin.host}:{self.admin.port}"
        try:
            with psycopg.connect(host=self.admin.host, port=self.admin.port, user=self.admin.user,
                                 password=self.admin.password, dbname=self.admin_database, autocommit=True,
                                 connect_timeout=max(1, round(self.connect_timeout))) as conn:
                server = conn.execute(
                    "SELECT current_setting('max_connections')::int"
                    " - current_setting('superuser_reserved_connections')::int").fetchone()[0]
                rows = conn.execute(
                    "SELECT d.datname, s.numbackends, s.xact_commit + s.xact_rollback,"
                    " CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) END,"
                    " r.rolconnlimit FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid"
                    " LEFT JOIN pg_roles r ON r.rolname = d.datname WHERE d.datname = ANY(%s)",
                    (list(by_name),)).fetchall()
        except psycopg.OperationalError as exc:
            raise ServerUnavailable(f"{where} is not reachable: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise ProvisioningError(f"{where} refused the metrics queries: {_first_line(exc)}") from None
        return {by_name[name].service_id: Reading(connections=int(backends or 0), storage_bytes=int(size or 0),
                                                   max_connections=effective_limit(role_limit, server),
                                                   transactions=int(xacts or 0))
                for name, backends, xacts, size, role_limit in rows}


class MariaDBSampler:
    engine_server = "mariadb"

    def __init__(self, admin: AdminEndpoint, *, connect_timeout: float = 5.0):
        self.admin = admin
        self.connect_timeout = connect_timeout
        self._userstat_checked = False

    def read(self, targets: list[Target]) -> dict[str, Reading]:
        import pymysql

        by_name = {t.identifier: t for t in targets}
        names = list(by_name)
        marks = ", ".join(["%s"] * len(names))
        where = f"MariaDB at {self.admin.host}:{self.admin.port}"
        try:
            conn = pymysql.connect(host=self.admin.host, port=self.admin.port, user=self.admin.user,
                                   password=self.admin.password, connect_timeout=self.connect_timeout,
                                   read_timeout=30, autocommit=True, charset="utf8mb4")
        except pymysql.err.OperationalError as exc:
            raise ServerUnavailable(f"{where} is not reachable: {exc.args[-1]}") from None
        try:
            with conn, conn.cursor() as cur:
                if not self._userstat_checked:
                    cur.execute("SELECT @@userstat")
                    if not cur.fetchone()[0]:
                        cur.execute("SET GLOBAL userstat = ON")  # the users' own counters, below
                        log.info("MariaDB user statistics turned on (userstat), for statements per second")
                    self._userstat_checked = True
                cur.execute("SELECT @@max_connections, @@max_user_connections")
                server, per_user = cur.fetchone()
                cur.execute(f"SELECT DISTINCT User, max_user_connections FROM mysql.user WHERE User IN ({marks})",
                            names)
                own = {user: int(limit) for user, limit in cur.fetchall()}
                cur.execute(f"SELECT USER, COUNT(*) FROM information_schema.PROCESSLIST WHERE USER IN ({marks}) "
                            "GROUP BY USER", names)
                sessions = {user: int(n) for user, n in cur.fetchall()}
                cur.execute("SELECT TABLE_SCHEMA, COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) "
                            f"FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({marks}) GROUP BY TABLE_SCHEMA",
                            names)
                sizes = {schema: int(size) for schema, size in cur.fetchall()}
                cur.execute("SELECT USER, SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS "
                            f"FROM information_schema.USER_STATISTICS WHERE USER IN ({marks})", names)
                statements = {user: int(n) for user, n in cur.fetchall()}
                cur.execute(f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({marks})",
                            names)
                present = {row[0] for row in cur.fetchall()}
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in (2006, 2013):
                raise ServerUnavailable(f"{where} went away: {exc.args[-1]}") from None
            raise ProvisioningError(f"{where} refused the metrics queries: {exc.args[-1]}") from None
        except pymysql.err.MySQLError as exc:
            raise ProvisioningError(f"{where} refused the metrics queries: {exc.args[-1]}") from None
        return {by_name[name].service_id: Reading(
                    connections=sessions.get(name, 0), storage_bytes=sizes.get(name, 0),
                    max_connections=effective_limit(own.get(name) or per_user or None, int(server)),
                    # a user that never connected has no statistics row yet: nothing counted
                    operations=statements.get(name, 0))
                for name in names if name in present}


class RedisSampler:
    engine_server = "redis"

    def __init__(self, admin: AdminEndpoint, *, connect_timeout: float = 5.0, max_scan: int = 200_000,
                 sample_keys: int = 200):
        self.admin = admin
        self.connect_timeout = connect_timeout
        self.max_scan = max_scan  # keys visited per logical database and sample at most
        self.sample_keys = sample_keys  # keys of a service whose MEMORY USAGE is asked per sample

    def _client(self, db: int = 0):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(host=self.admin.host, port=self.admin.port, username=self.admin.user,
                           password=self.admin.password, db=db, socket_timeout=30,
                           socket_connect_timeout=self.connect_timeout, decode_responses=True,
                           retry=Retry(NoBackoff(), 0))

    def read(self, targets: list[Target]) -> dict[str, Reading]:
        import redis

        prefixes = {t.identifier: t for t in targets}
        where = f"Redis at {self.admin.host}:{self.admin.port}"
        tally = KeyTally(prefixes, self.sample_keys)
        try:
            client = self._client()
            try:
                clients = client.client_list()
                maxclients = int(client.config_get("maxclients").get("maxclients") or 0)
                commands = int(client.info("stats")["total_commands_processed"])
                used = [(int(name[2:]), info.get("keys", 0)) for name, info in client.info("keyspace").items()
                        if name.startswith("db")]
            finally:
                client.close()
            for db, size in used:
                with self._client(db) as c:
                    cursor, visited = 0, 0
                    while True:  # every key (a MATCH would still walk them all), up to max_scan
                        cursor, keys = c.scan(cursor, count=1000)
                        visited += len(keys)
                        for key in keys:
                            tally.see(db, key)
                        if cursor == 0 or visited >= self.max_scan:
                            break
                    tally.scanned(db, complete=cursor == 0, visited=visited, size=int(size))
                    for prefix, keys in tally.to_measure(db).items():
                        pipe = c.pipeline(transaction=False)
                        for key in keys:
                            pipe.memory_usage(key)
                        tally.measured(prefix, [int(b or 0) for b in pipe.execute()])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ServerUnavailable(f"{where} is not reachable: {exc}") from None
        except redis.RedisError as exc:
            raise ProvisioningError(f"{where} refused the metrics commands: {exc}") from None
        sessions: dict[str, int] = {}
        for entry in clients:
            user = entry.get("user")
            if user in prefixes:
                sessions[user] = sessions.get(user, 0) + 1
        out = {}
        for name, target in prefixes.items():
            count, storage, estimated = tally.result(name)
            out[target.service_id] = Reading(connections=sessions.get(name, 0), storage_bytes=storage,
                                             max_connections=maxclients or None, operations=commands,
                                             storage_estimated=estimated, keys=count)
        return out


class KeyTally:
    """Keys seen per service prefix (``<identifier>:``) over one SCAN pass per logical database, a
    sample of them to measure, and the estimate of their count and size. Pure bookkeeping."""

    def __init__(self, identifiers: Iterable[str], sample_keys: int):
        self.identifiers = set(identifiers)
        self.sample_keys = sample_keys
        self._seen: dict[tuple[int, str], int] = {}  # (db, identifier) -> keys seen
        self._sample: dict[tuple[int, str], list[str]] = {}
        self._fraction: dict[int, float] = {}  # db -> share of its keys scanned (1.0: all)
        self._bytes: dict[str, list[int]] = {}  # identifier -> sizes measured

    def see(self, db: int, key: str) -> None:
        identifier, sep, _ = key.partition(":")
        if not sep or identifier not in self.identifiers:
            return
        self._seen[(db, identifier)] = self._seen.get((db, identifier), 0) + 1
        sample = self._sample.setdefault((db, identifier), [])
        if len(sample) < self.sample_keys:
            sample.append(key)

    def scanned(self, db: int, *, complete: bool, visited: int, size: int) -> None:
        """The pass over ``db`` visited ``visited`` of its ``size`` keys; when it was cut short
        (``complete`` false), the counts seen there are scaled up by the share visited."""
        self._fraction[db] = 1.0 if complete or size <= 0 else max(min(1.0, visited / size), 1e-9)

    def to_measure(self, db: int) -> dict[str, list[str]]:
        return {ident: keys for (d, ident), keys in self._sample.items() if d == db and keys}

    def measured(self, identifier: str, sizes: list[int]) -> None:
        self._bytes.setdefault(identifier, []).extend(sizes)

    def result(self, identifier: str) -> tuple[int, int, bool]:
        """(keys, bytes, estimated) of a service over every database."""
        keys, estimated = 0.0, False
        for (db, ident), seen in self._seen.items():
            if ident != identifier:
                continue
            fraction = self._fraction.get(db, 1.0)
            if fraction < 1.0:
                estimated = True
            keys += seen / fraction
        sizes = self._bytes.get(identifier, [])
        measured = len(sizes)
        total = sum(sizes)
        if measured and measured < keys:
            estimated = True
            total = total / measured * keys
        return round(keys), int(total), estimated


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- publishing ---------------------------------------------------------------------------------
class MetricsPublisher:
    """``ServiceMetrics`` records on ``dbaas.metrics.{tenant}`` (key: the service id), signed; the
    tenant's topic created from the topic spec's pattern on its first sample."""

    def __init__(self, kafka_bootstrap: Any, registry_url: str, signer: Any, profile: str = "local",
                 flush_timeout: float = 10.0):
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient

        from runtime import kafka

        self.kafka_bootstrap = kafka_bootstrap
        self.registry_url = registry_url
        self.signer = signer
        self.profile = profile
        self.flush_timeout = flush_timeout
        self._serde: Any = None
        self._admin = AdminClient(kafka.admin_config(kafka_bootstrap))
        # Kafka's default (Java) partitioner, which Faust uses too: a service's samples land on the
        # partition number the alerts processor keeps its watch on
        self._producer = Producer(kafka.producer_config(kafka_bootstrap, **{
            "linger.ms": 20, "message.timeout.ms": 30_000, "client.id": "dbaas-localpop-metrics",
            "partitioner": "murmur2_random"}))
        self._topics: set[str] = set()

    def publish(self, records: list[dict[str, Any]]) -> int:
        """Send the records; the number the broker acknowledged within the flush timeout."""
        from schemas import metrics_topic
        from schemas.registry import METRICS_SUBJECT, Registry, Serde

        if not records:
            return 0
        if self._serde is None:
            self._serde = Serde(Registry(self.registry_url), METRICS_SUBJECT)  # may raise: the next round retries
        acked: list[bool] = []
        for rec in records:
            topic = metrics_topic(rec["tenant_id"])
            self._ensure(rec["tenant_id"], topic)
            key, value = rec["service_id"].encode(), self._serde.encode(rec)
            headers = self.signer.headers(topic, key, value) if self.signer else []
            try:
                self._producer.produce(topic, key=key, value=value, headers=headers,
                                       on_delivery=lambda err, _m: acked.append(err is None))
            except BufferError:
                self._producer.poll(0)
        self._producer.flush(self.flush_timeout)
        return sum(acked)

    def _ensure(self, tenant: str, topic: str) -> None:
        if topic in self._topics:
            return
        from runtime import topics as topic_spec
        from schemas import METRICS_TOPIC_PATTERN

        spec = topic_spec.topic_for(METRICS_TOPIC_PATTERN, self.profile, tenant=tenant)
        if spec.name not in self._admin.list_topics(timeout=30).topics:
            _, _, replication = topic_spec.load(self.profile)
            if topic_spec.apply(self._admin, [spec], replication).created:
                log.info("metrics topic created", topic=spec.name)
        self._topics.add(topic)

    def close(self) -> None:
        self._producer.flush(self.flush_timeout)


class Publisher(Protocol):
    def publish(self, records: list[dict[str, Any]]) -> int: ...

    def close(self) -> None: ...


# -- one round ----------------------------------------------------------------------------------
class ServiceMetrics:
    """Samples the targets every ``interval`` seconds (``maybe_sample``) and publishes the records."""

    def __init__(self, samplers: Mapping[str, Sampler], publisher: Publisher, pop: str, interval: float,
                 clock: Callable[[], datetime]):
        self.samplers = dict(samplers)  # engine -> sampler
        self.publisher = publisher
        self.pop = pop
        self.interval = interval
        self.clock = clock
        self.rates = Rates()
        self._due = 0.0
        self._problems: dict[str, str] = {}  # engine -> the last failure logged

    def maybe_sample(self, targets: list[Target]) -> int | None:
        """A round of samples when one is due (None when not)."""
        if self.interval <= 0 or time.monotonic() < self._due:
            return None
        self._due = time.monotonic() + self.interval
        started = time.perf_counter()
        try:
            return self.sample(targets)
        finally:
            SAMPLE_SECONDS.observe(time.perf_counter() - started)

    def sample(self, targets: list[Target]) -> int:
        records = []
        by_engine: dict[str, list[Target]] = {}
        for t in targets:
            by_engine.setdefault(t.engine, []).append(t)
        for engine, group in sorted(by_engine.items()):
            sampler = self.samplers.get(engine)
            if sampler is None:
                continue
            at = self.clock()
            try:
                readings = sampler.read(group)
            except ProvisioningError as exc:
                SAMPLES.labels(engine, "unavailable").inc(len(group))
                if self._problems.get(engine) != str(exc):
                    log.warning("service metrics not sampled", engine=engine, error=str(exc))
                self._problems[engine] = str(exc)
                continue
            if self._problems.pop(engine, None) is not None:
                log.info("service metrics sampled again", engine=engine)
            for t in group:
                if t.service_id in readings:
                    records.append(record(t, readings[t.service_id], self.pop, at, self.rates))
            SAMPLES.labels(engine, "ok").inc(len(readings))
        self.rates.keep_only(t.service_id for t in targets)
        try:
            return self.publisher.publish(records)
        except Exception as exc:  # noqa: BLE001 - a registry or broker problem: the next round tries again
            SAMPLES.labels("any", "unpublished").inc(len(records))
            log.warning("service metrics not published", error=str(exc), samples=len(records))
            return 0

    def close(self) -> None:
        self.publisher.close()


def build_samplers(postgres: AdminEndpoint | None, postgres_database: str, mariadb: AdminEndpoint | None,
                   redis: AdminEndpoint | None) -> dict[str, Sampler]:
    """engine -> sampler, for the servers configured."""
    made: dict[str, Sampler] = {}
    if postgres:
        made["yugabyte"] = PostgresSampler(postgres, admin_database=postgres_database)
    if mariadb:
        made["vitess"] = MariaDBSampler(mariadb)
    if redis:
        made["dragonfly"] = RedisSampler(redis)
    return made
