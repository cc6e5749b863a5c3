"""The alerts processor (`python -m processors.alerts`): a Faust application that raises and
resolves alerts on `dbaas.alerts.{tenant}` from the services' metric samples and the event log.
The rules and their episodes are `processors.alerting`'s; this module feeds them and publishes.

Three agents, two tables (memory stores, changelogged on Kafka, so a restarted worker recovers them):

- **`dbaas.events`** (every partition): each organization's state is folded in memory with
  `events.state.evolve` — the fold `decide` judges by — and its quota usage judged after every
  event that changed it (`quota_high`). At start, before the worker runs, the log is folded up to
  the worker group's committed offsets (`replay_committed`: what earlier runs handled — their
  alerts were published), without publishing; the agent goes on from there. What was published of
  each organization's quota episodes is a mark in the `tenants` table (keyed by organization,
  co-partitioned with `dbaas.events`), so events handled again after a crash publish nothing
  twice. Each service outcome (Ready, failed, deleted) is forwarded with the service's name,
  keyed by service id, to the internal topic `<app id>-service-facts`: at least once (an event
  handled again after a crash forwards its fact again), and the watch takes a fact only when its
  sequence is past the watch's own, so one forwarded twice changes nothing. A request forwards
  nothing: a watch is made at the service's first sample or outcome, named from the fold.
  (Earlier versions forwarded each request, for its name — a fact, and a watch written, per
  creation — and kept every forwarded sequence in the organization's table entry: a changelog
  record that grew with the organization's services, written on every lifecycle event. Entries
  written then are read and the old map dropped at their next write.)
- **`dbaas.metrics.{tenant}`** (each organization's, by name: Faust's Kafka driver subscribes to
  topic names, not patterns — the topics found at start, then those a timer finds every
  `DBAAS_ALERTS_DISCOVER_SECONDS`, as the local PoP creates an organization's on its first
  sample): each sample, once its signature is verified (a PoP key speaking for the sample's PoP),
  is judged (`storage_high`, `connections_high`) against the service's watch in the `services`
  table.
- **`<app id>-service-facts`**: the forwarded lifecycle facts update the same watches
  (`operation_failed`; a deletion ends the service's open episodes).

The metrics topics, the facts topic and the `services` table have the metrics pattern's partition
count and are keyed by service id with Kafka's default (murmur2) partitioner — the local PoP's
publisher uses it too — so a service's samples, facts and watch share one partition number.

Alerts are published before the table entry recording them is written: a crash in between
publishes the same alert again (same id, same content), never loses one. Processing is at least
once, as Faust commits offsets after the agents handled the messages.

One worker at a time: the quota fold is in memory and whole only where every partition of
`dbaas.events` was read (a second worker would judge only its own partitions' organizations).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import KafkaException
from prometheus_client import Counter, Gauge

import events
from events import Envelope
from events.pmap import PMap
from events.state import InconsistentLog, TenantState, evolve
from processors.alerting import (
    Config,
    Fact,
    QuotaWatch,
    ServiceWatch,
    Thresholds,
    fact_of,
    mark_of,
    on_fact,
    on_sample,
    on_tenant,
    past,
    subject,
)
from processors.sagas.schedule import Alert
from runtime.kafka import KafkaAccess, access_from_env
from runtime.settings import env, read
from runtime.signing import Keyring, Unverified
from schemas import PoisonMessage

log = structlog.get_logger("alerts")
_NO_COMMANDS: PMap = PMap()  # what the fold keeps of `decide`'s command records: nothing

PUBLISHED = Counter("dbaas_alerts_published_total", "Alerts published on dbaas.alerts.{tenant}", ["kind", "state"])
SAMPLES = Counter("dbaas_alerts_samples_total", "Service metric samples by outcome", ["outcome"])
EVENTS = Counter("dbaas_alerts_events_total", "Events of dbaas.events by outcome", ["outcome"])
_FOLDED = EVENTS.labels("folded")  # looked up once: one increment per event
FACTS = Counter("dbaas_alerts_facts_total", "Service lifecycle facts forwarded and judged", ["outcome"])
SUBSCRIBED = Gauge("dbaas_alerts_metrics_topics", "Metrics topics the processor subscribes to")

METRICS_TOPIC = re.compile(r"^dbaas\.metrics\.[a-z0-9][a-z0-9_-]{0,62}$")
for _outcome in ("judged", "stale", "unverified", "undecodable"):
    SAMPLES.labels(_outcome)


# -- settings ------------------------------------------------------------------------------------
def thresholds(name: str, samples: bool = False) -> Callable[[str], Thresholds]:
    """`RAISE/RESOLVE` in percent (`80/75`), with `/SAMPLES` for a rule that waits for samples in a row."""
    def parse(raw: str) -> Thresholds:
        parts = raw.split("/")
        try:
            if len(parts) not in ((2, 3) if samples else (2,)):
                raise ValueError
            values = Thresholds(float(parts[0]) / 100, float(parts[1]) / 100, int(parts[2]) if len(parts) == 3 else 1)
        except ValueError as exc:
            form = "RAISE/RESOLVE[/SAMPLES]" if samples else "RAISE/RESOLVE"
            raise ValueError(f"{name}={raw!r} is not {form} in percent (e.g. 80/75){': ' + str(exc) if str(exc) else ''}"
                             ) from None
        return values
    return parse


@dataclass(frozen=True)
class AlertsSettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    keyring: Path = env("DBAAS_KEYRING", parse=Path)  # the PoPs' public keys: samples are believed when signed
    events_topic: str = env("DBAAS_EVENTS_TOPIC", "dbaas.events")
    app_id: str = env("DBAAS_ALERTS_APP_ID", "dbaas-alerts")  # Faust's: consumer group, internal topic names
    profile: str = env("DBAAS_TOPIC_PROFILE", "local")  # of the topics it creates
    state_dir: Path = env("DBAAS_STATE_DIR", Path("/tmp/dbaas-alerts"))
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)
    storage: Thresholds = env("DBAAS_ALERTS_STORAGE", Thresholds(0.80, 0.75),
                              parse=thresholds("DBAAS_ALERTS_STORAGE"))
    connections: Thresholds = env("DBAAS_ALERTS_CONNECTIONS", Thresholds(0.90, 0.80, 2),
                                  parse=thresholds("DBAAS_ALERTS_CONNECTIONS", samples=True))
    quota: Thresholds = env("DBAAS_ALERTS_QUOTA", Thresholds(0.90, 0.85), parse=thresholds("DBAAS_ALERTS_QUOTA"))
    # seconds between two looks for new organizations' metrics topics, and between a change of the
    # subscription and the rebalance that applies it (Faust waits 45 s by default, to gather changes)
    discover_seconds: float = env("DBAAS_ALERTS_DISCOVER_SECONDS", 5.0)
    resubscribe_seconds: float = env("DBAAS_ALERTS_RESUBSCRIBE_SECONDS", 2.0)

    @classmethod
    def from_env(cls) -> AlertsSettings:
        return read(cls)

    @property
    def config(self) -> Config:
        return Config(self.storage, self.connections, self.quota)


# -- the logic the agents run --------------------------------------------------------------------
class Processor:
    """What each agent does with a message, over mapping-like tables (Faust's, or dicts in tests).
    `publish(alert)` returns once the broker has the alert."""

    def __init__(self, *, decode_event: Callable[[bytes], Envelope], decode_sample: Callable[[bytes], dict],
                 keyring: Keyring | None, publish: Callable[[Alert], None],
                 tenants: MutableMapping[str, Any], services: MutableMapping[str, Any], config: Config = Config()):
        self.decode_event = decode_event
        self.decode_sample = decode_sample
        self.keyring = keyring
        self.publish = publish
        self.tenants = tenants  # tenant -> {"marks": {subject: [start, resolved]}}
        self.services = services  # service id -> ServiceWatch as JSON
        self.config = config
        self.states: dict[str, TenantState] = {}  # the fold of the event log, per organization
        self.quota: dict[str, QuotaWatch] = {}
        self.next_offset: dict[int, int] = {}  # dbaas.events partition -> past what was folded

    # dbaas.events ----------------------------------------------------------------------------
    def replay(self, partition: int, offset: int, value: bytes | None) -> None:
        """Fold an event handled before this start (before the committed offset): its alerts and
        facts were published then, only the state and the quota episode are rebuilt."""
        folded = self._fold(partition, offset, value)
        if folded is None:
            return
        env, state, judge = folded
        if judge:
            self.quota[env.tenant_id], _ = on_tenant(self.quota.get(env.tenant_id, QuotaWatch()), state,
                                                     env.occurred_at, self.config)

    def event(self, partition: int, offset: int, value: bytes | None) -> tuple[list[Fact], Callable[[], None]]:
        """Fold one event; publish the quota alerts it brings. Returns the facts to forward and
        what to call once they are sent (it writes the table entry recording the alerts published)."""
        folded = self._fold(partition, offset, value)
        if folded is None:
            return [], _nothing
        env, state, judge = folded
        fact = fact_of(env, state)
        facts = [fact] if fact is not None else []
        if not judge:
            return facts, _nothing
        tenant = env.tenant_id
        watch, alerts = on_tenant(self.quota.get(tenant, QuotaWatch()), state, env.occurred_at, self.config)
        self.quota[tenant] = watch
        if not alerts:
            return facts, _nothing
        entry = _entry(self.tenants.get(tenant))
        changed = False
        for alert in alerts:
            changed |= self._once(entry["marks"], alert)

        def record() -> None:
            if changed:
                self.tenants[tenant] = entry
        return facts, record

    def _fold(self, partition: int, offset: int, value: bytes | None) -> tuple[Envelope, TenantState, bool] | None:
        """The event, its organization's state after it and whether its quota is to be judged
        again; None when it changes nothing (folded already, undecodable, out of sequence).

        The quota is judged again only when the event changed the usage or the quota: `on_tenant`
        judged the same level before and would change nothing (an open episode stays open above
        `resolve_below`, none opens below `raise_at`) — most events (operations' steps, backups)
        change neither. An organization seen for the first time is always judged."""
        if offset < self.next_offset.get(partition, 0):
            return None  # folded already (a partition is read again from its committed offset)
        self.next_offset[partition] = offset + 1
        try:
            env = self.decode_event(value or b"")
        except PoisonMessage as exc:
            EVENTS.labels("undecodable").inc()
            log.warning("event not decodable; skipped", partition=partition, offset=offset, reason=exc.reason)
            return None
        tenant = env.tenant_id
        before = self.states.get(tenant) or TenantState(tenant)
        try:
            state = evolve(before, env)
        except InconsistentLog as exc:
            EVENTS.labels("inconsistent").inc()
            log.error("event does not follow the organization's log; skipped", tenant_id=tenant, error=str(exc))
            return None
        if state is before:
            return None
        # `decide`'s command records are of no use here: the fold keeps services, backups, quota
        if state.commands:
            state = events.replace(state, commands=_NO_COMMANDS)
        self.states[tenant] = state
        _FOLDED.inc()
        judge = tenant not in self.quota or state.usage != before.usage or state.quota != before.quota
        return env, state, judge

    def _once(self, marks: dict[str, Any], alert: Alert) -> bool:
        """Publish `alert` unless it (or a later one of its subject) was published; True when it was now."""
        key = subject(alert)
        if not past(marks.get(key), alert):
            return False
        self._send(alert)
        marks[key] = list(mark_of(alert))
        return True

    def _send(self, alert: Alert) -> None:
        self.publish(alert)
        PUBLISHED.labels(alert.kind, alert.state).inc()
        log.info("alert published", alert_id=alert.alert_id, tenant_id=alert.tenant_id, service_id=alert.service_id,
                 kind=alert.kind, state=alert.state)

    # service facts ---------------------------------------------------------------------------
    def fact(self, value: bytes | None) -> None:
        try:
            fact = Fact.from_json(json.loads(value or b""))
        except (ValueError, KeyError, TypeError) as exc:
            FACTS.labels("undecodable").inc()
            log.warning("service fact not decodable; skipped", error=str(exc))
            return
        self._watch(fact.tenant_id, fact.service_id, lambda w: on_fact(w, fact))
        FACTS.labels("judged").inc()

    # samples ---------------------------------------------------------------------------------
    def sample(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        try:
            record = self.decode_sample(value or b"")
        except PoisonMessage as exc:
            SAMPLES.labels("undecodable").inc()
            log.warning("sample not decodable; skipped", topic=topic, reason=exc.reason)
            return
        problem = self._unbelievable(topic, key, value, headers, record)
        if problem is not None:
            SAMPLES.labels("unverified").inc()
            log.warning("sample not believed; skipped", topic=topic, service_id=record.get("service_id"),
                        reason=problem)
            return
        judged = self._watch(record["tenant_id"], record["service_id"], lambda w: on_sample(w, record, self.config))
        SAMPLES.labels("judged" if judged else "stale").inc()

    def _unbelievable(self, topic: str, key: bytes | None, value: bytes | None, headers: Any,
                      record: dict) -> str | None:
        if topic != f"dbaas.metrics.{record['tenant_id']}":
            return f"a sample of organization {record['tenant_id']!r} on {topic}"
        if self.keyring is None:
            return None
        try:
            signer = self.keyring.verify(topic, key, value, _pairs(headers))
        except Unverified as exc:
            return exc.reason
        if signer.kind != "pop" or signer.pop != record["pop"]:
            return f"key {signer.key_id!r} does not speak for PoP {record['pop']!r}"
        return None

    def _name(self, tenant: str, service_id: str) -> str | None:
        """The service's name as the organization's fold has it (None: not known here)."""
        state = self.states.get(tenant)
        service = state.services.get(service_id) if state is not None else None
        return service.name if service is not None else None

    def _watch(self, tenant: str, service_id: str,
               react: Callable[[ServiceWatch | None], tuple[ServiceWatch, list[Alert]]]) -> bool:
        """Apply `react` to the service's watch (made at the service's first sample or fact, named
        from the fold); publish its alerts, then store it. True when it changed."""
        stored = self.services.get(service_id)
        before = ServiceWatch.from_json(stored) if stored else None
        if before is None or before.name is None:
            name = self._name(tenant, service_id)
            if name is not None:
                before = dataclasses.replace(before or ServiceWatch(tenant, service_id), name=name)
        watch, alerts = react(before)
        if watch == before:
            return False
        for alert in alerts:
            self._send(alert)
        self.services[service_id] = watch.to_json()
        return True


def _nothing() -> None:
    """What an event that published nothing records."""


def _entry(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """An organization's table entry: its quota episodes' marks (an earlier version's `forwarded`
    map, if any, is left out: it is written again without it)."""
    return {"marks": dict((stored or {}).get("marks") or {})}


def _pairs(headers: Any) -> list[tuple[str, bytes | None]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


# -- Faust ---------------------------------------------------------------------------------------
class TopicNames(list):
    """The names a Faust topic subscribes to, shared with the channels Faust clones from it (a
    clone takes the same list when it is truthy — so this one always is) and grown at run time."""

    def __bool__(self) -> bool:
        return True


def build(settings: AlertsSettings):
    """The Faust application with its agents and tables, wired to the real ports."""
    import faust
    from confluent_kafka.admin import AdminClient

    from processors.scheduler import KafkaAlerts
    from runtime import kafka
    from runtime import topics as topic_spec
    from schemas import METRICS_TOPIC_PATTERN
    from schemas.registry import EVENTS_SUBJECT, METRICS_SUBJECT, Registry, Serde

    registry = Registry(settings.registry_url)
    events_serde, metrics_serde = Serde(registry, EVENTS_SUBJECT), Serde(registry, METRICS_SUBJECT)
    admin = AdminClient(kafka.admin_config(settings.kafka))
    existing = admin.list_topics(timeout=30).topics
    if settings.events_topic not in existing:
        raise RuntimeError(f"topic {settings.events_topic} does not exist; create it (`dbaas topics apply`)")
    event_partitions = len(existing[settings.events_topic].partitions)
    _, patterns, replication = topic_spec.load(settings.profile)
    metric_partitions = patterns[METRICS_TOPIC_PATTERN]["partitions"]
    names = TopicNames(sorted(t for t in existing if METRICS_TOPIC.match(t)))
    SUBSCRIBED.set(len(names))

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id, broker=f"kafka://{settings.kafka.bootstrap}", store="memory://",
        broker_credentials=kafka.faust_credentials(settings.kafka),
        datadir=str(settings.state_dir / "faust"), topic_replication_factor=replication,
        topic_partitions=metric_partitions, web_enabled=False, consumer_auto_offset_reset="earliest",
        producer_acks=-1, table_cleanup_interval=3600.0,
        # topics it declares itself (changelogs, facts) and new organizations' are seen within seconds
        consumer_metadata_max_age_ms=5000,
        # a worker that died leaves the group within 10 s: its successor does not wait a minute to join
        broker_session_timeout=10.0, broker_heartbeat_interval=2.0,
        # the facts and the tables' changelogs are sent in batches of up to 50 ms instead of a
        # request per message (Faust's default): a third of the worker's time went to sending them.
        # Faust flushes its producer before it commits offsets, so nothing is committed unsent.
        producer_linger=0.05)
    app.topics._resubscribe_sleep_lock_seconds = settings.resubscribe_seconds  # Faust's own wait is 45 s
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    events_source = app.topic(settings.events_topic, **raw)
    metrics_source = faust.Topic(app, topics=names, **raw)
    facts_topic = app.topic(f"{settings.app_id}-service-facts", internal=True, partitions=metric_partitions,
                            retention=timedelta(days=7), **raw)
    tenants = app.Table("tenants", partitions=event_partitions)
    services = app.Table("services", partitions=metric_partitions)
    alerts = KafkaAlerts(settings, registry)

    processor = Processor(decode_event=lambda b: events.decode(events_serde.decode, b),
                          decode_sample=metrics_serde.decode, keyring=Keyring(settings.keyring),
                          publish=alerts.send, tenants=tenants, services=services, config=settings.config)
    replayed = replay_committed(settings, processor)
    log.info("event log folded up to the committed offsets", events=replayed,
             organizations=len(processor.states))

    @app.timer(settings.discover_seconds)
    async def discover() -> None:
        """Subscribe to the metrics topics that appeared (the local PoP creates an organization's
        on its first sample). Faust's driver subscribes to names only, never to a pattern."""
        try:
            listed = await asyncio.get_running_loop().run_in_executor(
                None, lambda: admin.list_topics(timeout=10).topics)
        except KafkaException as exc:
            log.warning("topics not listed; trying again", error=str(exc))
            return
        new = sorted(t for t in listed if METRICS_TOPIC.match(t) and t not in names)
        if new:
            names.extend(new)
            SUBSCRIBED.set(len(names))
            app.topics._flag_changes()  # the conductor resubscribes with the grown list
            log.info("metrics topics subscribed", topics=new)

    async def fatal(exc: BaseException) -> None:
        """A registry or broker that fails (not a message at fault): the worker stops with the error,
        the supervisor starts it again, and it resumes at its committed offsets."""
        log.error("stopping: a dependency failed", error=f"{type(exc).__name__}: {exc}")
        await app.crash(exc)

    @app.agent(events_source)
    async def follow_events(stream):
        async for event in stream.events():
            m = event.message
            try:
                facts, record = processor.event(m.partition, m.offset, m.value)
                for fact in facts:
                    await facts_topic.send(key=fact.service_id.encode(), value=json.dumps(fact.to_json()).encode())
                    FACTS.labels("forwarded").inc()
                record()
            except Exception as exc:
                await fatal(exc)
                raise

    @app.agent(metrics_source)
    async def follow_metrics(stream):
        async for event in stream.events():
            m = event.message
            try:
                processor.sample(m.topic, m.key, m.value, m.headers)
            except Exception as exc:
                await fatal(exc)
                raise

    @app.agent(facts_topic)
    async def follow_facts(stream):
        async for event in stream.events():
            try:
                processor.fact(event.message.value)
            except Exception as exc:
                await fatal(exc)
                raise

    return app, processor


def replay_committed(settings: AlertsSettings, processor: Processor) -> int:
    """Fold `dbaas.events` from its start up to the worker group's committed offsets — what earlier
    runs handled, alerts published and facts forwarded — so that Faust's agent goes on from there
    with whole states. Returns the number of events read."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from runtime import kafka

    group = Consumer(kafka.consumer_config(settings.kafka, settings.app_id))  # asks; never joins
    try:
        parts = kafka.whole_topic(group, settings.events_topic)
        stops = {tp.partition: tp.offset for tp in group.committed(parts, timeout=30) if tp.offset > 0}
    finally:
        group.close()
    reader = kafka.reader(settings.kafka, f"{settings.app_id}-replay")
    read = 0
    try:
        reader.assign([TopicPartition(settings.events_topic, p, OFFSET_BEGINNING) for p in stops])
        while stops:
            for msg in reader.consume(1000, timeout=1.0):
                part, err = msg.partition(), msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        stops.pop(part, None)
                        continue
                    raise KafkaException(err)
                if part not in stops:
                    continue
                if msg.offset() < stops[part]:
                    processor.replay(part, msg.offset(), msg.value())
                    read += 1
                if msg.offset() + 1 >= stops[part]:
                    stops.pop(part)
    finally:
        reader.close()
    return read


def run(settings: AlertsSettings, stop: threading.Event) -> None:
    """Run the Faust worker until SIGTERM/SIGINT (Faust's own handlers stop it)."""
    import logging

    import faust

    for noisy in ("faust", "mode", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app, _ = build(settings)
    log.info("starting", app_id=settings.app_id, events_topic=settings.events_topic,
             storage=dataclasses.asdict(settings.storage), connections=dataclasses.asdict(settings.connections),
             quota=dataclasses.asdict(settings.quota))
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(app, loglevel="WARNING", override_logging=False, redirect_stdouts=False, quiet=True,
                          loop=asyncio.get_event_loop())
    worker.spinner = None  # a terminal progress spinner: its escape codes would land in the JSON log
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    log.info("stopped")


def main() -> int:
    from runtime import process

    return process.main("alerts", AlertsSettings.from_env, run)


if __name__ == "__main__":
    raise SystemExit(main())
