"""Avro fixtures shared by the tests of the compiled reader and writer: fastavro's own reading and
writing, records generated for a schema, and a schema holding the corners of Avro binary."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from typing import Any

import fastavro
from fastavro.utils import generate_many


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


def zigzag(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)
