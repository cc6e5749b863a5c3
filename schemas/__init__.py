"""Avro contracts of the control plane: the `.avsc` files, the wire codec and the compatibility rules.

Owns one self-contained schema per topic subject (`command_envelope.avsc` for
`dbaas.commands-value`, `event_envelope.avsc` for `dbaas.events-value`), the Confluent wire
format (`schemas.codec`) and the BACKWARD compatibility checker (`schemas.compat`).
Imports nothing of the project; reads its `.avsc` files only when asked, never at import time.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from pathlib import Path
from typing import Any

import fastavro

from schemas.errors import EncodeError, PoisonMessage, SchemaError

SCHEMA_DIR = Path(__file__).parent
NAMESPACE = "dbaas.v1"

# Registry subject -> schema file stem: one subject per topic.
SUBJECTS: dict[str, str] = {
    "dbaas.commands-value": "command_envelope",
    "dbaas.events-value": "event_envelope",
    "dbaas.pop.status-value": "pop_status",
    "dbaas.audit-value": "audit_record",  # every dbaas.audit.{tenant} topic (subject by record name)
    "dbaas.alerts-value": "alert",  # every dbaas.alerts.{tenant} topic
    "dbaas.metrics-value": "service_metrics",  # every dbaas.metrics.{tenant} topic
}


AUDIT_TOPIC_PATTERN = "dbaas.audit.{tenant}"  # one per organization (deploy/topics.yaml)


def audit_topic(tenant: str) -> str:
    return AUDIT_TOPIC_PATTERN.format(tenant=tenant)


ALERTS_TOPIC_PATTERN = "dbaas.alerts.{tenant}"  # one per organization (deploy/topics.yaml)


def alerts_topic(tenant: str) -> str:
    return ALERTS_TOPIC_PATTERN.format(tenant=tenant)


METRICS_TOPIC_PATTERN = "dbaas.metrics.{tenant}"  # one per organization (deploy/topics.yaml)


def metrics_topic(tenant: str) -> str:
    return METRICS_TOPIC_PATTERN.format(tenant=tenant)


def schema_names() -> list[str]:
    """Stems of every `.avsc` file in this package."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc"))


def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (file stem) as a fresh JSON dict: self-contained, ready for fastavro.parse_schema."""
    path = SCHEMA_DIR / f"{name}.avsc"
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(f"no schema named {name!r}; known: {', '.join(schema_names())}") from None
    return schema


def schema_str(name: str) -> str:
    """Compact JSON text of schema `name`, byte-stable, to register under its subject.

    Not the Avro Parsing Canonical Form: that form drops defaults, which compatibility needs.
    """
    return json.dumps(load_schema(name), separators=(",", ":"), ensure_ascii=False)


@functools.cache
def parsed_schema(name: str) -> Any:
    """fastavro-parsed schema `name` (cached; treat as read-only)."""
    return fastavro.parse_schema(load_schema(name))


def full_name(record_name: str) -> str:
    """`ServiceRequested` -> `dbaas.v1.ServiceRequested`, the name fastavro uses for union branches."""
    return f"{NAMESPACE}.{record_name}"


_LEAVES = frozenset({str, int, float, bool, type(None), datetime.datetime})
_FIELD_NAMES: dict[type, frozenset[str]] = {}


def as_record(obj: Any) -> Any:
    """A dataclass (and the dataclasses, lists and dicts inside it) as plain Avro record dicts.

    `dataclasses.asdict` deep-copies every leaf; records are immutable here, so this only rebuilds
    the containers (the command processor and projectors call it for every event): leaves of the
    plain types are taken as they are, a dataclass's fields are copied from its `__dict__` (its field
    names are looked up once)."""
    cls = obj.__class__
    if cls in _LEAVES:
        return obj
    names = _FIELD_NAMES.get(cls)
    if names is None and dataclasses.is_dataclass(cls):
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    leaves = _LEAVES  # tested here rather than by a call per value: most values are leaves
    if names is not None:
        values = getattr(obj, "__dict__", None)
        if values is None or values.keys() != names:  # slots, or attributes besides its fields
            values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        record = dict(values)  # its fields in order, as the generated `__init__` set them
        for name, v in values.items():
            if v.__class__ not in leaves:
                record[name] = as_record(v)
        return record
    if isinstance(obj, (list, tuple)):
        return [v if v.__class__ in leaves else as_record(v) for v in obj]
    if isinstance(obj, dict):
        return {k: v if v.__class__ in leaves else as_record(v) for k, v in obj.items()}
    return obj


def short_name(name: str) -> str:
    """`dbaas.v1.ServiceRequested` -> `ServiceRequested`."""
    return name.rsplit(".", 1)[-1]


__all__ = [
    "NAMESPACE",
    "SCHEMA_DIR",
    "SUBJECTS",
    "EncodeError",
    "PoisonMessage",
    "SchemaError",
    "full_name",
    "load_schema",
    "parsed_schema",
    "schema_names",
    "schema_str",
    "short_name",
]
