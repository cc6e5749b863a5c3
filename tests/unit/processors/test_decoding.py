"""Each topic's decoding raises one error a consumer dead-letters — `PoisonMessage` for events (and
the audit writer), `CommandError` for a command record — never a bare TypeError or KeyError, so no
consumer keeps a list of exceptions to catch."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

import commands
import events
from processors import audit
from schemas import PoisonMessage

T0 = datetime(2026, 1, 2, tzinfo=UTC)


def _event(payload, schema_version: int = 2, actor: str | None = "https://idp.example#alice") -> dict:
    env = events.Envelope("e-1", "acme", "organization", "acme", 1, T0, "c-1", "corr", None, payload,
                          actor_subject=actor)
    return {**events.to_avro(env), "schema_version": schema_version}


@pytest.mark.parametrize("record", [{}, {"payload": ("dbaas.v1.Nope", {})}, {"event_id": 1}],
                         ids=["empty", "unknown payload", "wrong types"])
def test_a_record_that_is_no_event_is_poison(record):
    with pytest.raises(PoisonMessage, match="not an event record"):
        events.decode(lambda _data: record, b"...")


def test_an_event_decodes_to_its_envelope():
    record = _event(events.OrganizationCreated("acme", "Acme", "https://idp.example#alice"))
    assert events.decode(lambda _data: record, b"...") == events.from_avro(record)


@pytest.mark.parametrize("record", [{}, {"actor": {"subject": "a"}}, {"actor": None, "payload": 3}])
def test_a_record_that_is_no_command_raises_command_error_only(record):
    with pytest.raises(commands.CommandError):
        commands.from_avro(record)


def test_a_command_record_with_a_field_missing_or_unknown_names_it():
    good = commands.to_avro(commands.CommandEnvelope("c-1", "acme", commands.Actor("alice", ("org-owner",)), T0,
                                                     "corr", commands.DeleteService("s-1")))
    assert commands.from_avro(good).payload == commands.DeleteService("s-1")
    for record, field in (({**good, "payload": ("dbaas.v1.DeleteService", {})}, "service_id"),
                          ({**good, "payload": ("dbaas.v1.DeleteService", {"service_id": "s", "colour": 1})},
                           "colour"),
                          ({**good, "colour": 1}, "colour"),
                          ({k: v for k, v in good.items() if k != "tenant_id"}, "tenant_id")):
        with pytest.raises(commands.CommandError, match=field):
            commands.from_avro(record)


def test_the_audit_writer_reads_a_broken_record_as_poison_and_a_v1_actor_as_its_principal():
    with pytest.raises(PoisonMessage):
        audit.decode(lambda _data: {"payload": ("dbaas.v1.OrganizationCreated", {})}, b"...")
    v1 = _event(events.OrganizationCreated("acme", "Acme", "alice"), schema_version=1, actor="alice")
    assert audit.decode(lambda _data: v1, b"...")["actor"] == f"{events.LEGACY_ISSUER}#alice"
    v2 = _event(events.OrganizationCreated("acme", "Acme", "https://idp.example#alice"))
    assert audit.decode(lambda _data: v2, b"...")["actor"] == "https://idp.example#alice"
