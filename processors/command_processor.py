"""The command processor: judges every command on `dbaas.commands` into events on `dbaas.events`.

For each batch, in ONE Kafka transaction: the events `decide` produced (written to the same
partition as their command, so one partition of each topic holds a tenant's whole story) and
the consumer offsets past the batch. Either both are visible to read_committed readers or
neither, so a crash anywhere replays the batch against the state as of the last commit — and the
idempotency records inside that state make a replay of an already-judged command a no-op.

Tenant states live in memory per assigned partition, rebuilt on assignment by folding that
partition of the event log. What happens to each message is decided by the pure
`processors.judge.judge` (size, decoding, key, partition — a command is judged only on the
partition its key maps to, elsewhere it would meet a state that never saw its tenant — then
`decide`); this class only does the I/O around it: it decodes the bytes with the registry, verifies
the signature (`runtime.signing` against the keyring: the publisher is what it proves, never what
the command claims), and writes the events, or the dead letter with a code and the reason in
headers; the batch moves on. While tracing is on, each command is judged in a span continuing the
command's `traceparent` header, and the events it writes carry that span's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

import commands
import events
from events import Envelope, TenantState, evolve
from processors.judge import DeadLetter, Judged, Raw, judge, oversized
from processors.settings import ProcessorSettings
from runtime import heap, kafka, tracing
from runtime.deadletter import dead_letter
from runtime.signing import Keyring, TrustedKey, Unverified
from schemas.errors import PoisonMessage
from schemas.registry import COMMANDS_SUBJECT, EVENTS_SUBJECT, Registry, Serde

JUDGED = Counter("dbaas_commands_judged_total", "Commands judged", ["outcome", "command_type"])
DEAD = Counter("dbaas_commands_dead_lettered_total", "Commands sent to the dead-letter topic", ["code"])
for _code in ("undecodable", "oversized", "wrong_key", "wrong_partition"):  # at zero from the start, so that
    DEAD.labels(_code)  # a first dead letter is an increase
LAG = Gauge("dbaas_command_processor_lag", "Commands not yet judged", ["partition"])
BATCH = Histogram("dbaas_command_processor_batch_seconds", "Time to judge and commit one batch",
                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
COMMIT = Histogram("dbaas_command_processor_commit_seconds",
                   "Time to commit one batch's transaction (events delivered, offsets, markers)",
                   buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
REBUILT = Counter("dbaas_command_processor_events_replayed_total", "Events folded while rebuilding state")

log = structlog.get_logger("command-processor")


@dataclass
class PartitionState:
    tenants: dict[str, TenantState] = field(default_factory=dict)

    def get(self, tenant_id: str) -> TenantState:
        return self.tenants.get(tenant_id) or TenantState(tenant_id)


class CommandProcessor:
    def __init__(self, settings: ProcessorSettings):
        self.settings = settings
        registry = Registry(settings.registry_url)
        self.commands = Serde(registry, COMMANDS_SUBJECT)
        self.events = Serde(registry, EVENTS_SUBJECT)
        self._encode_event = events.encoder(self.events)  # written from the envelope, no record dicts
        self.partitions: dict[int, PartitionState] = {}
        self.keyring = Keyring(settings.keyring)
        self.partition_count = 0  # of the commands topic; read at each assignment
        self._trace: list[tuple[str, bytes]] = []  # the judging span's traceparent header, while tracing
        self.consumer = Consumer(kafka.consumer_config(
            settings.kafka, settings.group_id, **{"partition.assignment.strategy": "cooperative-sticky"}))
        self.producer = Producer(kafka.transactional_config(
            settings.kafka, settings.transactional_id, **{"transaction.timeout.ms": 30000}))

    # -- lifecycle -----------------------------------------------------------------------
    def run(self, stop) -> None:
        self.producer.init_transactions(30)
        self.consumer.subscribe([self.settings.commands_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("started", commands=self.settings.commands_topic, events=self.settings.events_topic)
        try:
            while not stop.is_set():
                batch = self.consumer.consume(self.settings.batch_size, timeout=self.settings.batch_timeout)
                batch = kafka.messages(batch)
                if batch:
                    self._judge_batch(batch)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            log.info("stopped")

    def _on_assign(self, consumer, partitions: list[TopicPartition]) -> None:
        topic = self.settings.commands_topic
        self.partition_count = len(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        started, folded = time.perf_counter(), 0
        for tp in partitions:
            self.partitions[tp.partition], events_of_partition = self._rebuild(tp.partition)
            folded += events_of_partition
        heap.settle()  # the states just folded are never walked by the collector again
        # what taking over partitions costs: their events folded before judging resumes
        log.info("assigned", partitions=[tp.partition for tp in partitions], events_folded=folded,
                 seconds=round(time.perf_counter() - started, 3))

    def _on_revoke(self, consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.partitions.pop(tp.partition, None)
        log.info("revoked", partitions=[tp.partition for tp in partitions])

    def _rebuild(self, partition: int) -> tuple[PartitionState, int]:
        """Fold the committed events of one partition into tenant states; and how many there were."""
        consumer = kafka.reader(self.settings.kafka, f"{self.settings.group_id}-fold")
        state = PartitionState()
        folded = 0
        try:
            for msg in kafka.read_to_end(consumer, [TopicPartition(self.settings.events_topic, partition, 0)]):
                env = events.from_avro(self.events.decode(msg.value()))
                state.tenants[env.tenant_id] = evolve(state.get(env.tenant_id), env)
                folded += 1
        finally:
            consumer.close()
            REBUILT.inc(folded)
        return state, folded

    # -- judging -------------------------------------------------------------------------
    def _judge_batch(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        before: dict[tuple[int, str], TenantState | None] = {}
        self.keyring.refresh()  # a publisher added or revoked since the last batch counts now
        self.producer.begin_transaction()
        try:
            for msg in batch:
                self._judge(msg, before)
            judged = time.perf_counter()
            self.producer.send_offsets_to_transaction(
                self.consumer.position(self.consumer.assignment()),
                self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            self._abort(batch, before, exc)
            return
        ended = time.perf_counter()
        BATCH.observe(ended - started)
        COMMIT.observe(ended - judged)
        self._report_lag()

    def _abort(self, batch, before, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args else None
        if err is not None and hasattr(err, "fatal") and err.fatal():
            raise exc
        log.warning("transaction aborted; the batch will be judged again", error=str(exc))
        self.producer.abort_transaction(30)
        for (partition, tenant), state in before.items():
            tenants = self.partitions.setdefault(partition, PartitionState()).tenants
            if state is None:
                tenants.pop(tenant, None)
            else:
                tenants[tenant] = state
        kafka.rewind(self.consumer, batch)

    def _judge(self, msg: Message, before: dict) -> None:
        """`_judge_one` in a span continuing the command's trace (its `traceparent` header; a new
        trace without one) while tracing is on: the events it writes carry that span's context."""
        if not tracing.enabled():
            return self._judge_one(msg, before)
        with tracing.continued("judge", tracing.from_headers(msg.headers()), {"dbaas.step": "judge"}):
            traceparent = tracing.current_traceparent()
            self._trace = [(tracing.TRACEPARENT, traceparent.encode())] if traceparent else []
            try:
                self._judge_one(msg, before)
            finally:
                self._trace = []

    def _judge_one(self, msg: Message, before: dict) -> None:
        """Read what `judge` needs from the message (the record, what its signature proves), then
        write what it decided: the events, or a dead letter."""
        value = msg.value() or b""
        raw = Raw(msg.topic(), msg.partition(), msg.key(), len(value), self.settings.max_command_bytes,
                  self.partition_count,
                  kafka.partition_for(msg.key() or b"", self.partition_count) if self.partition_count else -1)
        if not oversized(raw.size, raw.max_bytes):
            try:
                raw = replace(raw, record=self.commands.decode(value))
            except PoisonMessage as exc:
                raw = replace(raw, poison=exc.reason)
            else:
                raw = replace(raw, proof=self._proof(msg))
        partition = self.partitions.setdefault(msg.partition(), PartitionState())
        match judge(partition.tenants, raw):
            case DeadLetter(code=code, reason=reason, command_id=command_id):
                if tracing.recording():
                    tracing.fail(f"dead-lettered ({code}): {reason}")
                self._dead_letter(msg, code, reason, command_id)
            case Judged(command=cmd, events=produced, state=state) as judged:
                if tracing.recording():
                    _annotate(cmd, judged)
                before.setdefault((msg.partition(), cmd.tenant_id), partition.tenants.get(cmd.tenant_id))
                for env in produced:
                    self._emit(msg.partition(), env)
                partition.tenants[cmd.tenant_id] = state
                self._count(cmd, judged)

    def _proof(self, msg: Message) -> commands.Proof:
        """What the signature of `msg` proves about its publisher."""
        try:
            key: TrustedKey = self.keyring.verify(msg.topic(), msg.key(), msg.value(), msg.headers())
        except Unverified as exc:
            return commands.Unverified(exc.reason)
        return commands.Authority(key.kind, key.name, key.tenants, key.roles)

    def _emit(self, partition: int, env: Envelope) -> None:
        self.producer.produce(
            self.settings.events_topic, partition=partition, key=env.tenant_id.encode(),
            value=self._encode_event(env),
            headers=[("correlation-id", env.correlation_id.encode()),
                     (events.EVENT_TYPE_HEADER, type(env.payload).__name__.encode()), *self._trace])

    def _count(self, cmd, judged: Judged) -> None:
        if judged.outcome == "rejected":
            rejection = next(e.payload for e in judged.events if isinstance(e.payload, events.CommandRejected))
            log.info("command rejected", command_type=cmd.command_type, reason=rejection.reason_code,
                     field=rejection.field, message=rejection.message, correlation_id=cmd.correlation_id,
                     command_id=cmd.command_id, tenant_id=cmd.tenant_id)
        JUDGED.labels(judged.outcome, cmd.command_type).inc()

    def _dead_letter(self, msg: Message, code: str, reason: str, command_id: str | None = None) -> None:
        DEAD.labels(code).inc()
        log.warning("dead-lettered", code=code, reason=reason, partition=msg.partition(), offset=msg.offset(),
                    command_id=command_id)
        dead_letter(self.producer, self.settings.dlq_topic, msg, reason, code, command_id)

    def _report_lag(self) -> None:
        for partition, behind in kafka.lag(self.consumer).items():
            LAG.labels(str(partition)).set(behind)


def _annotate(cmd: commands.CommandEnvelope, judged: Judged) -> None:
    """Name the judging span after the command and give it the operation, tenant and outcome."""
    operation = next((op for e in judged.events if (op := getattr(e.payload, "operation_id", None))),
                     getattr(cmd.payload, "operation_id", None)) or commands.operation_id(cmd.tenant_id, cmd.command_id)
    tracing.rename(f"judge {cmd.command_type}")
    tracing.annotate(tracing.attributes(operation, cmd.tenant_id, command_type=cmd.command_type,
                                        outcome=judged.outcome))
    if judged.outcome == "rejected":
        rejection = next(e.payload for e in judged.events if isinstance(e.payload, events.CommandRejected))
        tracing.fail(f"{rejection.reason_code}: {rejection.message}")


def main() -> int:
    from runtime import process

    return process.main("command-processor", ProcessorSettings.from_env,
                        lambda settings, stop: CommandProcessor(settings).run(stop), holds_state=True)


if __name__ == "__main__":
    raise SystemExit(main())
