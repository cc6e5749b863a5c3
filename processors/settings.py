"""Settings of the processor processes, from the environment (one composition root each)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessorSettings:
    kafka: str
    registry_url: str
    keyring: Path  # the public keys whose signatures make a command's publisher known
    commands_topic: str = "dbaas.commands"
    events_topic: str = "dbaas.events"
    dlq_topic: str = "dbaas.commands.dlq"
    group_id: str = "dbaas-command-processor"
    # Stable per instance: a restarted instance fences its predecessor's open transaction at once
    # instead of waiting for the transaction timeout.
    transactional_id: str = "dbaas-command-processor-0"
    metrics_port: int = 0
    batch_size: int = 500
    # How long to wait for a batch to fill: the latency floor at low rates, the per-transaction
    # overhead at high ones.
    batch_timeout: float = 0.02
    # A command is a few hundred bytes; anything this big is a mistake or an attack, dead-lettered
    # before it is decoded.
    max_command_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls, **overrides) -> "ProcessorSettings":
        env = os.environ
        values = dict(
            kafka=env["DBAAS_KAFKA_BOOTSTRAP"],
            registry_url=env["DBAAS_REGISTRY_URL"],
            keyring=Path(env["DBAAS_KEYRING"]),
            commands_topic=env.get("DBAAS_COMMANDS_TOPIC", cls.commands_topic),
            events_topic=env.get("DBAAS_EVENTS_TOPIC", cls.events_topic),
            dlq_topic=env.get("DBAAS_COMMANDS_DLQ_TOPIC", cls.dlq_topic),
            group_id=env.get("DBAAS_PROCESSOR_GROUP", cls.group_id),
            transactional_id=env.get("DBAAS_PROCESSOR_TXN_ID", cls.transactional_id),
            metrics_port=int(env.get("DBAAS_METRICS_PORT", "0")),
            max_command_bytes=int(env.get("DBAAS_MAX_COMMAND_BYTES", str(cls.max_command_bytes))),
        )
        values.update(overrides)
        return cls(**values)
