"""How a PoP reports on ``dbaas.pop.status``, shared by the local PoP agent and the Kubernetes PoP
operator: ``Reporter`` produces signed ``PopStatusReport`` records (key = tenant id; acks=all,
idempotent producer) and tells which ones Kafka acknowledged, one in flight per report id, so a
caller marks a report sent only once it is acknowledged and re-sends it until then;
``encrypt_credentials`` turns connection credentials into the Fernet token a Ready report carries
(never clear text).

May import: ``runtime``, ``schemas``, confluent-kafka, cryptography, structlog.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError, Producer
from cryptography.fernet import Fernet
from prometheus_client import Counter

from runtime import kafka, tracing
from schemas.registry import POP_STATUS_SUBJECT, Registry, Serde

log = structlog.get_logger("operators.reporting")

DELIVERY_ERRORS = Counter("dbaas_pop_report_delivery_errors_total", "Status reports Kafka did not acknowledge "
                          "(re-sent on the next round)")
_UNTRACED = contextlib.nullcontext()
R = TypeVar("R")


def mark_acknowledged(records: MutableMapping[str, R], acked: set[str]) -> list[R]:
    """Mark, in place, the not yet reported records whose report id Kafka acknowledged as reported;
    returns them (as they were) for the caller to count, log and save."""
    done = []
    for key, record in list(records.items()):
        if not record.reported and record.report_id in acked:  # type: ignore[attr-defined]
            records[key] = replace(record, reported=True)  # type: ignore[type-var]
            done.append(record)
    return done


def encrypt_credentials(fernet: Fernet, creds: Any) -> str:
    """The Fernet token of the credentials JSON carried in a Ready report."""
    body: dict[str, Any] = {"username": creds.username, "password": creds.password, "host": creds.host,
                            "port": creds.port, "uri": creds.uri}
    if creds.database is not None:
        body["database"] = creds.database
    if creds.key_prefix is not None:
        body["key_prefix"] = creds.key_prefix
    return fernet.encrypt(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()).decode()


class Reporter:
    """Produces reports and tells which ones Kafka acknowledged. One in flight per report id."""

    def __init__(self, settings: Any, delivery_errors: Any = None):
        """``settings``: any object with ``pop_status_topic``, ``signer``, ``registry_url``,
        ``kafka``, ``message_timeout_ms`` and ``pop``; ``delivery_errors``: the counter a report
        Kafka did not take increments (the reporting process's own; by default this module's)."""
        self._delivery_errors = delivery_errors if delivery_errors is not None else DELIVERY_ERRORS
        self.topic = settings.pop_status_topic
        self._signer = settings.signer
        self._registry_url = settings.registry_url
        self._serde: Serde | None = None
        self._producer = Producer(kafka.producer_config(settings.kafka, **{
            "linger.ms": 5, "message.timeout.ms": settings.message_timeout_ms,
            "client.id": f"dbaas-pop-reporter-{settings.pop}"}))
        self._in_flight: set[str] = set()
        self._acked: set[str] = set()

    def send(self, tenant: str, record: dict[str, Any], trace: str | None = None) -> None:
        """Produce `record` unless it is in flight or acknowledged; with `trace` (a traceparent),
        in a span continuing it, whose context goes into the report's `traceparent` header."""
        rid = record["report_id"]
        if rid in self._in_flight or rid in self._acked:
            return
        if self._serde is None:
            self._serde = Serde(Registry(self._registry_url), POP_STATUS_SUBJECT)  # may raise: retried

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            self._in_flight.discard(rid)
            if err is None:
                self._acked.add(rid)
            else:
                log.warning("report not acknowledged; re-sent on the next sync", report_id=rid, error=str(err))
                self._delivery_errors.inc()

        key, value = tenant.encode(), self._serde.encode(record)
        headers = self._signer.headers(self.topic, key, value) if self._signer else []
        with tracing.continued(f"report {record['phase']}", trace, tracing.attributes(
                record["operation_id"], tenant, "report", phase=record["phase"], pop=record["pop"],
                service_id=record.get("service_id")), kind=tracing.SpanKind.PRODUCER) if trace else _UNTRACED:
            tracing.inject(headers)
            try:
                self._producer.produce(self.topic, key=key, value=value, headers=headers, on_delivery=delivered)
            except BufferError:
                self._producer.poll(0)
                return
        self._in_flight.add(rid)

    def flush(self, timeout: float) -> set[str]:
        """Wait up to ``timeout`` s for deliveries; the report ids acknowledged since the last call."""
        if self._in_flight:
            self._producer.flush(timeout)
        else:
            self._producer.poll(0)
        acked, self._acked = self._acked, set()
        return acked

    def close(self, timeout: float = 10.0) -> set[str]:
        return self.flush(timeout)
