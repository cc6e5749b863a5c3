"""The command processor's pure judge: each message of `dbaas.commands` is dead-lettered with a
code and a reason, or judged by `decide` with what its signature proved. Given/when/then as a
table; no broker, no registry."""
from __future__ import annotations

from dataclasses import replace

import pytest

from commands import Authority, CreateOrganization, Unverified, to_avro
from events import CommandRejected, OrganizationCreated, TenantState
from processors.judge import DeadLetter, Judged, Raw, judge
from tests.unit.domain.domain_builders import GATEWAY, cmd

COMMAND = cmd(CreateOrganization("acme", "Acme"), command_id="c0ffee00-0000-4000-8000-000000000001")
RECORD = to_avro(COMMAND)


def raw(**overrides) -> Raw:
    base = Raw("dbaas.commands", partition=3, key=b"acme", size=400, max_bytes=65536, partition_count=12,
               expected_partition=3, record=RECORD, proof=GATEWAY)
    return replace(base, **overrides)


DEAD = [
    (raw(size=70000, record=None), DeadLetter("oversized", "the command is 70000 bytes; at most 65536 are accepted"),
     "over the limit: never decoded"),
    (raw(record=None, poison="unknown magic byte"), DeadLetter("undecodable", "unknown magic byte"),
     "the registry decoder refused the bytes"),
    (raw(record={**RECORD, "payload": ("dbaas.commands.NoSuchCommand", {})}), None,
     "a record that is no command"),
    (raw(key=b"globex"), DeadLetter("wrong_key", "the message key must be the tenant id 'acme'", COMMAND.command_id),
     "keyed by another tenant: its state would be another's"),
    (raw(key=None), DeadLetter("wrong_key", "the message key must be the tenant id 'acme'", COMMAND.command_id),
     "no key at all"),
    (raw(partition=5), DeadLetter(
        "wrong_partition", "tenant 'acme' belongs on partition 3 of dbaas.commands (murmur2 of the key over 12 "
        "partitions), not on 5: publish with the murmur2 partitioner", COMMAND.command_id),
     "judged on another partition, it would fork the tenant's state"),
]


@pytest.mark.parametrize("given, then, reason", DEAD, ids=[d[2] for d in DEAD])
def test_dead_letters(given, then, reason):
    got = judge({}, given)
    assert isinstance(got, DeadLetter), reason
    if then is None:
        assert got.code == "undecodable" and got.reason.startswith("not a valid command: "), reason
    else:
        assert got == then, reason


def test_a_well_formed_signed_command_is_decided_and_folded():
    got = judge({}, raw())
    assert isinstance(got, Judged) and got.command == COMMAND and got.outcome == "accepted"
    assert any(isinstance(e.payload, OrganizationCreated) for e in got.events)
    assert got.state.tenant_id == "acme" and got.state != TenantState("acme")


def test_a_command_judged_twice_is_a_duplicate_against_the_state_it_left():
    first = judge({}, raw())
    again = judge({"acme": first.state}, raw())
    assert again.outcome == "duplicate" and again.events == [] and again.state == first.state


@pytest.mark.parametrize("proof, code", [
    (Unverified("the message is not signed"), "unauthenticated"),
    (None, "unauthenticated"),
    (Authority("publisher", "ci", ("globex",), ("org-owner",)), "forbidden"),
], ids=["unsigned", "signature-not-checked", "publisher-outside-its-organizations"])
def test_what_the_signature_proves_bounds_the_actor(proof, code):
    got = judge({}, raw(proof=proof))
    assert isinstance(got, Judged) and got.outcome == "rejected"
    (rejected,) = [e.payload for e in got.events if isinstance(e.payload, CommandRejected)]
    assert rejected.reason_code == code


def test_judge_leaves_the_states_it_was_given_alone():
    tenants: dict = {}
    judge(tenants, raw())
    assert tenants == {}
