"""The dead-letter contract of every platform consumer: poison input is copied, untouched (key,
value and original headers), to a `.dlq` topic, with why and where it came from in headers — inside
the caller's transaction when there is one.

Headers: `dbaas-error-code` (a stable code, e.g. `wrong_partition`), `dbaas-error-reason` (what was
wrong, for a person), `dbaas-command-id` when the message decoded far enough to name one, and
`dbaas-source-topic/partition/offset`.
"""
from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Message, Producer

CODE = "dbaas-error-code"
REASON = "dbaas-error-reason"
COMMAND_ID = "dbaas-command-id"
SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET = "dbaas-source-topic", "dbaas-source-partition", "dbaas-source-offset"


def headers(msg: Message, reason: str, code: str | None = None,
            command_id: str | None = None) -> list[tuple[str, bytes]]:
    """The dead letter's headers: the message's own, then the contract's."""
    out = list(msg.headers() or []) + [
        (REASON, reason.encode()),
        (SOURCE_TOPIC, (msg.topic() or "").encode()),
        (SOURCE_PARTITION, str(msg.partition()).encode()),
        (SOURCE_OFFSET, str(msg.offset()).encode()),
    ]
    if code is not None:
        out.append((CODE, code.encode()))
    if command_id is not None:
        out.append((COMMAND_ID, command_id.encode()))
    return out


def dead_letter(producer: Producer, topic: str, msg: Message, reason: str, code: str | None = None,
                command_id: str | None = None,
                on_delivery: Callable[..., None] | None = None) -> None:
    """Produce `msg` to dead-letter `topic` (the caller flushes or commits the transaction)."""
    extra = {"on_delivery": on_delivery} if on_delivery is not None else {}
    producer.produce(topic, key=msg.key(), value=msg.value(), headers=headers(msg, reason, code, command_id),
                     **extra)
