"""Avro binary bodies read by code written for their writer schema.

`compile_reader(parsed_schema)` writes Python source with one function per named record of the
schema (fields read in order, primitives inline, straight from the bytes) and compiles it once;
`schemas.registry.Serde` keeps one per writer schema id and uses it where no schema resolution is
needed. It returns what `fastavro.schemaless_reader(..., return_record_name=True,
return_record_name_override=True)` returns for the same bytes — unions holding one record give the
value alone, others `(full_name, value)` for records and named references; `timestamp-millis` an
aware UTC datetime — in about half the time, since nothing is looked up per field while reading.

A schema using a type this module does not write code for (logical types other than
`timestamp-millis`) gets `None`: the caller reads it with fastavro. Bytes that do not fit the
schema raise what `schemas.codec` maps to a poison message (IndexError, struct.error,
UnicodeDecodeError, ValueError, OverflowError), except one: a string, bytes or fixed running past
the end is cut short by slicing, unchecked, and the position returned then lies past the end; the
caller checks it once (`schemas.codec.decode_compiled` does). Equivalence with fastavro is tested
on every `.avsc` of the package.
Imports nothing of the project.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable
from typing import Any

Reader = Callable[[bytes, int], tuple[Any, int]]  # (data, position) -> (value, position after it: may pass the end)

PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class Unsupported(Exception):
    """The schema holds a type the generated code does not read."""


def _long(b: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint of more than one byte starting at ``p``."""
    c = b[p]
    n = c & 0x7F
    shift = 7
    p += 1
    while c & 0x80:
        c = b[p]
        n |= (c & 0x7F) << shift
        shift += 7
        p += 1
    if n >> 64:
        raise ValueError(f"a varint of {shift // 7} bytes does not fit Avro's 64-bit long")
    return (n >> 1) ^ -(n & 1), p


def _length(b: bytes, p: int) -> tuple[int, int]:
    """The length of a string or bytes starting at ``p``, other than one non-negative byte."""
    n, p = _long(b, p)
    if n < 0:
        raise ValueError(f"a length of {n}")
    return n, p


def compile_reader(parsed: Any) -> Reader | None:
    """A function reading a body written with the parsed (fastavro.parse_schema) record schema
    ``parsed``, or None when the schema holds a type this module leaves to fastavro."""
    if not (isinstance(parsed, dict) and parsed.get("type") == "record"):
        return None
    try:
        return _Writer(parsed.get("__named_schemas", {})).compile(parsed)
    except Unsupported:
        return None


class _Writer:
    def __init__(self, named: dict[str, Any]):
        self.named = named
        self.functions: dict[str, str] = {}  # record full name -> its function's name
        self.sources: list[str] = []
        self.constants: dict[str, Any] = {"_long": _long, "_length": _length,
                                          "_EPOCH": _EPOCH, "_ms": datetime.timedelta,
                                          "_float": struct.Struct("<f").unpack_from,
                                          "_double": struct.Struct("<d").unpack_from}
        self.tables: dict[str, list[str]] = {}  # union dispatch tuple -> its branch functions
        self.counter = 0

    def compile(self, record: dict[str, Any]) -> Reader:
        top = self.record_function(record)
        namespace = dict(self.constants)
        exec(compile("\n\n".join(self.sources), f"<avro reader {record['name']}>", "exec"), namespace)  # noqa: S102
        for table, names in self.tables.items():
            namespace[table] = tuple(namespace[name] for name in names)
        return namespace[top]  # type: ignore[no-any-return]

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def record_function(self, record: dict[str, Any]) -> str:
        name = record["name"]
        if name in self.functions:
            return self.functions[name]
        function = self.functions[name] = self.fresh("read_record_")  # before the body: recursion
        body: list[str] = []
        values = []
        for field in record["fields"]:
            target = self.fresh("f")
            self.emit(field["type"], target, body, 1)
            values.append(f"{field['name']!r}: {target}")
        lines = [f"def {function}(b, p):", *body,
                 f"    return {{{', '.join(values)}}}, p"]
        self.sources.append("\n".join(lines))
        return function

    def emit(self, schema: Any, target: str, out: list[str], depth: int) -> None:
        """Lines reading one value of ``schema`` at ``p`` into ``target``, advancing ``p``."""
        pad = "    " * depth
        if isinstance(schema, list):
            self.union(schema, target, out, depth)
            return
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                self.primitive(schema, target, out, pad)
                return
            if schema not in self.named:
                raise Unsupported(f"unknown named type {schema}")
            schema = self.named[schema]
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            if (logical, kind) != ("timestamp-millis", "long"):
                raise Unsupported(f"logical type {logical} on {kind}")
            self.primitive("long", target, out, pad)
            out.append(f"{pad}{target} = _EPOCH + _ms(0, 0, 0, {target})")  # milliseconds
        elif kind in PRIMITIVES:
            self.primitive(kind, target, out, pad)
        elif kind == "record":
            out.append(f"{pad}{target}, p = {self.record_function(schema)}(b, p)")
        elif kind == "enum":
            symbols = self.fresh("symbols")
            self.constants[symbols] = tuple(schema["symbols"])
            index = self.fresh("i")
            self.primitive("long", index, out, pad)
            out.append(f"{pad}if {index} < 0: raise IndexError(f'enum index {{{index}}}')")
            out.append(f"{pad}{target} = {symbols}[{index}]")
        elif kind == "fixed":
            out.append(f"{pad}e = p + {int(schema['size'])}; {target} = b[p:e]; p = e")
        elif kind in ("array", "map"):
            self.blocks(schema, target, out, depth)
        else:
            raise Unsupported(f"type {kind}")

    def primitive(self, kind: str, target: str, out: list[str], pad: str) -> None:
        if kind == "null":
            out.append(f"{pad}{target} = None")
        elif kind == "boolean":
            out.append(f"{pad}{target} = b[p] != 0; p += 1")
        elif kind in ("int", "long"):
            out.append(f"{pad}{target} = b[p]")
            out.append(f"{pad}if {target} < 128: {target} = ({target} >> 1) ^ -({target} & 1); p += 1")
            out.append(f"{pad}else: {target}, p = _long(b, p)")
        elif kind in ("float", "double"):
            out.append(f"{pad}{target}, = _{kind}(b, p); p += {4 if kind == 'float' else 8}")
        else:  # string, bytes
            n = self.fresh("n")
            out.append(f"{pad}{n} = b[p]")  # one byte, even: a length below 64
            out.append(f"{pad}if {n} < 128 and not {n} & 1: {n} >>= 1; p += 1")
            out.append(f"{pad}else: {n}, p = _length(b, p)")
            out.append(f"{pad}e = p + {n}; {target} = b[p:e]{'.decode()' if kind == 'string' else ''}; p = e")

    def union(self, branches: list[Any], target: str, out: list[str], depth: int) -> None:
        pad = "    " * depth
        index = self.fresh("u")
        self.primitive("long", index, out, pad)
        # fastavro's return_record_name(_override): a union with one record (or named reference)
        # gives its value alone; otherwise a record or a named reference comes as (full name, value)
        records = sum(1 for s in branches if _kind(s) == "record" or _kind(s) not in _AVRO_KINDS)
        if len(branches) > _CHAINED:  # a function per branch, picked by index (no chain of tests)
            functions = self.fresh("branches")
            names = []
            for branch in branches:
                names.append(self.fresh("read_branch_"))
                body: list[str] = []
                self.branch(branch, "v", body, 1, records)
                self.sources.append("\n".join([f"def {names[-1]}(b, p):", *body, "    return v, p"]))
            self.constants[functions] = ()  # filled once the functions exist (compile)
            self.tables[functions] = names
            out.append(f"{pad}if {index} < 0: raise IndexError(f'union index {{{index}}}')")
            out.append(f"{pad}{target}, p = {functions}[{index}](b, p)")
            return
        for i, branch in enumerate(branches):
            out.append(f"{pad}{'if' if i == 0 else 'elif'} {index} == {i}:")
            self.branch(branch, target, out, depth + 1, records)
        out.append(f"{pad}else: raise IndexError(f'union index {{{index}}} of {len(branches)} branches')")

    def branch(self, branch: Any, target: str, out: list[str], depth: int, records: int) -> None:
        """One union branch's value; as (full name, value) when the union holds several records."""
        pad = "    " * depth
        self.emit(branch, target, out, depth)
        if records != 1:
            if _kind(branch) == "record":
                out.append(f"{pad}{target} = ({branch['name']!r}, {target})")
            elif _kind(branch) not in _AVRO_KINDS:
                out.append(f"{pad}{target} = ({self.named[branch]['name']!r}, {target})")

    def blocks(self, schema: dict[str, Any], target: str, out: list[str], depth: int) -> None:
        pad, inner = "    " * depth, "    " * (depth + 2)
        count, item = self.fresh("count"), self.fresh("item")
        is_map = schema["type"] == "map"
        out.append(f"{pad}{target} = {{}}" if is_map else f"{pad}{target} = []")
        self.primitive("long", count, out, pad)
        out.append(f"{pad}while {count}:")
        out.append(f"{pad}    if {count} < 0:")
        size = self.fresh("size")
        self.primitive("long", size, out, "    " * (depth + 2))  # the block's size in bytes: unused
        out.append(f"{pad}        {count} = -{count}")
        out.append(f"{pad}    for _ in range({count}):")
        if is_map:
            key = self.fresh("key")
            self.primitive("string", key, out, inner)
            self.emit(schema["values"], item, out, depth + 2)
            out.append(f"{inner}{target}[{key}] = {item}")
        else:
            self.emit(schema["items"], item, out, depth + 2)
            out.append(f"{inner}{target}.append({item})")
        self.primitive("long", count, out, "    " * (depth + 1))


_CHAINED = 4  # unions of up to this many branches test the index in a chain, larger ones index a tuple
_AVRO_KINDS = PRIMITIVES | {"record", "enum", "fixed", "array", "map", "union", "error"}


def _kind(schema: Any) -> str:
    if isinstance(schema, dict):
        return str(schema["type"])
    if isinstance(schema, list):
        return "union"
    return str(schema)
