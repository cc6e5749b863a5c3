"""Typed errors of the `schemas` package: one base, `SchemaError`. Imports nothing."""

from __future__ import annotations


class SchemaError(Exception):
    """Base of every error raised by `schemas`."""


class PoisonMessage(SchemaError):
    """Bytes that can never be decoded: dead-letter them with `reason` in the headers; retrying won't help."""

    def __init__(self, reason: str, schema_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.schema_id = schema_id


class EncodeError(SchemaError):
    """A record that does not fit its schema: a bug in the producer, not in the data on the wire."""
