"""The compiled Avro reader gives what fastavro gives, on every schema of the package and on the
corners of Avro binary (blocks with sizes, unions of several records, named references, recursion);
bytes that do not fit are poison, never a different record."""

from __future__ import annotations

import random
import struct

import fastavro
import pytest

import schemas
from schemas.codec import decode, decode_compiled
from schemas.errors import PoisonMessage
from schemas.reader import compile_reader
from tests.unit.domain.avro_samples import CORNER, CORNERS, fastavro_read, same, samples, written, zigzag

SCHEMA_ID = 7
HEADER = struct.pack(">bI", 0, SCHEMA_ID)


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


@pytest.mark.parametrize("many", [("test.v1.Other", {"n": 3}), ("test.v1.Leaf", {"v": "l"}), "RED", "text", None])
def test_the_corners_of_avro_binary_read_as_fastavro_reads_them(many):
    body = written(CORNERS, {**CORNER, "many": many})
    value, end = compile_reader(CORNERS)(body, 0)
    assert end == len(body)
    assert same(value, fastavro_read(CORNERS, body))
    assert value["at"] == CORNER["at"] and value["one"] == {"v": "leaf"}  # one record: no name


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
