"""Dead-lettering: poison input is copied, untouched, to a `.dlq` topic with the reason and its
origin in headers, inside the caller's transaction when there is one.

Headers: `dbaas-error-code` (a stable code, e.g. `wrong_partition`), `dbaas-error-reason` (what was
wrong, for a person), `dbaas-command-id` when the message decoded far enough to name one, and
`dbaas-source-topic/partition/offset`."""
from __future__ import annotations

from confluent_kafka import Message, Producer


def dead_letter(producer: Producer, topic: str, msg: Message, reason: str, code: str | None = None,
                command_id: str | None = None) -> None:
    headers = list(msg.headers() or []) + [
        ("dbaas-error-reason", reason.encode()),
        ("dbaas-source-topic", msg.topic().encode()),
        ("dbaas-source-partition", str(msg.partition()).encode()),
        ("dbaas-source-offset", str(msg.offset()).encode()),
    ]
    if code is not None:
        headers.append(("dbaas-error-code", code.encode()))
    if command_id is not None:
        headers.append(("dbaas-command-id", command_id.encode()))
    producer.produce(topic, key=msg.key(), value=msg.value(), headers=headers)
