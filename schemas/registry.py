"""The schema registry client (Confluent-compatible REST API) and the per-subject serde.

`Registry` registers a subject's schema (idempotent: the registry answers the existing id) and
fetches writer schemas by id, cached. `Serde` binds one subject: `encode(record)` frames with the
id registered at start-up, `decode(bytes)` resolves the writer schema by id and reads it as the
current schema. Imports httpx, fastavro and `schemas` only; knows nothing of the domain.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import fastavro
import httpx

from schemas import SUBJECTS, parsed_schema, schema_str
from schemas.codec import decode, decode_compiled, encode, encode_compiled, encode_object, reads_alike
from schemas.errors import SchemaError
from schemas.reader import Reader, compile_reader
from schemas.writer import compile_writer


class RegistryUnavailable(SchemaError):
    """The registry did not answer: transient, retry later."""


class Registry:
    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)
        self._by_id: dict[int, Any] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        try:
            resp = self._http.post(f"{self.url}/subjects/{subject}/versions",
                                   json={"schema": schema, "schemaType": "AVRO"},
                                   headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry at {self.url} unreachable: {exc}") from exc
        if resp.status_code == 409:
            raise SchemaError(f"the registry refused {subject}: incompatible with its previous version "
                              f"({resp.text})")
        if resp.status_code >= 400:
            raise SchemaError(f"registering {subject} failed: HTTP {resp.status_code} {resp.text}")
        schema_id = int(resp.json()["id"])
        with self._lock:
            self._by_id[schema_id] = fastavro.parse_schema(json.loads(schema))
        return schema_id

    def schema(self, schema_id: int) -> Any:
        """The parsed writer schema of ``schema_id``; LookupError when the registry has none."""
        with self._lock:
            cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        try:
            resp = self._http.get(f"{self.url}/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry at {self.url} unreachable: {exc}") from exc
        if resp.status_code == 404:
            raise LookupError(schema_id)
        if resp.status_code >= 400:
            raise RegistryUnavailable(f"schema id {schema_id}: HTTP {resp.status_code} {resp.text}")
        parsed = fastavro.parse_schema(json.loads(resp.json()["schema"]))
        with self._lock:
            self._by_id[schema_id] = parsed
        return parsed

    def close(self) -> None:
        self._http.close()


class Serde:
    """Encoder/decoder of one subject's records in the Confluent wire format."""

    def __init__(self, registry: Registry, subject: str):
        self.subject = subject
        self.name = SUBJECTS[subject]
        self.schema = parsed_schema(self.name)
        self.schema_id = registry.register(subject, schema_str(self.name))
        self._registry = registry
        self._write = compile_writer(self.schema)
        # schema id -> (its parsed writer schema, the reader compiled for it) when it reads alike, else None
        self._alike: dict[int, tuple[Any, Reader | None] | None] = {}

    def encode(self, record: dict[str, Any]) -> bytes:
        """The record framed with this process's schema id, written by the code `schemas.writer`
        compiled for the schema (fastavro for what that code leaves to it)."""
        if self._write is None:
            return encode(self.schema_id, self.schema, record)
        return encode_compiled(self.schema_id, self.schema, self._write, record)

    def object_encoder(self, classes: Mapping[str, type], to_record: Callable[[Any], dict[str, Any]]) -> Callable[[Any], bytes]:
        """A function giving `self.encode(to_record(obj))` for `obj`, an instance of the class
        `classes` names for the schema's top record, written straight from the objects (their
        `__dict__`) by code `schemas.writer` compiled for those classes: no record dict is built.
        `classes` names a class for every record of the schema whose fields are the record's;
        whatever that code does not write goes through `to_record` and `encode`, the same bytes or
        the same error."""
        def through_record(obj: Any) -> bytes:
            return self.encode(to_record(obj))

        write = compile_writer(self.schema, classes)
        if write is None:
            return through_record
        schema_id = self.schema_id

        def encode_one(obj: Any) -> bytes:
            return encode_object(schema_id, write, obj, through_record)

        return encode_one

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record as this process's schema reads it. Schema resolution (fastavro reading with the
        writer's and the reader's schema) costs twice the decoding itself, and changes nothing when
        the writer schema reads alike (`codec.reads_alike`): the same schema, or an older one the
        reader only added records to. Records of such writer schemas are decoded with the writer
        schema alone, by the code `schemas.reader` compiled for it (fastavro where it compiles
        none); the verdict and the code are kept per schema id."""
        if len(data) < 5 or data[0] != 0:
            return decode(data, self._registry.schema, reader_schema=self.schema)  # PoisonMessage, saying why
        schema_id = int.from_bytes(data[1:5], "big")
        alike = self._alike[schema_id] if schema_id in self._alike else self._writer_alike(schema_id)
        if alike is None:
            return decode(data, self._registry.schema, reader_schema=self.schema)  # or PoisonMessage, saying why
        writer, read = alike
        if read is None:
            return decode(data, lambda _id: writer)
        return decode_compiled(data, schema_id, read)

    def _writer_alike(self, schema_id: int) -> tuple[Any, Reader | None] | None:
        """(writer schema, its compiled reader or None) when the writer schema reads alike, else None."""
        try:
            writer = self._registry.schema(schema_id)
        except LookupError:
            return None  # not kept: the registry may learn it; `decode` says it is poison
        alike = (writer, compile_reader(writer)) if writer is not None and reads_alike(writer, self.schema) else None
        self._alike[schema_id] = alike
        return alike


COMMANDS_SUBJECT = "dbaas.commands-value"
EVENTS_SUBJECT = "dbaas.events-value"
POP_STATUS_SUBJECT = "dbaas.pop.status-value"
AUDIT_SUBJECT = "dbaas.audit-value"
ALERTS_SUBJECT = "dbaas.alerts-value"
METRICS_SUBJECT = "dbaas.metrics-value"
