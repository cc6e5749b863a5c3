"""BACKWARD compatibility of Avro schemas: can a reader on the new schema read data written with the old?

Owns the Avro schema-resolution rules (specification, "Schema Resolution") as a pure function on
JSON schema dicts: records matched by name (or reader alias), reader fields missing from the
writer need a default, primitive promotions, enum symbols, array items, map values, unions, fixed
sizes. Logical types are ignored, as resolution ignores them. Imports nothing of the project.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import SchemaError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# writer type -> reader types that can read it
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_NAMED = frozenset({"record", "error", "enum", "fixed"})

Node = dict[str, Any]


def check_backward(reader_new: Any, writer_old: Any) -> list[str]:
    """Everything that stops `reader_new` from reading data written with `writer_old`; [] = compatible."""
    reader, writer = _normalize(reader_new), _normalize(writer_old)
    return _Checker().compare(reader, writer, _label(reader))


class _Checker:
    def __init__(self) -> None:
        self._seen: set[tuple[int, int]] = set()  # (reader, writer) pairs in progress: recursive types

    def compare(self, r: Node, w: Node, path: str) -> list[str]:
        key = (id(r), id(w))
        if key in self._seen:
            return []
        self._seen.add(key)
        if w["type"] == "union":
            return [e for b in w["branches"] for e in self._readable(r, b, f"{path}.{_label(b)}")]
        if r["type"] == "union":
            return self._readable(r, w, path)
        if w["type"] in PRIMITIVES and r["type"] in PRIMITIVES:
            if r["type"] == w["type"] or r["type"] in PROMOTIONS.get(w["type"], ()):
                return []
            return [f"{path}: writer type {w['type']} cannot be read as {r['type']}"]
        if r["type"] != w["type"]:
            return [f"{path}: writer type {_label(w)} cannot be read as {_label(r)}"]
        match r["type"]:
            case "array":
                return self.compare(r["items"], w["items"], f"{path}[]")
            case "map":
                return self.compare(r["values"], w["values"], f"{path}{{}}")
        if not _same_name(r, w):
            return [
                (
                    f"{path}: writer {w['type']} {_label(w)} cannot be read as {_label(r)}; "
                    f'keep the name or add the alias "{w["name"]}" to the reader'
                )
            ]
        match r["type"]:
            case "record":
                return self._record(r, w, path)
            case "enum":
                removed = [s for s in w["symbols"] if s not in r["symbols"]]
                if removed and r.get("default") is None:
                    return [
                        (
                            f"{path}: enum symbol(s) {', '.join(removed)} removed and the reader enum "
                            f"{_label(r)} has no default; keep them or add a default"
                        )
                    ]
                return []
            case _:  # fixed
                if r["size"] != w["size"]:
                    return [f"{path}: fixed {_label(r)} size changed from {w['size']} to {r['size']}"]
                return []

    def _record(self, r: Node, w: Node, path: str) -> list[str]:
        writer_fields = {f["name"]: f for f in w["fields"]}
        errors: list[str] = []
        for field in r["fields"]:
            names = [field["name"], *field["aliases"]]
            found = next((writer_fields[n] for n in names if n in writer_fields), None)
            if found is not None:
                errors += self.compare(field["type"], found["type"], f"{path}.{field['name']}")
            elif not field["has_default"]:
                errors.append(f"{path}.{field['name']}: field added without default")
        return errors

    def _readable(self, r: Node, w: Node, path: str) -> list[str]:
        """`w` (not a union) against reader `r`: the first reader branch of the same kind decides."""
        if r["type"] != "union":
            return self.compare(r, w, path)
        for branch in r["branches"]:
            if branch["type"] == w["type"] and (w["type"] not in _NAMED or _same_name(branch, w)):
                return self.compare(branch, w, path)
        for branch in r["branches"]:
            if branch["type"] in PROMOTIONS.get(w["type"], ()):
                return []
        labels = ", ".join(_label(b) for b in r["branches"])
        return [f"{path}: no branch of the reader union [{labels}] can read writer type {_label(w)}"]


def _same_name(r: Node, w: Node) -> bool:
    return _short(r["name"]) == _short(w["name"]) or w["name"] in r["aliases"]


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _label(node: Node) -> str:
    return _short(node["name"]) if node["type"] in _NAMED else node["type"]


def _normalize(schema: Any) -> Node:
    """JSON schema -> graph of nodes where every named reference is the defining node itself."""
    named: dict[str, Node] = {}

    def full(name: str, namespace: str | None) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def walk(s: Any, ns: str | None) -> Node:
        if isinstance(s, str):
            if s in PRIMITIVES:
                return {"type": s}
            ref = full(s, ns)
            if ref in named:
                return named[ref]
            if s in named:
                return named[s]
            raise SchemaError(f"unknown type name {s!r}")
        if isinstance(s, list):
            return {"type": "union", "branches": [walk(b, ns) for b in s]}
        if not isinstance(s, dict) or "type" not in s:
            raise SchemaError(f"not an Avro schema: {s!r}")
        kind = s["type"]
        if kind in _NAMED:
            name = s["name"]
            own_ns = name.rsplit(".", 1)[0] if "." in name else s.get("namespace", ns)
            node: Node = {
                "type": "record" if kind == "error" else kind,
                "name": full(name, own_ns),
                "aliases": {full(a, own_ns) for a in s.get("aliases", [])},
            }
            named[node["name"]] = node  # before the fields: records may refer to themselves
            if kind == "enum":
                node.update(symbols=list(s["symbols"]), default=s.get("default"))
            elif kind == "fixed":
                node["size"] = s["size"]
            else:
                node["fields"] = [
                    {
                        "name": f["name"],
                        "aliases": list(f.get("aliases", [])),
                        "has_default": "default" in f,
                        "type": walk(f["type"], own_ns),
                    }
                    for f in s["fields"]
                ]
            return node
        if kind == "array":
            return {"type": "array", "items": walk(s["items"], ns)}
        if kind == "map":
            return {"type": "map", "values": walk(s["values"], ns)}
        return walk(kind, ns)  # {"type": "long", "logicalType": ...} or {"type": {...}}

    return walk(schema, None)
