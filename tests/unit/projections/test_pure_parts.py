"""The pure parts of projections: settings, cursors, start offsets, table names and the rename plan,
the rebuild's name selection, dispatch on event types and the changes handlers make. No broker, no
database."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from events import EVENT_TYPES
from projections import positions
from projections.errors import ConfigurationError, InvalidCursor
from projections.projectors import PROJECTIONS, Projection, backups, operations, organizations, services
from projections.queries import decode_cursor, encode_cursor
from projections.rebuild import select
from projections.settings import Settings, sqlalchemy_url
from projections.tables import READ_MODELS, REBUILD_SUFFIX, build_tables, index_names, rename_plan
from tests.integration.projection_support import LARGE, SMALL, EventLog


@pytest.mark.parametrize(("dsn", "expected", "reason"), [
    ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db", "plain DSN gets the psycopg 3 driver"),
    ("postgres://u@h/db", "postgresql+psycopg://u@h/db", "the short scheme too"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db", "a named driver is kept"),
])
def test_sqlalchemy_url(dsn, expected, reason):
    assert sqlalchemy_url(dsn) == expected, reason


@pytest.mark.parametrize("dsn", ["mysql://u@h/db", "not a url"])
def test_sqlalchemy_url_refuses_what_is_not_postgresql(dsn):
    with pytest.raises(ConfigurationError):
        sqlalchemy_url(dsn)


def test_settings_from_env_defaults_and_overrides():
    base = {"DBAAS_KAFKA_BOOTSTRAP": "k:9092", "DBAAS_REGISTRY_URL": "http://r", "DBAAS_DATABASE_URL": "postgresql://h/db"}
    s = Settings.from_env(base)
    assert (s.events_topic, s.dead_letter_topic, s.metrics_port, s.batch_size) == (
        "dbaas.events", "dbaas.events.dlq", 0, 500)
    s = Settings.from_env({**base, "DBAAS_EVENTS_TOPIC": "t", "DBAAS_METRICS_PORT": "9400"})
    assert (s.events_topic, s.dead_letter_topic, s.metrics_port) == ("t", "t.dlq", 9400)
    assert Settings.from_env({**base, "DBAAS_EVENTS_DLQ_TOPIC": "d"}).dead_letter_topic == "d"


@pytest.mark.parametrize(("env", "message"), [
    ({}, "DBAAS_KAFKA_BOOTSTRAP, DBAAS_REGISTRY_URL, DBAAS_DATABASE_URL"),
    ({"DBAAS_KAFKA_BOOTSTRAP": "k", "DBAAS_REGISTRY_URL": "r", "DBAAS_DATABASE_URL": "postgresql://h/d",
      "DBAAS_METRICS_PORT": "nine"}, "DBAAS_METRICS_PORT='nine' is not an integer"),
])
def test_settings_from_env_says_what_is_wrong(env, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_cursor_round_trips_and_is_opaque():
    at = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    cursor = encode_cursor(at, "svc-1")
    assert "svc-1" not in cursor and "=" not in cursor
    assert decode_cursor(cursor) == (at, "svc-1")
    other = datetime(2026, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    assert decode_cursor(encode_cursor(other, "x")) == (other, "x")


@pytest.mark.parametrize(("cursor", "reason"), [
    ("not-a-cursor", "not base64 JSON"),
    ("e30", "JSON without the keys ({})"),
    (encode_cursor(datetime(2026, 1, 1), "x"), "a naive timestamp was never issued"),
    ("eyJjIjoxLCJpIjoieCJ9", "created_at is not a timestamp"),
])
def test_cursor_refuses_what_it_did_not_issue(cursor, reason):
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


@pytest.mark.parametrize(("stored", "expected", "reason"), [
    ({}, {0: None, 1: None}, "no positions: from the beginning"),
    ({("a", 0): 5, ("b", 0): 3, ("a", 1): 7, ("b", 1): 9}, {0: 3, 1: 7}, "the slowest projection decides"),
    ({("a", 0): 5, ("a", 1): 2, ("b", 1): 4}, {0: None, 1: 2}, "one projection without a row: the beginning"),
])
def test_start_offsets(stored, expected, reason):
    assert positions.start_offsets(stored, ["a", "b"], [0, 1]) == expected, reason


def test_rebuild_twins_have_their_own_names_and_rename_into_the_live_ones():
    live, twins = build_tables(), build_tables(REBUILD_SUFFIX)
    assert [live.read_model(n).name for n in READ_MODELS] == list(READ_MODELS)
    assert twins.services.name == "services__rebuild"
    assert twins.positions.name == live.positions.name == "projection_positions"
    assert index_names(live.services) == ["services_pkey", "ix_services_created", "ix_services_tenant_created",
                                          "ix_services_tenant_name"]
    assert not set(index_names(live.services)) & set(index_names(twins.services))
    assert rename_plan(twins.operations, live.operations) == [
        'ALTER TABLE "operations__rebuild" RENAME TO "operations"',
        'ALTER INDEX "operations__rebuild_pkey" RENAME TO "operations_pkey"',
        'ALTER INDEX "ix_operations__rebuild_tenant" RENAME TO "ix_operations_tenant"',
    ]


@pytest.mark.parametrize(("names", "expected"), [
    ([], READ_MODELS),
    (["operations", "services"], ("services", "operations")),
    (["organizations"], ("organizations",)),
])
def test_rebuild_selects_read_models_in_a_fixed_order(names, expected):
    assert select(names) == expected


def test_rebuild_refuses_an_unknown_read_model():
    with pytest.raises(ConfigurationError, match="no read model named users; choose from organizations"):
        select(["users", "services"])


def test_every_handled_type_is_an_event_record_and_projections_are_registered():
    assert set(PROJECTIONS) == set(READ_MODELS)
    for module in (organizations, services, operations, backups):
        assert {t.__name__ for t in module.HANDLERS} <= set(EVENT_TYPES)


@dataclass(frozen=True)
class ServiceReadied:  # an event type from the future: no projection handles it yet
    service_id: str


@dataclass(frozen=True)
class _Env:
    payload: object


def test_an_event_no_projection_handles_is_skipped_without_touching_the_database():
    for projection in PROJECTIONS.values():
        assert projection.change(_Env(ServiceReadied("s"))) is None  # type: ignore[arg-type]
        assert projection.apply(None, build_tables(), _Env(ServiceReadied("s"))) is False  # type: ignore[arg-type]
    assert Projection("organizations", {}).change(_Env(ServiceReadied("s"))) is None  # type: ignore[arg-type]


def test_a_creating_change_carries_every_column_and_a_partial_one_only_columns():
    """`projections.fold` relies on it: a change that `creates` is the whole row."""
    log = EventLog()
    log.organization("acme", "Acme")
    log.service("acme", "svc-1", "orders")
    log.scale("acme", "svc-1", SMALL, LARGE)
    log.delete("acme", "svc-1")
    log.reject("acme", "CreateService", "invalid", "engine", "no such engine")
    tables = build_tables()
    seen = set()
    for envelope in log.envelopes:
        for name, projection in PROJECTIONS.items():
            change = projection.change(envelope)
            if change is None:
                continue
            columns = {c.name for c in tables.read_model(name).columns} - {"id", "version"}
            assert change.version == envelope.sequence
            if change.creates:
                assert set(change.values) == columns, (name, type(envelope.payload).__name__)
            else:
                assert set(change.values) < columns and change.values, (name, type(envelope.payload).__name__)
            seen.add((name, type(envelope.payload).__name__, change.creates))
    assert ("services", "ServiceScaleRequested", False) in seen and ("operations", "CommandRejected", True) in seen
