"""The compiled Avro reader gives what fastavro gives, on every schema of the package and on the
corners of Avro binary (blocks with sizes, unions of several records, named references, recursion);
bytes that do not fit are poison, never a different record."""

from __future__ import annotations

import io
import random
import struct
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from fastavro.utils import generate_many

import schemas
from schemas.codec import decode, decode_compiled
from schemas.errors import PoisonMessage
from schemas.reader import compile_reader

SCHEMA_ID = 7
HEADER = struct.pack(">bI", 0, SCHEMA_ID)


def fastavro_read(parsed: Any, body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), parsed, None, return_record_name=True,
                                      return_record_name_override=True)


def written(parsed: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (True == 1 would pass a plain comparison)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        return a == b and a.tzinfo == b.tzinfo
    return bool(a == b)


def samples(parsed: Any, count: int, seed: int) -> list[bytes]:
    random.seed(seed)  # generate_many draws from the random module
    return [written(parsed, record) for record in generate_many(parsed, count)]


@pytest.mark.parametrize("name", schemas.schema_names())
def test_every_schema_compiles_and_reads_what_fastavro_reads(name):
    parsed = schemas.parsed_schema(name)
    read = compile_reader(parsed)
    assert read is not None
    for body in samples(parsed, 150, seed=len(name)):
        value, end = read(body, 0)
        assert end == len(body)
        assert same(value, fastavro_read(parsed, body)), body


@pytest.mark.parametrize("name", schemas.schema_names())
def test_a_truncated_body_is_poison(name):
    parsed = schemas.parsed_schema(name)
    read = compile_reader(parsed)
    for body in samples(parsed, 20, seed=3):
        for cut in range(len(body)):
            with pytest.raises(PoisonMessage, match=f"does not decode with schema id {SCHEMA_ID}"):
                decode_compiled(HEADER + body[:cut], SCHEMA_ID, read)


def test_trailing_bytes_are_poison_as_with_fastavro():
    parsed = schemas.parsed_schema("pop_status")
    body = samples(parsed, 1, seed=1)[0]
    with pytest.raises(PoisonMessage, match="1 byte\\(s\\) left after the record") as compiled:
        decode_compiled(HEADER + body + b"\x00", SCHEMA_ID, compile_reader(parsed))
    with pytest.raises(PoisonMessage) as slow:
        decode(HEADER + body + b"\x00", lambda _id: parsed)
    assert compiled.value.reason == slow.value.reason


@pytest.mark.parametrize("name", ["event_envelope", "command_envelope", "service_metrics"])
def test_a_damaged_body_reads_as_fastavro_reads_it_or_is_poison(name):
    # One byte changed: where the compiled reader gives a record, fastavro gives the same one.
    parsed = schemas.parsed_schema(name)
    read = compile_reader(parsed)
    rng = random.Random(11)
    read_alike = refused = 0
    for body in samples(parsed, 60, seed=5):
        for _ in range(10):
            damaged = bytearray(body)
            damaged[rng.randrange(len(body))] = rng.randrange(256)
            data = HEADER + bytes(damaged)
            try:
                got = decode_compiled(data, SCHEMA_ID, read)
            except PoisonMessage:
                refused += 1
                continue
            assert same(got, decode(data, lambda _id: parsed))
            read_alike += 1
    assert read_alike and refused  # both paths were taken


CORNERS = fastavro.parse_schema({
    "type": "record", "name": "Corner", "namespace": "test.v1",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "exact", "type": "double"},
        {"name": "blob", "type": "bytes"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
        {"name": "one", "type": ["null", {"type": "record", "name": "Leaf", "fields": [
            {"name": "v", "type": "string"}]}]},
        {"name": "many", "type": [
            "null", "test.v1.Leaf",
            {"type": "record", "name": "Other", "fields": [{"name": "n", "type": "int"}]},
            "test.v1.Colour", "string"]},
        {"name": "chain", "type": {"type": "record", "name": "Link", "fields": [
            {"name": "label", "type": "string"}, {"name": "next", "type": ["null", "test.v1.Link"]}]}},
    ],
})

CORNER = {
    "flag": True, "small": -64, "big": -(2**62), "ratio": 0.5, "exact": -1.25e300, "blob": b"\x00\xff",
    "digest": b"abcd", "colour": "GREEN", "at": datetime(2026, 12, 5, 9, 30, 1, 123000, tzinfo=UTC),
    "tags": {"a": ["x", "y"], "é": []}, "one": {"v": "leaf"}, "many": ("test.v1.Other", {"n": 3}),
    "chain": {"label": "a", "next": {"label": "b", "next": None}},
}


@pytest.mark.parametrize("many", [("test.v1.Other", {"n": 3}), ("test.v1.Leaf", {"v": "l"}), "RED", "text", None])
def test_the_corners_of_avro_binary_read_as_fastavro_reads_them(many):
    body = written(CORNERS, {**CORNER, "many": many})
    value, end = compile_reader(CORNERS)(body, 0)
    assert end == len(body)
    assert same(value, fastavro_read(CORNERS, body))
    assert value["at"] == CORNER["at"] and value["one"] == {"v": "leaf"}  # one record: no name


def zigzag(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def test_blocks_with_negative_counts_and_byte_sizes_are_read():
    # Writers may split arrays and maps into blocks and give a block's size after a negative count.
    parsed = fastavro.parse_schema({"type": "record", "name": "Blocks", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "int"}},
        {"name": "m", "type": {"type": "map", "values": "long"}}]})
    body = (zigzag(-2) + zigzag(2) + zigzag(1) + zigzag(2) + zigzag(1) + zigzag(3) + zigzag(0)
            + zigzag(-1) + zigzag(3) + zigzag(1) + b"k" + zigzag(9) + zigzag(0))
    value, end = compile_reader(parsed)(body, 0)
    assert end == len(body)
    assert value == {"xs": [1, 2, 3], "m": {"k": 9}} == fastavro_read(parsed, body)


@pytest.mark.parametrize("body, detail", [
    (zigzag(5) + zigzag(-3), "ValueError: a length of -3"),
    (zigzag(5) + zigzag(4) + b"ab", "ends 2 byte\\(s\\) before its record does"),
    (zigzag(5) + zigzag(1) + b"\xff", "UnicodeDecodeError"),
])
def test_strings_that_do_not_fit_are_poison(body, detail):
    parsed = fastavro.parse_schema({"type": "record", "name": "S", "fields": [
        {"name": "n", "type": "int"}, {"name": "s", "type": "string"}]})
    with pytest.raises(PoisonMessage, match=detail):
        decode_compiled(HEADER + body, SCHEMA_ID, compile_reader(parsed))


@pytest.mark.parametrize("index", [-1, 2, 5])
def test_an_enum_or_union_index_out_of_range_is_poison(index):
    parsed = fastavro.parse_schema({"type": "record", "name": "E", "fields": [
        {"name": "c", "type": {"type": "enum", "name": "C", "symbols": ["A", "B"]}},
        {"name": "u", "type": ["null", "string"]}]})
    read = compile_reader(parsed)
    with pytest.raises(PoisonMessage, match="IndexError"):
        decode_compiled(HEADER + zigzag(index) + zigzag(0), SCHEMA_ID, read)
    with pytest.raises(PoisonMessage, match="IndexError"):
        decode_compiled(HEADER + zigzag(0) + zigzag(index), SCHEMA_ID, read)


def test_a_schema_with_a_type_left_to_fastavro_compiles_to_none():
    decimal = fastavro.parse_schema({"type": "record", "name": "D", "fields": [
        {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}}]})
    assert compile_reader(decimal) is None
    assert compile_reader(fastavro.parse_schema("string")) is None  # not a record


def test_a_timestamp_beyond_the_years_datetime_holds_is_poison_on_both_paths():
    parsed = fastavro.parse_schema({"type": "record", "name": "T", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]})
    for millis in (2**62, 300_000_000_000_000):  # past timedelta's range; past year 9999
        data = HEADER + zigzag(millis)
        with pytest.raises(PoisonMessage, match="OverflowError"):
            decode_compiled(data, SCHEMA_ID, compile_reader(parsed))
        with pytest.raises(PoisonMessage, match="OverflowError"):
            decode(data, lambda _id: parsed)
