"""Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

Owns encoding and decoding of single records, and whether a writer schema reads alike a reader
schema (`reads_alike`: decoding may then skip schema resolution); knows nothing of registries
(the caller passes a `resolve_schema(id)` function) nor of the domain. Unions of records travel as
`(full_name, dict)` tuples both ways, e.g. `("dbaas.v1.CreateService", {...})`; `timestamp-millis` as aware datetimes.
Imports fastavro, `schemas.errors`, `schemas.reader` and `schemas.writer` only.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from schemas.errors import EncodeError, PoisonMessage
from schemas.reader import Reader
from schemas.writer import Unwritten, Writer

MAGIC_BYTE = 0
MAX_DETAIL = 300  # characters of a decoding error kept in a poison message's reason
_HEADER = struct.Struct(">bI")

ParsedSchema = Any  # what fastavro.parse_schema returns
SchemaResolver = Callable[[int], ParsedSchema]

# What fastavro (or `schemas.reader`) raises on a body that does not match its schema.
_DECODE_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    UnicodeDecodeError,
    struct.error,
    OverflowError,  # a timestamp-millis beyond datetime's years 1-9999
    SchemaResolutionError,
)


def encode(schema_id: int, parsed_schema: ParsedSchema, record: Mapping[str, Any]) -> bytes:
    """Frame `record` written with `parsed_schema`, registered as `schema_id`."""
    if not 0 <= schema_id <= 0xFFFFFFFF:
        raise EncodeError(f"schema id {schema_id} does not fit in 4 bytes")
    out = io.BytesIO()
    out.write(_HEADER.pack(MAGIC_BYTE, schema_id))
    try:
        schemaless_writer(out, parsed_schema, record)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise EncodeError(f"record does not fit schema id {schema_id}: {exc}") from exc
    return out.getvalue()


# What the code `schemas.writer` compiles raises on a record it leaves to fastavro.
_UNWRITTEN = (Unwritten, KeyError, ValueError, TypeError, OverflowError, struct.error)


def encode_compiled(schema_id: int, parsed_schema: ParsedSchema, write: Writer, record: Mapping[str, Any]) -> bytes:
    """`encode`, through `write`, the function `schemas.writer.compile_writer` wrote for
    `parsed_schema`: the same bytes. A record it does not write (a value of another type than the
    one it expects, a field left out for its default) is written by fastavro, or refused with
    fastavro's reason (EncodeError)."""
    parts = [_HEADER.pack(MAGIC_BYTE, schema_id)]
    try:
        write(record, parts.append)
    except _UNWRITTEN:
        return encode(schema_id, parsed_schema, record)
    return b"".join(parts)


def encode_object(schema_id: int, write: Writer, obj: Any, otherwise: Callable[[Any], bytes]) -> bytes:
    """`obj` framed with `schema_id`, written by `write`, code `schemas.writer.compile_writer`
    wrote for instances of the schema's record classes; an object it does not write (another
    class, a value of another type than the one it expects, a field its `__dict__` lacks) is
    encoded by `otherwise(obj)`, the caller's way through a record dict, which writes it the same
    way or says why it does not fit."""
    parts = [_HEADER.pack(MAGIC_BYTE, schema_id)]
    try:
        write(obj, parts.append)
    except _UNWRITTEN:
        return otherwise(obj)
    return b"".join(parts)


def decode(
    data: bytes, resolve_schema: SchemaResolver, reader_schema: ParsedSchema | None = None
) -> dict[str, Any]:
    """Decode one framed record with the writer schema `resolve_schema(id)`.

    `resolve_schema` raises LookupError (or returns None) for an unknown id; any other exception it
    raises (a registry that is down) propagates unchanged, since retrying may help. Pass
    `reader_schema` to read old records as the current schema (Avro schema resolution).
    Raises PoisonMessage on a wrong magic byte, truncated data, unknown id or an undecodable body.
    """
    if len(data) < _HEADER.size:
        raise PoisonMessage(
            f"truncated message: {len(data)} byte(s), the Confluent wire format needs "
            f"at least {_HEADER.size} (magic byte + 4-byte schema id)"
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise PoisonMessage(f"magic byte is {magic}, expected {MAGIC_BYTE}: not Confluent wire format")
    try:
        writer_schema = resolve_schema(schema_id)
    except LookupError:
        writer_schema = None
    if writer_schema is None:
        raise PoisonMessage(f"unknown schema id {schema_id}: the registry does not know it", schema_id)
    body = io.BytesIO(data)
    body.seek(_HEADER.size)
    try:
        record = schemaless_reader(
            body, writer_schema, reader_schema, return_record_name=True, return_record_name_override=True
        )
    except _DECODE_ERRORS as exc:
        detail = str(exc)  # fastavro's resolution errors print both schemas whole: keep the start
        detail = detail if len(detail) <= MAX_DETAIL else f"{detail[:MAX_DETAIL]}…"
        raise PoisonMessage(
            f"Avro body does not decode with schema id {schema_id}: {type(exc).__name__}: {detail}", schema_id
        ) from exc
    trailing = len(data) - body.tell()
    if trailing:
        raise PoisonMessage(
            f"{trailing} byte(s) left after the record: the body was not written with schema id {schema_id}",
            schema_id,
        )
    if not isinstance(record, dict):
        raise PoisonMessage(f"schema id {schema_id} is not a record schema", schema_id)
    return record


def decode_compiled(data: bytes, schema_id: int, read: Reader) -> dict[str, Any]:
    """Decode one framed record of writer schema `schema_id` with `read`, the function
    `schemas.reader.compile_reader` wrote for that schema (no schema resolution): what `decode`
    returns for the same bytes, PoisonMessage included. The caller has checked the header."""
    try:
        record, end = read(data, _HEADER.size)
    except _DECODE_ERRORS as exc:
        raise PoisonMessage(
            f"Avro body does not decode with schema id {schema_id}: {type(exc).__name__}: {str(exc)[:MAX_DETAIL]}",
            schema_id,
        ) from exc
    if end > len(data):  # a string, bytes or fixed ran past the end: `read` cut it short
        raise PoisonMessage(
            f"Avro body does not decode with schema id {schema_id}: EOFError: the body ends "
            f"{end - len(data)} byte(s) before its record does", schema_id)
    if end != len(data):
        raise PoisonMessage(
            f"{len(data) - end} byte(s) left after the record: the body was not written with schema id {schema_id}",
            schema_id,
        )
    return record  # type: ignore[no-any-return]


def reads_alike(writer: Any, reader: Any) -> bool:
    """Whether records written with the parsed schema `writer` decode, without resolution, to what
    resolving them into the parsed schema `reader` gives: the same primitive and logical types,
    named types with the same names and fields, and every branch of a writer union alike the reader
    branch of its name (resolution picks that one, by name, and reports that name)."""
    return _alike(writer, reader, (writer.get("__named_schemas", {}), reader.get("__named_schemas", {})), set())


def _alike(w: Any, r: Any, named: tuple[dict[str, Any], dict[str, Any]], seen: set[str]) -> bool:
    w = named[0].get(w, w) if isinstance(w, str) else w  # a reference to a named type: its definition
    r = named[1].get(r, r) if isinstance(r, str) else r
    if isinstance(w, list) or isinstance(r, list):  # unions
        return (isinstance(w, list) and isinstance(r, list)
                and all(any(_alike(branch, other, named, seen) for other in r) for branch in w))
    if not (isinstance(w, dict) and isinstance(r, dict)):  # primitives
        return bool(w == r)
    if (w.get("type"), w.get("name"), w.get("logicalType")) != (r.get("type"), r.get("name"), r.get("logicalType")):
        return False
    if w["type"] == "record":
        if w["name"] in seen:  # compared already, or being compared (a recursive type)
            return True
        seen.add(w["name"])
        wf, rf = ({f["name"]: f["type"] for f in s["fields"]} for s in (w, r))
        return wf.keys() == rf.keys() and all(_alike(wf[name], rf[name], named, seen) for name in wf)
    if w["type"] in ("array", "map"):
        part = "items" if w["type"] == "array" else "values"
        return _alike(w[part], r[part], named, seen)
    return _attributes(w) == _attributes(r)  # enums, fixed, logical types: every attribute counts


def _attributes(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("doc", "aliases")}
