"""Events are written straight from their envelopes (`events.encoder`): the bytes of
`serde.encode(events.to_avro(envelope))`, on every event sample and on envelopes read from
generated bodies; whatever the compiled code does not write goes through `to_avro`, so odd inputs
give the same bytes or the same error as that path."""

from __future__ import annotations

import dataclasses
from enum import StrEnum

import pytest

import events
from events import RECORD_CLASSES, Envelope
from schemas import PoisonMessage, parsed_schema
from schemas.reader import compile_reader
from schemas.registry import EVENTS_SUBJECT, Serde
from schemas.writer import compile_writer
from tests.unit.domain.avro_samples import samples
from tests.unit.domain.test_codec import EVENT_SAMPLES

PARSED = parsed_schema("event_envelope")


class _FixedIds:
    """The one call `Serde` makes of its registry: the id of the schema it registers."""

    def register(self, subject: str, schema: str) -> int:
        return 12


SERDE = Serde(_FixedIds(), EVENTS_SUBJECT)  # type: ignore[arg-type]
ENCODE = events.encoder(SERDE)


def through_dicts(envelope: Envelope) -> bytes:
    return SERDE.encode(events.to_avro(envelope))


def outcome(encode, envelope) -> tuple[str, object]:
    """("bytes", the bytes) or ("error", its type and message)."""
    try:
        return "bytes", encode(envelope)
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return "error", (type(exc), str(exc))


def records(schema, named) -> list[dict]:
    """Every record schema reachable from ``schema`` (each once)."""
    found: dict[str, dict] = {}

    def walk(s) -> None:
        if isinstance(s, str):
            if s in named and s not in found:
                walk(named[s])
            return
        if isinstance(s, list):
            for branch in s:
                walk(branch)
            return
        if s["type"] == "record":
            if s["name"] in found:
                return
            found[s["name"]] = s
            for f in s["fields"]:
                walk(f["type"])
        elif s["type"] == "array":
            walk(s["items"])
        elif s["type"] == "map":
            walk(s["values"])

    walk(schema)
    return list(found.values())


def test_every_record_of_the_events_schema_has_a_class_with_its_fields() -> None:
    every = records(PARSED, PARSED["__named_schemas"])
    assert len(every) > 40
    for record in every:
        cls = RECORD_CLASSES[record["name"]]
        assert {f.name for f in dataclasses.fields(cls)} == {f["name"] for f in record["fields"]}, record["name"]


def test_the_events_schema_compiles_for_objects() -> None:
    assert compile_writer(PARSED, RECORD_CLASSES) is not None


def test_a_record_without_a_class_leaves_the_schema_to_the_record_dicts() -> None:
    classes = {k: v for k, v in RECORD_CLASSES.items() if not k.endswith(".ServiceReady")}
    assert compile_writer(PARSED, classes) is None


@pytest.mark.parametrize("envelope", EVENT_SAMPLES, ids=lambda e: f"{type(e.payload).__name__}-{e.aggregate_id}")
def test_every_event_sample_is_written_as_its_record_dict_is(envelope: Envelope) -> None:
    assert ENCODE(envelope) == through_dicts(envelope)


def test_envelopes_read_from_generated_bodies_are_written_as_their_record_dicts_are() -> None:
    read = compile_reader(PARSED)
    written = 0
    for body in samples(PARSED, 400, seed=3):
        record, _ = read(body, 0)
        try:
            envelope = events.from_avro(record)
        except PoisonMessage:
            continue  # a record no event class holds (e.g. fields its builder refuses)
        assert ENCODE(envelope) == through_dicts(envelope)
        written += 1
    assert written > 300


def test_the_fast_path_writes_the_samples_itself() -> None:
    """The samples are written by the compiled code, not by the fallback through `to_avro`."""
    write = compile_writer(PARSED, RECORD_CLASSES)
    for envelope in EVENT_SAMPLES:
        out: list[bytes] = []
        write(envelope, out.append)
        assert b"".join(out) == through_dicts(envelope)[5:]


class Colour(StrEnum):
    RED = "red"


class ServiceReady(events.ServiceReady):  # a subclass of the same name
    pass


@dataclasses.dataclass(frozen=True)
class Unknown:
    service_id: str


def odd_envelopes() -> list[tuple[str, Envelope]]:
    base = next(e for e in EVENT_SAMPLES if isinstance(e.payload, events.ServiceReady))
    cdc = next(e for e in EVENT_SAMPLES if isinstance(e.payload, events.CdcEnableRequested))
    requested = next(e for e in EVENT_SAMPLES if isinstance(e.payload, events.ServiceRequested))
    extra = dataclasses.replace(base)
    object.__setattr__(extra, "cached", 1)
    missing = dataclasses.replace(base)
    del missing.__dict__["sequence"]
    missing_in_payload = dataclasses.replace(base, payload=dataclasses.replace(base.payload))
    del missing_in_payload.payload.__dict__["service_id"]
    return [
        ("unknown payload class", dataclasses.replace(base, payload=Unknown("x"))),
        ("payload as a (name, dict) pair", dataclasses.replace(
            base, payload=("dbaas.v1.ServiceReady", {"service_id": "x"}))),  # type: ignore[arg-type]
        ("subclass of an event class", dataclasses.replace(
            base, payload=ServiceReady(**{f.name: getattr(base.payload, f.name)
                                          for f in dataclasses.fields(base.payload)}))),
        ("tables as a tuple", cdc),
        ("tables as a list", dataclasses.replace(cdc, payload=dataclasses.replace(cdc.payload, tables=["a", "b"]))),
        ("a StrEnum for a string", dataclasses.replace(
            requested, payload=dataclasses.replace(requested.payload, engine=Colour.RED))),
        ("a dict for a record", dataclasses.replace(
            requested, payload=dataclasses.replace(requested.payload, resources=dataclasses.asdict(
                requested.payload.resources)))),
        ("an int for a string", dataclasses.replace(base, tenant_id=5)),
        ("None for a required string", dataclasses.replace(base, event_id=None)),
        ("an attribute besides the fields", extra),
        ("an envelope field missing from __dict__", missing),
        ("a payload field missing from __dict__", missing_in_payload),
        ("a naive datetime", dataclasses.replace(base, occurred_at=base.occurred_at.replace(tzinfo=None))),
    ]


@pytest.mark.parametrize("envelope", [e for _, e in odd_envelopes()], ids=[n for n, _ in odd_envelopes()])
def test_odd_envelopes_give_the_bytes_or_the_error_of_the_record_dict_path(envelope: Envelope) -> None:
    assert outcome(ENCODE, envelope) == outcome(through_dicts, envelope)


def test_new_envelope_builds_what_the_dataclass_builds() -> None:
    """`new_envelope` lists the envelope's fields itself: a field added to `Envelope` and not to it
    fails here instead of leaving envelopes without it."""
    for sample in EVENT_SAMPLES:
        given = {f.name: getattr(sample, f.name) for f in dataclasses.fields(Envelope) if f.name != "schema_version"}
        built, constructed = events.new_envelope(**given), Envelope(**given)
        assert built == constructed
        assert list(built.__dict__) == list(constructed.__dict__)
        assert built.__dict__ == constructed.__dict__
