"""Stateless validation and authorization: each problem names the field and says how to fix it."""

from __future__ import annotations

import uuid

import pytest
from domain_builders import DB1, DB2, SYSTEM
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import (
    Actor,
    CreateOrganization,
    CreateService,
    DeleteService,
    Problem,
    RecordPopReport,
    RecordServiceClaimCommitted,
    RecordServiceClaimRendered,
    ScaleService,
    SetQuota,
    authorize,
    fingerprint,
    fingerprint_of,
    payload_to_avro,
    resolve_resources,
    validate,
)
from commands.catalog import STEP_REPORTS
from commands.validation import _creation_problems, _uuid, _well_formed_creation
from events import Quota, ResourceLimit, Resources

DNS_RULE = (
    "use 1 to 63 characters: lowercase letters, digits and '-', "
    "starting with a letter and ending with a letter or digit"
)


def service(**changes: object) -> CreateService:
    fields: dict = {
        "service_id": DB1,
        "name": "orders",
        "engine": "yugabyte",
        "pop": "frankfurt",
        "size": "small",
    }
    return CreateService(**{**fields, **changes})


CASES = [
    (
        "a slug is a DNS label",
        CreateOrganization("Acme_Inc", "Acme"),
        [Problem("invalid", "slug", f'slug "Acme_Inc" is not a valid name: {DNS_RULE}')],
    ),
    (
        "a slug starts with a letter",
        CreateOrganization("1acme", "Acme"),
        [Problem("invalid", "slug", f'slug "1acme" is not a valid name: {DNS_RULE}')],
    ),
    (
        "a slug has at most 63 characters",
        CreateOrganization("a" * 64, "Acme"),
        [Problem("invalid", "slug", f'slug "{"a" * 64}" is not a valid name: {DNS_RULE}')],
    ),
    (
        "a display name is not blank",
        CreateOrganization("acme", "  "),
        [
            Problem(
                "invalid", "display_name", "display_name is blank; give the organization a name people read"
            )
        ],
    ),
    (
        "a display name is short",
        CreateOrganization("acme", "x" * 101),
        [Problem("invalid", "display_name", "display_name has 101 characters; use at most 100")],
    ),
    (
        "a service name ends with a letter or digit",
        service(name="orders-"),
        [Problem("invalid", "name", f'name "orders-" is not a valid name: {DNS_RULE}')],
    ),
    (
        "service ids are canonical UUIDs",
        service(service_id=DB1.upper()),
        [
            Problem(
                "invalid",
                "service_id",
                f'service_id "{DB1.upper()}" is not a UUID in canonical form '
                "(8-4-4-4-12 lowercase hex digits); the publisher generates it",
            )
        ],
    ),
    (
        "unknown pops list the offered ones",
        service(pop="paris"),
        [
            Problem(
                "invalid",
                "pop",
                'pop "paris" is not offered; choose one of: '
                "lagos, johannesburg, frankfurt, ashburn, singapore, local",
            )
        ],
    ),
    (
        "aerospike is not offered locally",
        service(engine="aerospike", pop="local"),
        [
            Problem(
                "unsupported",
                "pop",
                'engine "aerospike" is not offered in pop "local"; '
                "pops that offer aerospike: lagos, johannesburg, frankfurt, ashburn, singapore",
            )
        ],
    ),
    (
        "an engine version is a version, and the default is named",
        service(engine_version="latest please"),
        [
            Problem(
                "invalid",
                "engine_version",
                'engine_version "latest please" is not a version: '
                "use up to 64 letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, or leave it null for the default (default for yugabyte: "
                "2024.2.0.0-b145)",
            )
        ],
    ),
    (
        "each override is range-checked",
        service(cpu=0.25, memory_gb=1024, storage_gb=0, replicas=10),
        [
            Problem("invalid", "cpu", "cpu 0.25 is out of range; choose a value from 0.5 to 64"),
            Problem("invalid", "memory_gb", "memory_gb 1024 is out of range; choose a value from 1 to 512"),
            Problem("invalid", "storage_gb", "storage_gb 0 is out of range; choose a value from 1 to 16384"),
            Problem("invalid", "replicas", "replicas 10 is out of range; choose a value from 1 to 9"),
        ],
    ),
    ("the range ends are allowed", service(cpu=64, memory_gb=1, storage_gb=16384, replicas=9), []),
    (
        "label keys and values follow Kubernetes label rules",
        service(labels={"team": "ok", "bad key": "x", "k": "-v"}),
        [
            Problem(
                "invalid",
                "labels",
                'label key "bad key" is not valid: use 1 to 63 characters: letters, digits, '
                "'-', '_' and '.', starting and ending with a letter or digit",
            ),
            Problem(
                "invalid",
                "labels",
                'label "k" has value "-v", which is not valid: use 1 to 63 characters: '
                "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, "
                "or empty",
            ),
        ],
    ),
    (
        "a service name fits a Helm release name (53 characters)",
        service(name="a" * 54),
        [Problem("invalid", "name", "name has 54 characters; use at most 53 "
                 "(a service is deployed as a Helm release of that name)")],
    ),
    ("a service name of 53 characters is a release name", service(name="a" * 53), []),
    (
        "a service name longer than a DNS label is told the DNS rule first",
        service(name="a" * 64),
        [Problem("invalid", "name", f'name "{"a" * 64}" is not a valid name: {DNS_RULE}')],
    ),
    ("32 labels are allowed", service(labels={f"k{i}": "v" for i in range(32)}), []),
    (
        "at most 32 labels",
        service(labels={f"k{i}": "v" for i in range(33)}),
        [Problem("invalid", "labels", "a service has 33 labels; give at most 32")],
    ),
    ("a label key and value of 63 characters are allowed", service(labels={"k" * 63: "v" * 63}), []),
    (
        "a label key or value over 63 characters is refused, saying so",
        service(labels={"k" * 64: "v" * 64}),
        [
            Problem("invalid", "labels", f'label key "{"k" * 64}" is not valid: it has 64 characters; '
                    "use 1 to 63 characters: letters, digits, '-', '_' and '.', starting and ending with a "
                    "letter or digit"),
            Problem("invalid", "labels", f'label "{"k" * 64}" has value "{"v" * 64}", which is not valid: '
                    "it has 64 characters; use 1 to 63 characters: letters, digits, '-', '_' and '.', "
                    "starting and ending with a letter or digit, or empty"),
        ],
    ),
    (
        "a NUL is refused and shown escaped, so the rejection itself can be stored",
        service(name="ord\x00ers"),
        [Problem("invalid", "name", f'name "ord\\x00ers" is not a valid name: {DNS_RULE}')],
    ),
    (
        "a long refused value is shown cut short",
        service(pop="p" * 1000),
        [Problem("invalid", "pop", f'pop "{"p" * 80}… (1000 characters)" is not offered; choose one of: '
                 "lagos, johannesburg, frankfurt, ashburn, singapore, local")],
    ),
    (
        "a display name holds no control characters",
        CreateOrganization("acme", "Acme\x00"),
        [Problem("invalid", "display_name", 'display_name "Acme\\x00" holds control characters (such as NUL, '
                 "tab or a line break); use printable characters only")],
    ),
    (
        "cpu must be finite (NaN)",
        service(cpu=float("nan")),
        [Problem("invalid", "cpu", "cpu is not a number (NaN); give a finite number from 0.5 to 64")],
    ),
    (
        "cpu must be finite (infinity), also in a scale",
        ScaleService(DB1, cpu=float("-inf")),
        [Problem("invalid", "cpu", "cpu is infinite; give a finite number from 0.5 to 64")],
    ),
    (
        "every quota number must be finite",
        SetQuota(Quota(max_services=5, total=ResourceLimit(cpu=float("inf"), memory_gb=8, storage_gb=10),
                       engines={"vitess": ResourceLimit(cpu=float("nan"), memory_gb=8, storage_gb=10)})),
        [
            Problem("invalid", "quota.total.cpu", "quota.total.cpu is infinite; give a finite number 0 to 1000000"),
            Problem("invalid", "quota.engines.vitess.cpu",
                    "quota.engines.vitess.cpu is not a number (NaN); give a finite number 0 to 1000000"),
        ],
    ),
    (
        "a scale range-checks only what it names",
        ScaleService(DB1, replicas=0),
        [Problem("invalid", "replicas", "replicas 0 is out of range; choose a value from 1 to 9")],
    ),
    (
        "a delete needs a service id",
        DeleteService("orders"),
        [
            Problem(
                "invalid",
                "service_id",
                'service_id "orders" is not a UUID in canonical form '
                "(8-4-4-4-12 lowercase hex digits); the publisher generates it",
            )
        ],
    ),
    (
        "a rendered report names its service and operation by id",
        RecordServiceClaimRendered(DB1, DB2, "ab"),
        [],
    ),
    (
        "a committed report's operation id is a UUID too",
        RecordServiceClaimCommitted(DB1, "op-1", "lagos", "tenants/acme/lagos/orders.yaml", "c0ffee"),
        [
            Problem(
                "invalid",
                "operation_id",
                'operation_id "op-1" is not a UUID in canonical form '
                "(8-4-4-4-12 lowercase hex digits); the publisher generates it",
            )
        ],
    ),
    ("a PoP report is Ready, Failed or Deleted", RecordPopReport(DB1, DB2, "lagos", "Deleted"), []),
    (
        "a PoP phase the domain does not know lists the ones it does",
        RecordPopReport(DB1, DB2, "lagos", "Progressing"),
        [
            Problem(
                "invalid",
                "phase",
                'phase "Progressing" is not offered; choose one of: Ready, Failed, Deleted',
            )
        ],
    ),
]


@pytest.mark.parametrize("command, problems", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate(command: object, problems: list[Problem]) -> None:
    assert validate(command) == problems


AUTH = [
    ("owners manage services", Actor("a", ("org-owner",)), "ScaleService", None),
    (
        "service admins manage services",
        Actor("a", ("service-viewer", "service-admin")),
        "DeleteService",
        None,
    ),
    (
        "viewers do not",
        Actor("a", ("service-viewer",)),
        "CreateService",
        Problem(
            "forbidden",
            None,
            "CreateService needs one of the roles org-owner, org-admin, service-admin; "
            'actor "a" has service-viewer',
        ),
    ),
    ("anyone signed in creates organizations", Actor("a"), "CreateOrganization", None),
    *[(f"the platform reports {t}", SYSTEM, t, None) for t in STEP_REPORTS],
    (
        "a tenant's owner does not report steps",
        Actor("a", ("org-owner",)),
        "RecordPopReport",
        Problem("forbidden", None, 'RecordPopReport needs one of the roles system; actor "a" has org-owner'),
    ),
]


@pytest.mark.parametrize("actor, command_type, problem", [a[1:] for a in AUTH], ids=[a[0] for a in AUTH])
def test_authorize(actor: Actor, command_type: str, problem: Problem | None) -> None:
    assert authorize(actor, command_type) == problem


def test_size_plans_are_the_published_table() -> None:
    plans = {size: resolve_resources(service(size=size)) for size in ("small", "medium", "large")}
    assert plans == {
        "small": Resources(1.0, 2, 10, 1),
        "medium": Resources(2.0, 8, 100, 3),
        "large": Resources(4.0, 16, 500, 3),
    }


def test_fingerprint_is_the_same_for_the_same_request_however_it_arrives() -> None:
    decoded = (
        "dbaas.v1.ScaleService",
        {"service_id": DB1, "cpu": 2.0, "memory_gb": None, "storage_gb": None, "replicas": None},
    )
    assert fingerprint(decoded) == fingerprint_of(ScaleService(DB1, cpu=2))
    assert fingerprint(decoded) == fingerprint(("dbaas.v1.ScaleService", {"cpu": 2.0, "service_id": DB1}))
    assert len(fingerprint(decoded)) == 64


def test_fingerprints_are_the_ones_already_in_the_log() -> None:
    # Recorded with each accepted operation and compared with every redelivery: a change to how a
    # fingerprint is computed would turn redelivered commands into reused command ids.
    creation = CreateService("0a4c4417-0eab-4df0-8579-e85c90786c73", "orders", "yugabyte", "frankfurt", "small",
                             cpu=2.0, labels={"team": "pay", "tier": "gold"})
    assert fingerprint_of(creation) == "dd1d83c7b79fe11d833646f8c258649e994cc63e56d53ecd7da7e5b15533f17c"
    assert fingerprint_of(ScaleService("0a4c4417-0eab-4df0-8579-e85c90786c73", cpu=0.5, replicas=3)) == (
        "cbebd5395cfe6a5b1807e04a25a046360b3a5bcf2f77084de2ab625389824070")
    assert fingerprint_of(SetQuota(Quota(20, ResourceLimit(64.0, 256, 4096), {"mongodb": ResourceLimit(8, 32, 512)}))) \
        == "0c8ed7bd6f18c707f27d8b16a0834823ebb2c857f3df053b433d784ed47042e2"


def test_fingerprint_tells_requests_apart() -> None:
    base = fingerprint_of(ScaleService(DB1, cpu=2))
    assert fingerprint_of(ScaleService(DB1, cpu=2.5)) != base
    assert fingerprint_of(ScaleService(DB1, memory_gb=2)) != base
    name, fields = payload_to_avro(DeleteService(DB1))
    assert fingerprint(("dbaas.v1.RequestBackup", fields)) != fingerprint((name, fields))


def test_a_number_json_cannot_hold_is_still_fingerprinted_and_rejected() -> None:
    nan = ScaleService(DB1, cpu=float("nan"))

    assert fingerprint_of(nan) != fingerprint_of(ScaleService(DB1, cpu=float("inf")))
    assert validate(nan) == [
        Problem("invalid", "cpu", "cpu is not a number (NaN); give a finite number from 0.5 to 64")]


@pytest.mark.parametrize("value", [
    DB1, DB1.upper(), DB1.replace("-", ""), "{" + DB1 + "}", "urn:uuid:" + DB1, DB1 + "\n", " " + DB1,
    DB1[:-1], DB1 + "0", DB1.replace("-", "_"), "", "not-a-uuid", "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff", "٠" * 8 + DB1[8:],  # Arabic-Indic digits: int() takes them
])
def test_an_id_is_well_formed_exactly_when_it_is_its_uuids_canonical_form(value: str) -> None:
    try:
        canonical = str(uuid.UUID(value)) == value
    except ValueError:
        canonical = False
    assert (_uuid("service_id", value) is None) == canonical


_SAMPLES = {  # well-formed values and near misses, for every field the creation's checks look at
    "service_id": st.sampled_from([DB1, DB2, DB1.upper(), DB1[:-1], DB1 + "\n", "not-a-uuid", ""]),
    "name": st.sampled_from(["orders", "a", "a" * 53, "a" * 54, "a" * 64, "Orders", "-x", "x-", "ok-1", ""]),
    "engine": st.sampled_from(["yugabyte", "vitess", "scylla", "dragonfly", "aerospike", "mongodb", "oracle", ""]),
    "engine_version": st.sampled_from([None, "2.25", "7.0.4", "v", "a" * 65, "bad version", "-1"]),
    "pop": st.sampled_from(["frankfurt", "lagos", "local", "ashburn", "mars", ""]),
    "size": st.sampled_from(["small", "medium", "large", "huge", ""]),
    "cpu": st.sampled_from([None, 0.5, 64, 64.5, 0.0, float("nan"), float("inf"), 2]),
    "memory_gb": st.sampled_from([None, 1, 512, 513, 0]),
    "storage_gb": st.sampled_from([None, 1, 16384, 16385, 0]),
    "replicas": st.sampled_from([None, 1, 3, 0, 100]),
    "labels": st.sampled_from([{}, {}, {"team": "payments"}, {"bad key!": "x"}]),
}


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional=_SAMPLES))
def test_a_creation_taken_as_well_formed_at_once_is_one_its_checks_find_nothing_in(changes: dict) -> None:
    """Given a creation with any mix of well-formed and ill-formed fields, the shortcut `validate`
    takes for most creations says well-formed exactly when every check of a creation finds nothing
    (and never for one with labels, which only the checks look at); `validate` says what they say."""
    command = service(**changes)
    problems = _creation_problems(command)
    assert _well_formed_creation(command) == (not problems and not command.labels)
    assert validate(command) == problems
