"""Publishing commands to `dbaas.commands`: the contract every publisher follows.

Key = tenant id (bytes, UTF-8), value = `Envelope` in the Confluent wire format under the
subject `dbaas.commands-value`, partitioner murmur2 (the Java client's default) so that Java and
Python publishers place a tenant's commands in the same partition. The producer is idempotent
with `acks=all`; `publish` returns once the broker has the command, or raises. Each command is
signed with the publishing process's key (`runtime.signing`): the command processor judges only
commands whose signature a key of the platform's keyring verifies.

When tracing is on (`runtime.tracing`), the current span travels in a `traceparent` header. It is
not signed: the signature covers the topic, key and value only, and no header is part of it. A
forged or stripped `traceparent` can only misplace a trace; it never changes what the command
processor believes or decides.

It knows a command only by what it publishes (`Envelope` below: `commands.CommandEnvelope` is one),
so the domain stays free of Kafka clients.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from runtime import tracing
from runtime.kafka import KafkaAccess, producer_config
from runtime.signing import Signer
from schemas.registry import COMMANDS_SUBJECT, Registry, Serde


class Envelope(Protocol):
    """What the publisher needs of a command envelope."""

    command_id: str
    tenant_id: str
    correlation_id: str

    def to_avro(self) -> dict[str, Any]: ...


class PublishError(Exception):
    """The broker did not take the command; nothing was published."""


class CommandTooLarge(PublishError):
    """The encoded command is over the producer's or the broker's message size limit: sending it
    again cannot help."""


def _refused(command_id: str, err: KafkaError | Exception) -> PublishError:
    code = err.code() if isinstance(err, KafkaError) else (
        err.args[0].code() if err.args and isinstance(err.args[0], KafkaError) else None)
    kind = CommandTooLarge if code == KafkaError.MSG_SIZE_TOO_LARGE else PublishError
    return kind(f"command {command_id} not published: {err}")


class Publisher:
    def __init__(self, kafka: KafkaAccess | str, registry_url: str, topic: str = "dbaas.commands",
                 extra: dict | None = None, signer: Signer | None = None):
        self.topic = topic
        self.signer = signer
        self.serde = Serde(Registry(registry_url), COMMANDS_SUBJECT)
        self.producer = Producer(producer_config(kafka, **{
            "linger.ms": 2, "partitioner": "murmur2_random", **(extra or {})}))
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="publisher-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def publish_async(self, envelope: Envelope) -> Future:
        """Hand the command to the producer; the future resolves to (partition, offset)."""
        future: Future = Future()

        def delivered(err, msg):
            if err is not None:
                future.set_exception(_refused(envelope.command_id, err))
            else:
                future.set_result((msg.partition(), msg.offset()))

        key, value = envelope.tenant_id.encode(), self.serde.encode(envelope.to_avro())
        headers = [("correlation-id", envelope.correlation_id.encode())]
        if self.signer is not None:
            headers += self.signer.headers(self.topic, key, value)
        tracing.inject(headers)
        try:
            self.producer.produce(self.topic, key=key, value=value, headers=headers, on_delivery=delivered)
        except (KafkaException, BufferError) as exc:
            future.set_exception(_refused(envelope.command_id, exc))
        return future

    def publish(self, envelope: Envelope, timeout: float = 30.0) -> tuple[int, int]:
        return self.publish_async(envelope).result(timeout)

    def close(self) -> None:
        self.producer.flush(30)
        self._stop.set()
        self._poller.join(5)
