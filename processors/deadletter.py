"""Dead-lettering: poison input is copied, untouched, to a `.dlq` topic with the reason and its
origin in headers, inside the caller's transaction when there is one."""
from __future__ import annotations

from confluent_kafka import Message, Producer


def dead_letter(producer: Producer, topic: str, msg: Message, reason: str) -> None:
    headers = list(msg.headers() or []) + [
        ("dbaas-error-reason", reason.encode()),
        ("dbaas-source-topic", msg.topic().encode()),
        ("dbaas-source-partition", str(msg.partition()).encode()),
        ("dbaas-source-offset", str(msg.offset()).encode()),
    ]
    producer.produce(topic, key=msg.key(), value=msg.value(), headers=headers)
