"""The backup scheduler process (`python -m processors.scheduler`): the composition root that builds
the real ports — a reader of the whole `dbaas.events` log (replayed at start, then followed), the
registry decoder, the signed command publisher (the platform's key) and the alert publisher on
`dbaas.alerts.{tenant}` — and runs the scheduler's policy (`processors.sagas.schedule`: what to do)
with its runner (`processors.sagas.schedule_runner`: doing it).

What it does: every `DBAAS_SCHEDULER_TICK_SECONDS` it starts the latest due slot of each service's
backup schedule (`BackupService` with ids derived from the service and the slot), deletes backups
past their policy's retention (`DeleteBackup`), and raises (then resolves) an alert when a slot
was not backed up by its deadline or its backup failed.

Several instances may run at once: each reads the whole log (no consumer group, no offsets), sends
the same commands under the same ids — the command processor judges each once — and publishes the
same alerts under the same ids.

May import: everything the scheduler needs to talk to Kafka and the registry; the decisions stay in
`processors.sagas.schedule`.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import events
from commands import CommandEnvelope
from events import Envelope
from processors.sagas.schedule import Alert, Config, SchedulerState
from processors.sagas.schedule_runner import SchedulerRunner
from runtime import kafka
from runtime import topics as topic_spec
from runtime.publisher import Publisher
from runtime.kafka import KafkaAccess, access_from_env
from runtime.settings import env, read
from runtime.signing import Signer
from schemas import ALERTS_TOPIC_PATTERN, alerts_topic
from schemas.registry import ALERTS_SUBJECT, EVENTS_SUBJECT, Registry, Serde

log = structlog.get_logger("scheduler")


def _positive(name: str, kind: type = float):
    def parse(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            value = 0
        if value <= 0:
            raise ValueError(f"{name}={raw!r} is not a positive number of seconds")
        return value
    return parse


@dataclass(frozen=True)
class SchedulerSettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    # the platform key its commands are signed with (the platform may start scheduled backups)
    signer: Signer = env("DBAAS_SIGNING_KEY", compose=Signer.from_env, hint="the platform's key", repr=False)
    events_topic: str = env("DBAAS_EVENTS_TOPIC", "dbaas.events")
    commands_topic: str = env("DBAAS_COMMANDS_TOPIC", "dbaas.commands")
    group_id: str = env("DBAAS_SCHEDULER_GROUP", "dbaas-backup-scheduler")  # names its reader; nothing committed
    profile: str = env("DBAAS_TOPIC_PROFILE", "local")  # of the per-tenant alert topics it creates
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)
    tick_seconds: float = env("DBAAS_SCHEDULER_TICK_SECONDS", 5.0,
                              parse=_positive("DBAAS_SCHEDULER_TICK_SECONDS"))
    # a slot is missed when no backup taken at or after it completed within this many seconds...
    missed_after: int = env("DBAAS_SCHEDULER_MISSED_AFTER", 600, parse=_positive("DBAAS_SCHEDULER_MISSED_AFTER", int))
    # ...and (true) not before the next slot either: max(period, missed_after)
    wait_for_next_slot: bool = env("DBAAS_SCHEDULER_WAIT_FOR_NEXT_SLOT", True)
    resend_after: int = env("DBAAS_SCHEDULER_RESEND_AFTER", 60, parse=_positive("DBAAS_SCHEDULER_RESEND_AFTER", int))

    @classmethod
    def from_env(cls) -> SchedulerSettings:
        return read(cls)

    @property
    def config(self) -> Config:
        return Config(missed_after=timedelta(seconds=self.missed_after), wait_for_next_slot=self.wait_for_next_slot,
                      resend_after=timedelta(seconds=self.resend_after))


# -- the real ports ----------------------------------------------------------------------------
class KafkaEventLog:
    """The whole of `dbaas.events` (read_committed) from its start, then what follows: every
    partition assigned, no consumer group, nothing committed."""

    def __init__(self, settings: SchedulerSettings):
        self.topic = settings.events_topic
        self.consumer = kafka.reader(settings.kafka, settings.group_id, follow=True)

    def replay(self) -> Iterator[Message]:
        parts = kafka.whole_topic(self.consumer, self.topic)
        next_offset: dict[int, int] = {}
        for msg in kafka.read_to_end(self.consumer, parts):
            next_offset[msg.partition()] = msg.offset() + 1
            yield msg
        self.consumer.assign([TopicPartition(self.topic, tp.partition, next_offset.get(tp.partition, OFFSET_BEGINNING))
                              for tp in parts])

    def poll(self, timeout: float) -> list[Message]:
        return kafka.messages(self.consumer.consume(500, timeout=timeout))

    def close(self) -> None:
        self.consumer.close()


class SerdeDecoder:
    def __init__(self, registry: Registry):
        self.events = Serde(registry, EVENTS_SUBJECT)

    def event(self, value: bytes | None) -> Envelope:
        return events.decode(self.events.decode, value)


class PublishedCommands:
    def __init__(self, publisher: Publisher):
        self.publisher = publisher

    def send(self, command: CommandEnvelope) -> None:
        self.publisher.publish(command)


class KafkaAlerts:
    """Alerts on `dbaas.alerts.{tenant}` (key: the service id), the tenant's topic created from the
    topic spec's pattern on its first alert. Returns once the broker has the alert."""

    def __init__(self, settings: SchedulerSettings, registry: Registry):
        self.profile = settings.profile
        self.serde = Serde(registry, ALERTS_SUBJECT)
        self.admin = AdminClient(kafka.admin_config(settings.kafka))
        self.producer = Producer(kafka.producer_config(settings.kafka, **{"linger.ms": 5}))
        self.known: set[str] = set()

    def send(self, alert: Alert) -> None:
        topic = self._topic(alert.tenant_id)
        failed: list[str] = []
        self.producer.produce(topic, key=(alert.service_id or alert.tenant_id).encode(),
                              value=self.serde.encode(alert.to_avro()),
                              headers=[("alert-id", alert.alert_id.encode())],
                              on_delivery=lambda err, _msg: failed.append(str(err)) if err is not None else None)
        if self.producer.flush(30) or failed:
            raise KafkaException(f"alert {alert.alert_id} not published on {topic}: "
                                 f"{failed[0] if failed else 'no answer from the broker in time'}")

    def _topic(self, tenant: str) -> str:
        name = alerts_topic(tenant)
        if tenant in self.known:
            return name
        spec = topic_spec.topic_for(ALERTS_TOPIC_PATTERN, self.profile, tenant=tenant)
        if spec.name not in self.admin.list_topics(timeout=30).topics:
            _, _, replication = topic_spec.load(self.profile)
            if topic_spec.apply(self.admin, [spec], replication).created:
                log.info("alert topic created", topic=spec.name)
        self.known.add(tenant)
        return name

    def close(self) -> None:
        self.producer.flush(10)


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def run(settings: SchedulerSettings, stop: threading.Event) -> None:
    registry = Registry(settings.registry_url)
    publisher = Publisher(settings.kafka, settings.registry_url, settings.commands_topic, signer=settings.signer)
    alerts = KafkaAlerts(settings, registry)
    source = KafkaEventLog(settings)
    runner = SchedulerRunner(SchedulerState.start(settings.config), events=source, decoder=SerdeDecoder(registry),
                             commands=PublishedCommands(publisher), alerts=alerts, clock=WallClock(),
                             tick_seconds=settings.tick_seconds)
    try:
        runner.replay()
        log.info("started", events=runner.replayed, services=sum(1 for _ in runner.state.services()),
                 tick_seconds=settings.tick_seconds, missed_after=settings.missed_after,
                 wait_for_next_slot=settings.wait_for_next_slot)
        runner.loop(stop)
    finally:
        source.close()
        alerts.close()
        publisher.close()
        log.info("stopped")


def main() -> int:
    from runtime import process

    return process.main("scheduler", SchedulerSettings.from_env, run)


if __name__ == "__main__":
    raise SystemExit(main())
