"""`Serde.decode` (and so the projectors' `Decoder`) reads records of an older writer schema without
schema resolution only where that changes nothing, and every record the same as resolution would. A fake registry holds the schemas;
no broker."""
from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from events import Envelope, OrganizationCreated, Resources, ServiceRequested, from_avro, to_avro
from projections.stream import Decoder
from schemas import codec, load_schema
from schemas.codec import reads_alike
from schemas.registry import EVENTS_SUBJECT, Serde

READER_ID = 7


class FakeRegistry:
    """Knows the reader schema (as `register` gives it) and the writer schemas of the test."""

    def __init__(self, writers: dict[int, Any]) -> None:
        self.writers = writers
        self.asked: list[int] = []

    def register(self, _subject: str, _schema: str) -> int:
        return READER_ID

    def schema(self, schema_id: int) -> Any:
        self.asked.append(schema_id)
        if schema_id == READER_ID:
            return fastavro.parse_schema(load_schema("event_envelope"))
        if schema_id not in self.writers:
            raise LookupError(schema_id)
        return self.writers[schema_id]


class FakeMessage:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def headers(self) -> None:
        return None


def envelope(payload: Any, actor: str | None = "alice") -> Envelope:
    return Envelope("e1", "acme", "service", "svc-1", 1, datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
                    "c1", "corr-1", None, payload, actor_subject=actor)


def without_branches(*names: str) -> dict[str, Any]:
    """The event schema as an older version: some event records not added yet."""
    schema = load_schema("event_envelope")
    payload = next(f for f in schema["fields"] if f["name"] == "payload")
    payload["type"] = [b for b in payload["type"] if b["name"] not in names]
    return schema


def without_service_requested() -> dict[str, Any]:
    """An older schema without ServiceRequested, where Resources is first defined: here it is
    defined in ServiceScaleRequested instead (named types are defined at their first use)."""
    schema = load_schema("event_envelope")
    payload = next(f for f in schema["fields"] if f["name"] == "payload")
    requested = next(b for b in payload["type"] if b["name"] == "ServiceRequested")
    resources = next(f["type"] for f in requested["fields"] if f["name"] == "resources")
    assert isinstance(resources, dict) and resources["name"] == "Resources"
    payload["type"].remove(requested)
    scale = next(b for b in payload["type"] if b["name"] == "ServiceScaleRequested")
    next(f for f in scale["fields"] if f["name"] == "old_resources")["type"] = resources
    restore = next(f["type"] for f in requested["fields"] if f["name"] == "restore")  # so is RestoreSource
    started = next(b for b in payload["type"] if b["name"] == "OperationStarted")
    next(f for f in started["fields"] if f["name"] == "restore")["type"] = restore
    return schema


def without_field(name: str) -> dict[str, Any]:
    schema = load_schema("event_envelope")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != name]
    return schema


def parsed(schema: dict[str, Any]) -> Any:
    return fastavro.parse_schema(copy.deepcopy(schema))


SERVICE = ServiceRequested("svc-1", "orders", "yugabyte", "2.25", "local", "small", Resources(0.5, 1, 10, 1))


@pytest.mark.parametrize(("writer", "alike", "reason"), [
    (load_schema("event_envelope"), True, "the same schema"),
    (without_branches("OrganizationCreated"), True, "an older schema: one event type fewer"),
    (without_service_requested(), True, "Resources defined in another branch: named types compare by name"),
    (without_field("actor_subject"), False, "resolution adds the reader's default"),
])
def test_reads_alike(writer, alike, reason):
    assert reads_alike(parsed(writer), parsed(load_schema("event_envelope"))) is alike, reason


def test_a_changed_field_type_or_enum_does_not_read_alike():
    reader = load_schema("event_envelope")
    changed = copy.deepcopy(reader)
    next(f for f in changed["fields"] if f["name"] == "sequence")["type"] = "int"
    assert not reads_alike(parsed(changed), parsed(reader))
    extra = copy.deepcopy(reader)
    payload = next(f for f in extra["fields"] if f["name"] == "payload")
    payload["type"].append({"type": "record", "name": "FromTheFuture", "fields": []})
    assert not reads_alike(parsed(extra), parsed(reader)), "a writer branch the reader lacks"


@pytest.mark.parametrize(("writer", "event", "alike"), [
    (without_branches("OrganizationCreated", "ServiceDeleted"), envelope(SERVICE), True),
    (without_field("actor_subject"), envelope(OrganizationCreated("acme", "Acme", "alice"), actor=None), False),
    (load_schema("event_envelope"), envelope(SERVICE), True),
])
def test_every_writer_schema_decodes_as_with_resolution(writer, event, alike):
    registry = FakeRegistry({1: parsed(writer)})
    serde = Serde(registry, EVENTS_SUBJECT)  # type: ignore[arg-type]
    decode = Decoder(serde)
    data = codec.encode(1, parsed(writer), to_avro(event) if "actor_subject" in str(writer)
                        else {k: v for k, v in to_avro(event).items() if k != "actor_subject"})
    items = [decode(FakeMessage(data)) for _ in range(3)]  # type: ignore[arg-type]
    # Alike: compared once, then decoded with the cached schema; else resolved by the serde each time.
    assert registry.asked.count(1) == (1 if alike else 1 + len(items))
    assert all(item.poison is None and item.envelope == event for item in items)
    resolved = codec.decode(data, registry.schema, reader_schema=serde.schema)
    assert from_avro(resolved) == event, "as schema resolution reads it"
    assert serde.decode(data) == resolved


def test_an_unknown_schema_id_is_poison():
    registry = FakeRegistry({})
    decode = Decoder(Serde(registry, EVENTS_SUBJECT))  # type: ignore[arg-type]
    item = decode(FakeMessage(codec.encode(99, parsed(load_schema("event_envelope")), to_avro(envelope(SERVICE)))))  # type: ignore[arg-type]
    assert item.envelope is None and item.poison is not None and "unknown schema id 99" in item.poison
