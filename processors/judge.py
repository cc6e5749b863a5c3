"""The command processor's pure core: what to do with one message of `dbaas.commands`.

`judge(tenants, raw) -> Judged | DeadLetter`: a message over the size limit, one that does not
decode to a command, whose key is not its tenant id or that sits on another partition than its
key's is dead-lettered with a code and a reason a person can act on (`oversized`, `undecodable`,
`wrong_key`, `wrong_partition`); any other is judged by `decide` with what its signature proved,
and the events are folded into the tenant's state. The processor (`processors.command_processor`)
reads, decodes bytes with the registry, verifies the signature, calls `judge`, and writes.

Pure: no I/O, no clock. May import: `commands`, `events` — never Kafka or other clients (an
import-linter contract).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import commands
from events import CommandRejected, Envelope, TenantState


@dataclass(frozen=True)
class Raw:
    """One message of the commands topic, as far as the processor could read it.

    `record`: the decoded Avro record, or None with `poison` saying why it did not decode (None
    with no poison: not decoded because it is oversized). `expected_partition`: the partition
    murmur2 maps the key to over `partition_count` partitions."""

    topic: str
    partition: int
    key: bytes | None
    size: int
    max_bytes: int
    partition_count: int
    expected_partition: int
    record: Mapping[str, Any] | None = None
    poison: str | None = None
    proof: commands.Proof | None = None


@dataclass(frozen=True)
class Judged:
    command: commands.CommandEnvelope
    events: list[Envelope]
    state: TenantState  # the tenant's state after the events

    @property
    def outcome(self) -> str:
        if not self.events:
            return "duplicate"
        if any(isinstance(e.payload, CommandRejected) for e in self.events):
            return "rejected"
        return "accepted"


@dataclass(frozen=True)
class DeadLetter:
    code: str
    reason: str
    command_id: str | None = None


def oversized(size: int, max_bytes: int) -> bool:
    """Too big to be decoded at all."""
    return size > max_bytes


def judge(tenants: Mapping[str, TenantState], raw: Raw) -> Judged | DeadLetter:
    if oversized(raw.size, raw.max_bytes):
        return DeadLetter("oversized", f"the command is {raw.size} bytes; at most {raw.max_bytes} are accepted")
    if raw.record is None:
        return DeadLetter("undecodable", raw.poison or "the command did not decode")
    try:
        cmd = commands.from_avro(raw.record)
    except commands.CommandError as exc:
        return DeadLetter("undecodable", f"not a valid command: {exc}")
    if raw.key != cmd.tenant_id.encode():
        return DeadLetter("wrong_key", f"the message key must be the tenant id {cmd.tenant_id!r}", cmd.command_id)
    if raw.partition != raw.expected_partition:
        # Judged here, it would meet a state that never saw this tenant's other commands.
        return DeadLetter(
            "wrong_partition", f"tenant {cmd.tenant_id!r} belongs on partition {raw.expected_partition} of "
            f"{raw.topic} (murmur2 of the key over {raw.partition_count} partitions), not on "
            f"{raw.partition}: publish with the murmur2 partitioner", cmd.command_id)
    state = tenants.get(cmd.tenant_id) or TenantState(cmd.tenant_id)
    proof = raw.proof if raw.proof is not None else commands.Unverified("the signature was not checked")
    produced, state = commands.decide_and_evolve(state, cmd, commands.fingerprint(raw.record["payload"]), proof)
    return Judged(cmd, produced, state)
