"""`python -m bench.judge [-n N]`: the command processor's work per command, in one process, no
broker — where the event spine's CPU goes.

(a) decode   one event record as `Serde.decode` reads it (schema resolution skipped when the writer
             schema reads alike), vs fastavro decoding with the writer schema alone (the floor),
             and vs decoding with resolution (what every reader but the projectors did before).
(b) judge    a CreateService judged like the command processor does it — verify its Ed25519
             signature against the keyring, decode, `decide`, `evolve`, encode each event — vs
             decoding and re-encoding the command alone.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import fastavro

import commands
import events
from bench.common import org, service
from events import Envelope, Resources, ServiceRequested, TenantState
from runtime.signing import Keyring, Signer, TrustedKey
from schemas.codec import decode
from schemas.registry import COMMANDS_SUBJECT, EVENTS_SUBJECT, Serde


class _LocalRegistry:
    """The project's own schemas under ids in registration order: the registry's part without its
    HTTP. Like `Registry`, it parses what it was given into its own copy (not the processes'
    reader schema object, which fastavro would recognise and not resolve against)."""

    def __init__(self) -> None:
        self.by_id: dict[int, object] = {}

    def register(self, subject: str, schema: str) -> int:
        self.by_id[len(self.by_id) + 1] = fastavro.parse_schema(json.loads(schema))
        return len(self.by_id)

    def schema(self, schema_id: int) -> object:
        return self.by_id[schema_id]


def _per_call(n: int, fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def bench_decode(n: int) -> None:
    registry = _LocalRegistry()
    serde = Serde(registry, EVENTS_SUBJECT)  # type: ignore[arg-type]
    env = Envelope("e1", "acme", "service", "svc-1", 1, datetime.now(UTC), "c1", "corr-1", None,
                   ServiceRequested("svc-1", "orders", "yugabyte", "2.25", "local", "small", Resources(0.5, 1, 10, 1)),
                   actor_subject="alice")
    data = serde.encode(events.to_avro(env))
    body = data[5:]
    floor = _per_call(n, lambda: fastavro.schemaless_reader(io.BytesIO(body), serde.schema, None,
                                                            return_record_name=True, return_record_name_override=True))
    ours = _per_call(n, lambda: serde.decode(data))
    resolved = _per_call(n, lambda: decode(data, registry.schema, reader_schema=serde.schema))
    print(f"(a) decode one event, {n} times")
    print(f"    Serde.decode        : {ours:7.1f} µs")
    print(f"    fastavro, no resolution (floor): {floor:7.1f} µs   ratio {ours / floor:5.2f}")
    print(f"    with resolution     : {resolved:7.1f} µs   ({resolved / ours:4.1f}x Serde.decode)")


def bench_judge(n: int) -> None:
    registry = _LocalRegistry()
    cmds, evs = Serde(registry, COMMANDS_SUBJECT), Serde(registry, EVENTS_SUBJECT)  # type: ignore[arg-type]
    tenants = [f"t{i}" for i in range(50)]
    states = {t: TenantState(t) for t in tenants}
    gateway = Signer.generate("gateway-bench")
    keyring = Keyring(None, [TrustedKey.from_dict({"key_id": gateway.key_id, "kind": "gateway", "name": "gateway",
                                                   "public_key": gateway.public_text()})])
    topic = "dbaas.commands"

    def judge(signed: tuple[bytes, list]) -> None:
        data, headers = signed
        key = keyring.verify(topic, None, data, headers)
        proof = commands.Authority(key.kind, key.name, key.tenants, key.roles)
        record = cmds.decode(data)
        cmd = commands.from_avro(record)
        state = states[cmd.tenant_id]
        for env in commands.decide(state, cmd, commands.fingerprint(record["payload"]), proof):
            state = events.evolve(state, env)
            evs.encode(events.to_avro(env))
        states[cmd.tenant_id] = state

    def sign(data: bytes) -> tuple[bytes, list]:
        return data, gateway.headers(topic, None, data)

    for t in tenants:
        for c in org(t):
            judge(sign(cmds.encode(commands.to_avro(c))))
    work = [sign(cmds.encode(commands.to_avro(service(tenants[i % len(tenants)], i)))) for i in range(n)]
    started = time.perf_counter()
    for signed in work:
        judge(signed)
    ours = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for data, _headers in work:
        cmds.encode(cmds.decode(data))
    floor = (time.perf_counter() - started) / n * 1e6
    print(f"(b) judge {n} CreateService commands over {len(tenants)} tenants")
    print(f"    verify + decode + decide + evolve + encode: {ours:7.1f} µs/command = {1e6 / ours:6.0f} commands/s per core")
    print(f"    decode + encode the command alone         : {floor:7.1f} µs   ratio {ours / floor:5.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.judge")
    parser.add_argument("-n", type=int, default=20000)
    args = parser.parse_args()
    bench_decode(args.n)
    bench_judge(args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
