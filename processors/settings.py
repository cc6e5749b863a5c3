"""Settings of the command processor, from the environment (`runtime.settings`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from commands.catalog import MAX_COMMAND_BYTES
from runtime.kafka import KafkaAccess, access_from_env, instance_transactional_id
from runtime.settings import env, read


@dataclass(frozen=True)
class ProcessorSettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    # the public keys whose signatures make a command's publisher known
    keyring: Path = env("DBAAS_KEYRING", parse=Path)
    commands_topic: str = env("DBAAS_COMMANDS_TOPIC", "dbaas.commands")
    events_topic: str = env("DBAAS_EVENTS_TOPIC", "dbaas.events")
    dlq_topic: str = env("DBAAS_COMMANDS_DLQ_TOPIC", "dbaas.commands.dlq")
    group_id: str = env("DBAAS_PROCESSOR_GROUP", "dbaas-command-processor")
    # one per instance (`DBAAS_INSTANCE`), stable across its restarts (`kafka.instance_transactional_id`)
    transactional_id: str = env("DBAAS_PROCESSOR_TXN_ID", "dbaas-command-processor-0", compose=instance_transactional_id(
        "DBAAS_PROCESSOR_TXN_ID", "dbaas-command-processor"))
    metrics_port: int = env("DBAAS_METRICS_PORT", 0)
    batch_size: int = 500
    # How long to wait for a batch to fill: the latency floor at low rates, the per-transaction
    # overhead at high ones.
    batch_timeout: float = 0.02
    # dead-lettered before it is decoded
    max_command_bytes: int = env("DBAAS_MAX_COMMAND_BYTES", MAX_COMMAND_BYTES)

    @classmethod
    def from_env(cls, **overrides) -> ProcessorSettings:
        return read(cls, **overrides)
