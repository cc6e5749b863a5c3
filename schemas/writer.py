"""Avro binary bodies written by code compiled for their schema.

`compile_writer(parsed_schema)` writes Python source with one function per named record of the
schema (fields written in order, primitives inline, type checks exact) and compiles it once;
`schemas.registry.Serde` keeps one for its schema and encodes through it. The functions hand a
record's parts (bytes) to an `add` function, a list's `append`, and the caller joins them once: a
`bytearray` grown part by part is reallocated as it grows. For every record it
writes, the bytes are those `fastavro.schemaless_writer` writes for the same record, in about a
third of the time. It writes only what it can place without fastavro's validation: a value of
another type than the exact one it expects (a `bytearray`, a naive datetime, a
bool for a long), a field left out for its default, or a union value that fits several branches
raises instead (`Unwritten`, or the KeyError, TypeError, OverflowError… of the attempt), and the
caller writes that record with fastavro (`schemas.codec.encode_compiled`), which writes it or says
why it does not fit. Equivalence with fastavro is tested on every `.avsc` of the package.

The bytes of the strings and timestamps written last are kept (`_STRINGS`, `_STAMPS`, a few
thousand, by value): most recur within a message or from one to the next (an organization's id,
kinds, engines, a command's ids in each of its events), and are then appended as they are.

A schema using a type this module does not write code for (logical types other than
`timestamp-millis`) gets `None`: the caller writes it with fastavro.

Given `classes` (record full name -> class), the code writes objects instead of record dicts:
each record's value is an instance of exactly its class, its fields read from the instance's
`__dict__` by name, and a union of several records places an instance by its class. It is for
frozen dataclasses whose fields are the record's fields (the domain's events and their envelope):
the bytes are those of the record dict the caller would have built from the object, and an object
it does not write (another class, a field missing from its `__dict__`) raises, for the caller to
build that record dict and encode it (`schemas.codec.encode_object`). Imports nothing of the project.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import Any

Writer = Callable[[Any, Callable[[bytes], None]], None]  # (record, add): adds the parts of the record's body, in order

PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_INT = (-(1 << 31), (1 << 31) - 1)
_LONG = (-(1 << 63), (1 << 63) - 1)


class Unsupported(Exception):
    """The schema holds a type the generated code does not write."""


class Unwritten(Exception):
    """A value the generated code leaves to fastavro."""


def _varint(n: int) -> bytes:
    """A non-negative (zig-zagged) number as a varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _long(x: int) -> bytes:
    """A long outside -64..63 (one byte), zig-zagged."""
    if not _LONG[0] <= x <= _LONG[1]:
        raise Unwritten(f"{x} does not fit a long")
    return _varint((x << 1) ^ (x >> 63))


def _int(x: int) -> bytes:
    if not _INT[0] <= x <= _INT[1]:
        raise Unwritten(f"{x} does not fit an int")
    return _varint((x << 1) ^ (x >> 63))


# The bytes (length and UTF-8) of recently written strings: an organization's id, the kinds,
# engines, PoPs and sizes recur in every event, a command's ids in each of its events. Kept by
# value: a str subclass's value (a StrEnum) is written as that value, so an equal str's bytes are
# its bytes; a value of another type is equal to no str kept, and `_string` refuses it.
_STRINGS: dict[str, bytes] = {}
_STRINGS_KEPT = 4096


def _string(x: str) -> bytes:
    """A string's bytes as Avro writes them (kept in `_STRINGS`); another type is unwritten."""
    if type(x) is str:
        data = x.encode()
    elif isinstance(x, str):
        data = str.encode(x)
    else:
        raise Unwritten("not a str")
    n = len(data)
    written = bytes((n << 1,)) + data if n < 64 else _length(n) + data
    if len(_STRINGS) >= _STRINGS_KEPT:
        _STRINGS.clear()
    _STRINGS[x] = written
    return written


# The bytes of recently written aware datetimes (an event's time is its command's: a command's
# events share it), so each is converted once. Equal datetimes are the same instant, whatever their
# zone, so the same bytes; a naive one is never kept (it equals no aware one).
_STAMPS: dict[datetime.datetime, bytes] = {}
_STAMPS_KEPT = 256


def _stamp(x: datetime.datetime) -> bytes:
    """An aware datetime as a timestamp-millis long (kept in `_STAMPS`); a naive one is unwritten."""
    if x.tzinfo is None:
        raise Unwritten("not an aware datetime")
    d = x - _EPOCH
    written = _long((d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000)
    if len(_STAMPS) >= _STAMPS_KEPT:
        _STAMPS.clear()
    _STAMPS[x] = written
    return written


_BYTE = tuple(bytes((i,)) for i in range(256))  # a byte's value -> that one byte


def _length(n: int) -> bytes:
    """A length of 64 or more."""
    return _varint(n << 1)


def compile_writer(parsed: Any, classes: Mapping[str, type] | None = None) -> Writer | None:
    """A function writing records of the parsed (fastavro.parse_schema) record schema ``parsed``,
    or None when the schema holds a type this module leaves to fastavro. With ``classes`` (record
    full name -> class, one for every record of the schema, else None) it writes instances of those
    classes instead of record dicts."""
    if not (isinstance(parsed, dict) and parsed.get("type") == "record"):
        return None
    try:
        return _Coder(parsed.get("__named_schemas", {}), classes).compile(parsed)
    except Unsupported:
        return None


class _Coder:
    def __init__(self, named: dict[str, Any], classes: Mapping[str, type] | None = None):
        self.named = named
        self.classes = classes
        self.functions: dict[str, str] = {}  # record full name -> its function's name
        self.sources: list[str] = []
        self.constants: dict[str, Any] = {"_long": _long, "_int": _int, "_length": _length,
                                          "_stamps": _STAMPS, "_stamp": _stamp,
                                          "_strings": _STRINGS, "_string": _string, "_byte": _BYTE,
                                          "_Unwritten": Unwritten, "_EPOCH": _EPOCH,
                                          "_datetime": datetime.datetime, "_str": str.__str__,
                                          "_float": struct.Struct("<f").pack,
                                          "_double": struct.Struct("<d").pack}
        self.tables: dict[str, dict[Any, str]] = {}  # union dispatch dict -> {type or name: branch function}
        self.counter = 0

    def compile(self, record: dict[str, Any]) -> Writer:
        top = self.record_function(record)
        namespace = dict(self.constants)
        exec(compile("\n\n".join(self.sources), f"<avro writer {record['name']}>", "exec"), namespace)  # noqa: S102
        for table, functions in self.tables.items():
            namespace[table].update({key: namespace[name] for key, name in functions.items()})
        return namespace[top]  # type: ignore[no-any-return]

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def record_function(self, record: dict[str, Any]) -> str:
        name = record["name"]
        if name in self.functions:
            return self.functions[name]
        function = self.functions[name] = self.fresh("write_record_")  # before the body: recursion
        if self.classes is None:
            body = ["    if type(v) is not dict: raise _Unwritten('not a dict')"]
        else:
            cls = self.record_class(record)
            self.constants[f"{function}_class"] = cls
            body = [f"    if type(v) is not {function}_class: raise _Unwritten('not a {cls.__name__}')",
                    "    v = v.__dict__"]  # a field it lacks: KeyError, the caller's record dict's turn
        for field in record["fields"]:
            value = self.fresh("x")
            body.append(f"    {value} = v[{field['name']!r}]")  # a field left out: KeyError, fastavro's turn
            self.emit(field["type"], value, body, 1)
        self.sources.append("\n".join([f"def {function}(v, a):", *body]))
        return function

    def record_class(self, record: dict[str, Any]) -> type:
        assert self.classes is not None
        cls = self.classes.get(record["name"])
        if cls is None:
            raise Unsupported(f"no class for record {record['name']}")
        return cls

    def holds(self, schema: Any) -> frozenset[type]:
        """`_holds`, where a record is held by its class when the code writes objects."""
        if self.classes is not None and isinstance(schema, dict) and schema["type"] == "record":
            return frozenset((self.record_class(schema),))
        return _holds(schema)

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            if schema not in self.named:
                raise Unsupported(f"unknown named type {schema}")
            return self.named[schema]
        return schema

    def emit(self, schema: Any, x: str, out: list[str], depth: int) -> None:
        """Lines appending the value ``x`` of ``schema`` to ``o``."""
        pad = "    " * depth
        if isinstance(schema, list):
            self.union(schema, x, out, depth)
            return
        schema = self.resolve(schema)
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if logical is not None:
            if (logical, kind) != ("timestamp-millis", "long"):
                raise Unsupported(f"logical type {logical} on {kind}")
            out.append(f"{pad}if type({x}) is _datetime: a(_stamps.get({x}) or _stamp({x}))")
            out.append(f"{pad}else:")
            out.append(f"{pad}    if type({x}) is not int: raise _Unwritten('not an aware datetime')")
            self.integer("_long", x, out, pad + "    ", checked=True)
        elif kind in PRIMITIVES:
            self.primitive(kind, x, out, pad)
        elif kind == "record":
            out.append(f"{pad}{self.record_function(schema)}({x}, a)")
        elif kind == "enum":
            symbols = self.fresh("symbols")
            self.constants[symbols] = {symbol: i for i, symbol in enumerate(schema["symbols"])}
            index = self.fresh("i")
            out.append(f"{pad}{index} = {symbols}.get({x} if type({x}) is str else _str({x})) "
                       f"if isinstance({x}, str) else None")  # a StrEnum hashes by its name: its value
            out.append(f"{pad}if {index} is None: raise _Unwritten('not a symbol')")
            self.integer("_long", index, out, pad, checked=True)
        elif kind == "fixed":
            out.append(f"{pad}if type({x}) is not bytes or len({x}) != {int(schema['size'])}: "
                       f"raise _Unwritten('not a fixed')")
            out.append(f"{pad}a({x})")
        elif kind in ("array", "map"):
            self.blocks(schema, x, out, depth)
        else:
            raise Unsupported(f"type {kind}")

    def integer(self, helper: str, x: str, out: list[str], pad: str, checked: bool = False) -> None:
        if not checked:
            out.append(f"{pad}if type({x}) is not int: raise _Unwritten('not an int')")
        out.append(f"{pad}if -64 <= {x} < 64: a(_byte[({x} << 1) ^ ({x} >> 63)])")
        out.append(f"{pad}else: a({helper}({x}))")

    def primitive(self, kind: str, x: str, out: list[str], pad: str) -> None:
        if kind == "null":
            return  # nothing is written, whatever the value (as fastavro does)
        if kind == "boolean":
            out.append(f"{pad}if {x} is True: a(b'\\x01')")
            out.append(f"{pad}elif {x} is False: a(b'\\x00')")
            out.append(f"{pad}else: raise _Unwritten('not a bool')")
        elif kind in ("int", "long"):
            self.integer(f"_{kind}", x, out, pad)
        elif kind in ("float", "double"):  # fastavro writes float(x): ints too
            out.append(f"{pad}if type({x}) is not float and type({x}) is not int: raise _Unwritten('not a number')")
            out.append(f"{pad}a(_{kind}({x}))")
        else:  # string, bytes
            if kind == "string":  # most strings written are written again soon: kept, written once
                out.append(f"{pad}a(_strings.get({x}) or _string({x}))")
                return
            out.append(f"{pad}if type({x}) is not bytes: raise _Unwritten('not bytes')")
            n = self.fresh("n")
            out.append(f"{pad}{n} = len({x})")
            out.append(f"{pad}if {n} < 64: a(_byte[{n} << 1])")
            out.append(f"{pad}else: a(_length({n}))")
            out.append(f"{pad}a({x})")

    def union(self, branches: list[Any], x: str, out: list[str], depth: int) -> None:
        """fastavro writes a (name, value) tuple in the branch of that name, any other value in the
        first branch that validates it. Here a value goes to the one branch that could hold a value
        of its exact Python type; where several could, fastavro writes it (its validation decides)."""
        pad = "    " * depth
        by_type: dict[Any, list[int]] = {}
        by_name: dict[str, int] = {}
        for i, branch in enumerate(branches):
            resolved = self.resolve(branch)
            for python_type in self.holds(resolved):
                by_type.setdefault(python_type, []).append(i)
            if isinstance(resolved, dict) and resolved["type"] in ("record", "enum", "fixed"):
                by_name[resolved["name"]] = i
        other = self.resolve(branches[-1])
        if len(branches) == 2 and self.resolve(branches[0]) == "null" and other != "null":
            # ["null", X], the common optional field: inline (a tuple is a (name, value) pair to fastavro)
            if tuple not in self.holds(other):
                out.append(f"{pad}if {x} is None: a(b'\\x00')")
                out.append(f"{pad}else:")
                out.append(f"{pad}    a(b'\\x02')")
                self.emit(branches[1], x, out, depth + 1)
                return
        functions = {i: self.branch_function(i, branch) for i, branch in enumerate(branches)}
        types, names = self.fresh("by_type"), self.fresh("by_name")
        self.constants[types], self.constants[names] = {}, {}
        self.tables[types] = {t: functions[found[0]] for t, found in by_type.items() if len(found) == 1}
        self.tables[names] = {name: functions[i] for name, i in by_name.items()}
        if self.classes is not None:  # objects: a tuple is a sequence (their record dicts hold it as a list)
            out.append(f"{pad}{types}[type({x})]({x}, a)")
            return
        out.append(f"{pad}if type({x}) is tuple:")
        out.append(f"{pad}    n, {x} = {x}")  # not a pair: ValueError, fastavro's turn
        out.append(f"{pad}    {names}[n]({x}, a)")  # a name not among the named branches: KeyError
        out.append(f"{pad}else: {types}[type({x})]({x}, a)")  # no branch, or several: KeyError

    def branch_function(self, index: int, branch: Any) -> str:
        function = self.fresh("write_branch_")
        body = [f"    a({_varint(index << 1)!r})"]
        self.emit(branch, "v", body, 1)
        self.sources.append("\n".join([f"def {function}(v, a):", *body]))
        return function

    def blocks(self, schema: dict[str, Any], x: str, out: list[str], depth: int) -> None:
        pad, inner = "    " * depth, "    " * (depth + 2)
        count, item = self.fresh("count"), self.fresh("item")
        if schema["type"] == "map":
            out.append(f"{pad}if type({x}) is not dict: raise _Unwritten('not a dict')")
        else:
            out.append(f"{pad}if type({x}) is not list and type({x}) is not tuple: raise _Unwritten('not a list')")
        out.append(f"{pad}if {x}:")
        out.append(f"{pad}    {count} = len({x})")
        self.integer("_long", count, out, pad + "    ", checked=True)
        if schema["type"] == "map":
            key = self.fresh("key")
            out.append(f"{pad}    for {key}, {item} in {x}.items():")
            self.primitive("string", key, out, inner)
            self.emit(schema["values"], item, out, depth + 2)
        else:
            out.append(f"{pad}    for {item} in {x}:")
            self.emit(schema["items"], item, out, depth + 2)
        out.append(f"{pad}a(b'\\x00')")


def _holds(schema: Any) -> frozenset[type]:
    """The exact Python types fastavro's validation accepts for ``schema`` (a resolved branch) among
    those the generated code writes: how a union value is placed."""
    kind = schema if isinstance(schema, str) else schema["type"]
    if not isinstance(schema, str) and schema.get("logicalType") == "timestamp-millis":
        return frozenset((int, datetime.datetime))
    return _HOLDS.get(kind, frozenset())


_HOLDS: dict[str, frozenset[type]] = {
    "null": frozenset((type(None),)),
    "boolean": frozenset((bool,)),
    "int": frozenset((int,)),
    "long": frozenset((int,)),
    "float": frozenset((int, float)),
    "double": frozenset((int, float)),
    "string": frozenset((str,)),
    "enum": frozenset((str,)),
    "bytes": frozenset((bytes,)),
    "fixed": frozenset((bytes,)),
    "array": frozenset((list, tuple, bytes)),  # fastavro's validation takes any sequence but str
    "map": frozenset((dict,)),
    "record": frozenset((dict,)),
}
