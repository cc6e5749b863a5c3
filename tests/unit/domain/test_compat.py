"""check_backward: Avro schema resolution rules, each case with the reason it holds."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas import load_schema
from schemas.compat import check_backward


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def rec(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "E", "symbols": list(symbols), **extra}


A = f("a", "string")
LINKED = rec(f("value", "int"), f("next", ["null", "R"], default=None))

COMPATIBLE = [
    ("an unchanged schema", rec(A, f("b", "int")), rec(A, f("b", "int"))),
    ("a new field with a default", rec(A, f("b", "int", default=0)), rec(A)),
    ("a new nullable field with a null default", rec(A, f("b", ["null", "string"], default=None)), rec(A)),
    ("a field the reader no longer reads", rec(A), rec(A, f("b", "int"))),
    *[
        (f"{w} promotes to {r}", rec(f("x", r)), rec(f("x", w)))
        for w, r in [
            ("int", "long"),
            ("int", "float"),
            ("int", "double"),
            ("long", "float"),
            ("long", "double"),
            ("float", "double"),
            ("string", "bytes"),
            ("bytes", "string"),
        ]
    ],
    ("a new enum symbol", rec(f("e", enum("A", "B", "C"))), rec(f("e", enum("A", "B")))),
    (
        "a removed enum symbol falls back to the reader's default",
        rec(f("e", enum("A", "UNKNOWN", default="UNKNOWN"))),
        rec(f("e", enum("A", "B"))),
    ),
    ("a new union branch", rec(f("u", ["null", "string", "int"])), rec(f("u", ["null", "string"]))),
    (
        "a plain field may become nullable",
        rec(f("u", ["null", "string"], default=None)),
        rec(f("u", "string")),
    ),
    ("a union branch may promote", rec(f("u", ["null", "long"])), rec(f("u", ["null", "int"]))),
    (
        "a new record branch in a union of records",
        rec(f("p", [rec(A, name="X"), rec(A, name="Y")])),
        rec(f("p", [rec(A, name="X")])),
    ),
    (
        "array items promote",
        rec(f("xs", {"type": "array", "items": "long"})),
        rec(f("xs", {"type": "array", "items": "int"})),
    ),
    (
        "map values promote",
        rec(f("m", {"type": "map", "values": "double"})),
        rec(f("m", {"type": "map", "values": "float"})),
    ),
    (
        "a renamed record keeps its old name as an alias",
        rec(A, name="New", aliases=["Old"]),
        rec(A, name="Old"),
    ),
    ("a renamed field keeps its old name as an alias", rec(f("b", "string", aliases=["a"])), rec(A)),
    (
        "fixed of the same size",
        rec(f("h", {"type": "fixed", "name": "H", "size": 16})),
        rec(f("h", {"type": "fixed", "name": "H", "size": 16})),
    ),
    (
        "logical types do not take part",
        rec(f("t", {"type": "long", "logicalType": "timestamp-millis"})),
        rec(f("t", "long")),
    ),
    ("a recursive record ends", LINKED, copy.deepcopy(LINKED)),
]


@pytest.mark.parametrize("reader, writer", [c[1:] for c in COMPATIBLE], ids=[c[0] for c in COMPATIBLE])
def test_compatible(reader: dict, writer: dict) -> None:
    assert check_backward(reader, writer) == []


KEEP_OLD_NAME = 'keep the name or add the alias "t.Old" to the reader'
INCOMPATIBLE = [
    ("a new field without a default", rec(A, f("b", "int")), rec(A), ["R.b: field added without default"]),
    (
        "a narrowed number",
        rec(f("a", "int")),
        rec(f("a", "long")),
        ["R.a: writer type long cannot be read as int"],
    ),
    (
        "a changed primitive",
        rec(f("a", "boolean")),
        rec(A),
        ["R.a: writer type string cannot be read as boolean"],
    ),
    (
        "a record became a string",
        rec(f("a", "string")),
        rec(f("a", rec(A, name="S"))),
        ["R.a: writer type S cannot be read as string"],
    ),
    (
        "a removed enum symbol without a default",
        rec(f("e", enum("A"))),
        rec(f("e", enum("A", "B", "C"))),
        ["R.e: enum symbol(s) B, C removed and the reader enum E has no default; keep them or add a default"],
    ),
    (
        "a removed union branch",
        rec(f("u", ["null", "string"])),
        rec(f("u", ["null", "string", "int"])),
        ["R.u.int: no branch of the reader union [null, string] can read writer type int"],
    ),
    (
        "a nullable field made required",
        rec(f("u", "string")),
        rec(f("u", ["null", "string"])),
        ["R.u.null: writer type null cannot be read as string"],
    ),
    (
        "a renamed record without an alias",
        rec(A, name="New"),
        rec(A, name="Old"),
        [f"New: writer record Old cannot be read as New; {KEEP_OLD_NAME}"],
    ),
    (
        "a resized fixed",
        rec(f("h", {"type": "fixed", "name": "H", "size": 32})),
        rec(f("h", {"type": "fixed", "name": "H", "size": 16})),
        ["R.h: fixed H size changed from 16 to 32"],
    ),
    (
        "array items changed",
        rec(f("xs", {"type": "array", "items": "int"})),
        rec(f("xs", {"type": "array", "items": "string"})),
        ["R.xs[]: writer type string cannot be read as int"],
    ),
    (
        "map values narrowed",
        rec(f("m", {"type": "map", "values": "float"})),
        rec(f("m", {"type": "map", "values": "double"})),
        ["R.m{}: writer type double cannot be read as float"],
    ),
    (
        "a record branch of a union changed incompatibly, reported where it breaks",
        rec(f("p", [rec(A, f("b", "int"), name="X")])),
        rec(f("p", [rec(A, name="X")])),
        ["R.p.X.b: field added without default"],
    ),
    (
        "every problem is reported",
        rec(f("a", "int"), f("b", "int")),
        rec(A),
        ["R.a: writer type string cannot be read as int", "R.b: field added without default"],
    ),
]


@pytest.mark.parametrize(
    "reader, writer, errors", [c[1:] for c in INCOMPATIBLE], ids=[c[0] for c in INCOMPATIBLE]
)
def test_incompatible(reader: dict, writer: dict, errors: list[str]) -> None:
    assert check_backward(reader, writer) == errors


def payload_branch(schema: dict, name: str) -> dict:
    [payload] = [field for field in schema["fields"] if field["name"] == "payload"]
    return next(branch for branch in payload["type"] if branch["name"] == name)


def test_the_event_envelope_evolves_by_new_branches_and_defaulted_fields() -> None:
    old = load_schema("event_envelope")
    new = load_schema("event_envelope")
    [payload] = [field for field in new["fields"] if field["name"] == "payload"]
    assert "ReplicaPromoted" not in {branch["name"] for branch in payload["type"]}  # a branch that is new
    payload["type"].append(rec(f("service_id", "string"), name="ReplicaPromoted"))
    payload_branch(new, "ServiceRequested")["fields"].append(f("zone", ["null", "string"], default=None))

    assert check_backward(new, old) == []


def test_the_event_envelope_breaks_on_a_field_without_default_and_a_dropped_branch() -> None:
    old = load_schema("event_envelope")
    new = load_schema("event_envelope")
    payload_branch(new, "ServiceRequested")["fields"].append(f("zone", "string"))
    [payload] = [field for field in new["fields"] if field["name"] == "payload"]
    payload["type"] = [b for b in payload["type"] if b["name"] != "ServiceDeletionRequested"]
    remaining = [branch["name"] for branch in payload["type"]]

    assert {"OrganizationCreated", "ServiceRequested", "OperationStarted", "ServiceDeleted"} <= set(remaining)
    assert check_backward(new, old) == [
        "EventEnvelope.payload.ServiceRequested.zone: field added without default",
        (
            "EventEnvelope.payload.ServiceDeletionRequested: no branch of the reader union "
            f"[{', '.join(remaining)}] can read writer type ServiceDeletionRequested"
        ),
    ]
