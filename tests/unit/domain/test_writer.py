"""The compiled Avro writer writes the bytes fastavro writes, on every schema of the package and on
the corners of Avro binary; what it leaves to fastavro is written by fastavro, or refused with
fastavro's reason — never written differently."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

import fastavro
import pytest
from fastavro.utils import generate_many

import schemas
from schemas.codec import encode, encode_compiled
from schemas.errors import EncodeError
from schemas.reader import compile_reader
from schemas.writer import Unwritten, compile_writer
from tests.unit.domain.avro_samples import CORNER, CORNERS, fastavro_read, samples, written

SCHEMA_ID = 7


_WRITERS: dict[int, object] = {}


def compiled(parsed, record) -> bytes:
    """The bytes the compiled code alone writes (its writer compiled once per schema)."""
    write = _WRITERS.get(id(parsed)) or _WRITERS.setdefault(id(parsed), compile_writer(parsed))
    out: list[bytes] = []
    write(record, out.append)
    return b"".join(out)


def both(parsed, record) -> tuple[bytes, bytes]:
    """(encode_compiled, fastavro's encode) of the same record."""
    return encode_compiled(SCHEMA_ID, parsed, compile_writer(parsed), record), encode(SCHEMA_ID, parsed, record)


@pytest.mark.parametrize("name", schemas.schema_names())
def test_every_schema_compiles_and_writes_what_fastavro_reads_back_byte_for_byte(name):
    # Records as the processes hold them (unions of several records as (name, value)): read from
    # bodies fastavro wrote, written again by the compiled code alone.
    parsed = schemas.parsed_schema(name)
    write, read = compile_writer(parsed), compile_reader(parsed)
    assert write is not None
    for body in samples(parsed, 150, seed=len(name) + 1):
        record, _ = read(body, 0)
        out: list[bytes] = []
        write(record, out.append)
        assert b"".join(out) == body


@pytest.mark.parametrize("name", schemas.schema_names())
def test_generated_records_are_written_as_fastavro_writes_them(name):
    # fastavro's generated records hold unions of records as bare dicts: those are fastavro's to place.
    parsed = schemas.parsed_schema(name)
    random.seed(len(name))
    for record in generate_many(parsed, 100):
        ours, theirs = both(parsed, record)
        assert ours == theirs


@pytest.mark.parametrize("many", [("test.v1.Other", {"n": 3}), ("test.v1.Leaf", {"v": "l"}), None,
                                  ("test.v1.Colour", "GREEN")])
def test_the_corners_of_avro_binary_are_written_as_fastavro_writes_them(many):
    record = {**CORNER, "many": many}
    assert compiled(CORNERS, record) == written(CORNERS, record)


@pytest.mark.parametrize("many", ["RED", "text"])
def test_a_str_in_a_union_of_an_enum_and_a_string_is_placed_by_fastavro(many):
    # fastavro takes the enum when the symbol is one of its own, else the string: its validation decides
    record = {**CORNER, "many": many}
    with pytest.raises(KeyError):
        compiled(CORNERS, record)
    ours, theirs = both(CORNERS, record)
    assert ours == theirs
    assert fastavro_read(CORNERS, ours[5:])["many"] == (("test.v1.Colour", "RED") if many == "RED" else "text")


def test_large_and_negative_numbers_long_strings_and_many_items_are_written_alike():
    record = {**CORNER, "small": -(2**31), "big": 2**63 - 1, "blob": bytes(range(256)) * 3,
              "tags": {f"k{i}": ["é" * i] * (i % 5) for i in range(200)},
              "chain": {"label": "x" * 10_000, "next": {"label": "", "next": None}}}
    assert compiled(CORNERS, record) == written(CORNERS, record)
    for big in (-(2**63), -65, -64, 63, 64, 2**40):
        assert compiled(CORNERS, {**record, "big": big}) == written(CORNERS, {**record, "big": big})


def test_timestamps_before_and_after_the_epoch_and_in_any_zone_are_written_alike():
    rng = random.Random(4)
    ist = timezone(timedelta(hours=5, minutes=30))
    for _ in range(500):
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(-2**55, 2**55))
        for zoned in (at, at.astimezone(ist)):
            record = {**CORNER, "at": zoned}
            assert compiled(CORNERS, record) == written(CORNERS, record)
    assert compiled(CORNERS, {**CORNER, "at": 1_700_000_000_123}) == written(CORNERS, {**CORNER, "at": 1_700_000_000_123})


class Colour(StrEnum):
    RED = "RED"
    GREEN = "GREEN"


@pytest.mark.parametrize("change", [
    {"colour": Colour.RED},  # a StrEnum is a str: written by the compiled code
    {"one": {"v": Colour.GREEN}, "many": ("test.v1.Leaf", {"v": Colour.RED})},
    {"exact": 3},  # an int for a double: fastavro writes float(3)
    {"tags": {"a": ("x", "y")}},  # a tuple outside a union is a sequence
])
def test_str_subclasses_ints_for_doubles_and_tuples_as_arrays_are_written_by_the_compiled_code(change):
    record = {**CORNER, **change}
    assert compiled(CORNERS, record) == written(CORNERS, record)


@pytest.mark.parametrize("change", [
    {"small": 2**31},  # past an int: fastavro writes it all the same
    {"flag": 1},  # truthy, not a bool
    {"big": True},  # a bool for a long
    {"blob": bytearray(b"ab")},
    {"at": datetime(2026, 1, 1, 12)},  # naive: fastavro reads it as local time
    {"many": {"n": 5}},  # a record in a union of several records, without its name
    {"many": Colour.GREEN},  # a str subclass in a union of a string and an enum
    {"one": None, "chain": {"label": "a"}},  # "next" left out: fastavro's default for a nullable field
])
def test_what_the_compiled_code_leaves_to_fastavro_is_written_by_fastavro(change):
    record = {**CORNER, **change}
    with pytest.raises((Unwritten, KeyError, TypeError, ValueError)):
        compiled(CORNERS, record)
    ours, theirs = both(CORNERS, record)
    assert ours == theirs


@pytest.mark.parametrize("change", [
    {"big": 2**63},  # past a long
    {"small": "1"},
    {"colour": "BLUE"},
    {"digest": b"abc"},  # a fixed of 4
    {"one": {"v": 1}},
    {"many": ("test.v1.Nothing", {})},
    {"tags": {1: []}},
])
def test_a_record_fastavro_refuses_is_refused_with_fastavros_reason(change):
    record = {**CORNER, **change}
    with pytest.raises(EncodeError) as ours:
        encode_compiled(SCHEMA_ID, CORNERS, compile_writer(CORNERS), record)
    with pytest.raises(EncodeError) as theirs:
        encode(SCHEMA_ID, CORNERS, record)
    assert str(ours.value) == str(theirs.value)


def test_a_field_left_out_without_default_is_refused():
    record = {k: v for k, v in CORNER.items() if k != "digest"}
    with pytest.raises(EncodeError, match="no value and no default for digest"):
        encode_compiled(SCHEMA_ID, CORNERS, compile_writer(CORNERS), record)


@pytest.mark.parametrize("branches, value", [
    (["long", "double"], 3),  # an int fits both: fastavro validates in order
    (["double", "long"], 3),
    (["float", "double"], 0.1),  # fastavro prefers the double
    (["string", {"type": "enum", "name": "E", "symbols": ["A"]}], "A"),
    (["null", {"type": "array", "items": "int"}], (1, 2)),  # a tuple in a union names a branch
    (["null", {"type": "array", "items": "int"}], [1, 2]),
    (["null", "boolean", "long"], True),
    (["null", "boolean", "long"], 7),
    (["null", {"type": "map", "values": "int"}, {"type": "record", "name": "R", "fields": []}], {}),
    (["null", "string", "long", "double", "boolean", "bytes"], b"x"),
    (["null", "string", "long", "double", "boolean", "bytes"], 2.5),
])
def test_union_values_are_placed_as_fastavro_places_them_or_left_to_it(branches, value):
    parsed = fastavro.parse_schema({"type": "record", "name": "U", "fields": [{"name": "u", "type": branches}]})
    try:
        theirs = encode(SCHEMA_ID, parsed, {"u": value})
    except EncodeError as refused:
        with pytest.raises(EncodeError) as ours:
            encode_compiled(SCHEMA_ID, parsed, compile_writer(parsed), {"u": value})
        assert str(ours.value) == str(refused)
        return
    assert encode_compiled(SCHEMA_ID, parsed, compile_writer(parsed), {"u": value}) == theirs
    assert fastavro_read(parsed, theirs[5:]) is not None


def test_a_schema_with_a_type_left_to_fastavro_compiles_to_none():
    decimal = fastavro.parse_schema({"type": "record", "name": "D", "fields": [
        {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}}]})
    assert compile_writer(decimal) is None
    assert compile_writer(fastavro.parse_schema("string")) is None  # not a record
