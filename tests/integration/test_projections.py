"""Projections against the real platform: the runner folds events from Kafka into PostgreSQL with its
positions, idempotently; poison goes to the dead-letter topic; rebuild swaps in identical tables even
while events keep coming; SIGTERM exits cleanly; the query API filters, pages and answers 404s.

Every test gets its own database and its own uuid-suffixed topics.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DataError

from events import (
    BackupCompleted,
    BackupFailed,
    OperationAccepted,
    OrganizationCreated,
    ServiceScaleRequested,
)
from projections import api, timetravel
from projections.batch import apply_batch
from projections.projectors import PROJECTIONS, upsert
from projections.reads import SqlReadModel
from projections.rebuild import Progress, rebuild
from projections.settings import Settings
from projections.stream import Item
from projections.tables import READ_MODELS, REBUILD_SUFFIX, build_tables, create_all
from runtime.deadletter import REASON as REASON_HEADER
from schemas.registry import EVENTS_SUBJECT, Registry, Serde
from tests.conftest import REPO, wait_for
from tests.integration.projection_support import (
    LARGE,
    SMALL,
    T0,
    EventLog,
    caught_up,
    consume_all,
    create_topic,
    delete_topics,
    dump,
    end_offsets,
    engine_for,
    fresh_database,
    positions_of,
    produce,
    produce_in_transaction,
    produce_raw,
    running,
)


@pytest.fixture
def database(stack):
    with fresh_database(stack.postgres_dsn) as dsn:
        engine = engine_for(dsn)
        yield dsn, engine
        engine.dispose()


@pytest.fixture
def topics(stack):
    """Creates uuid-suffixed topics for one test and deletes them afterwards."""
    created: list[str] = []

    def create(prefix: str, partitions: int) -> str:
        created.append(create_topic(stack.kafka, prefix, partitions))
        return created[-1]

    yield create
    delete_topics(stack.kafka, created)


@pytest.fixture
def settings(stack, database, topics):
    topic = topics("test.projections.events", 3)
    dlq = topics("test.projections.dlq", 1)
    return Settings(stack.kafka, stack.registry, database[0], events_topic=topic, dlq_topic=dlq,
                    batch_size=100)


def _two_tenants(log: EventLog, suffix: str) -> dict[str, str]:
    """acme-* creates, scales and deletes a service, backs one up (a completed backup, a failed
    scheduled one, a deletion that failed) and has a command rejected; globex-* creates one."""
    acme, globex = f"acme-{suffix}", f"globex-{suffix}"
    ids = {"acme": acme, "globex": globex, "db1": f"db1-{suffix}", "db2": f"db2-{suffix}",
           "db3": f"db3-{suffix}"}
    ids["org"] = log.organization(acme, "Acme Corp", owner="alice")
    log.organization(globex, "Globex", owner="hank")
    ids["create"] = log.service(acme, ids["db1"], "orders", labels={"team": "shop"})
    log.service(acme, ids["db2"], "cache", engine="dragonfly")
    log.service(globex, ids["db3"], "ledger", engine="vitess", pop="frankfurt", actor="hank")
    ids["scale"] = log.scale(acme, ids["db1"], SMALL, LARGE)
    ids["delete"] = log.delete(acme, ids["db2"])
    log.service_deleted(acme, ids["db2"], ids["delete"])
    ids["bk1"], ids["bk2"] = f"bk1-{suffix}", f"bk2-{suffix}"
    ids["policy"] = log.backup_policy(acme, ids["db1"])
    ids["backup"] = log.backup(acme, ids["db1"], ids["bk1"], pitr=True)
    log.backup_steps(acme, ids["bk1"], ids["backup"], BackupCompleted(
        ids["bk1"], ids["backup"], ids["db1"], T0 + timedelta(minutes=1), 4096, f"s3://backups/{ids['bk1']}",
        "dek1", "kek1", T0, '{"lsn": "0/3000060"}', '{"orders": {"rows": 2, "checksum": "x"}}'))
    ids["scheduled"] = log.backup(acme, ids["db1"], ids["bk2"], slot=T0.isoformat(), actor="system:scheduler")
    log.backup_steps(acme, ids["bk2"], ids["scheduled"], BackupFailed(
        ids["bk2"], ids["scheduled"], ids["db1"], "disk full", "pop_failed", "pop-report", True))
    ids["forget"] = log.delete_backup(acme, ids["bk1"], ids["db1"])
    log.backup_steps(acme, ids["bk1"], ids["forget"], BackupFailed(
        ids["bk1"], ids["forget"], ids["db1"], "store down", "pop_failed", "pop-report", True, "Completed"))
    ids["reject"] = log.reject(acme, "CreateService", "invalid", "engine",
                               'engine "mysql" is not offered; choose one of: yugabyte, vitess')
    return ids


def _project(stack, settings, envelopes, engine) -> dict[int, int]:
    produce(stack.kafka, stack.registry, settings.events_topic, envelopes)
    ends = end_offsets(stack.kafka, settings.events_topic)
    with running(settings):
        wait_for(lambda: caught_up(engine, settings.events_topic, ends), what="the runner to reach the end")
    return ends


def _tables(engine) -> dict[str, list[dict]]:
    return {name: dump(engine, name) for name in READ_MODELS}


def test_events_of_two_tenants_land_in_the_three_read_models(stack, settings, database):
    _dsn, engine = database
    log = EventLog()
    ids = _two_tenants(log, uuid.uuid4().hex[:6])
    ends = _project(stack, settings, log.envelopes, engine)

    orgs = {r["id"]: r for r in dump(engine, "organizations")}
    assert {k: (v["display_name"], v["owner"]) for k, v in orgs.items()} == {
        ids["acme"]: ("Acme Corp", "alice"), ids["globex"]: ("Globex", "hank")}
    services = {r["id"]: r for r in dump(engine, "services")}
    assert set(services) == {ids["db1"], ids["db2"], ids["db3"]}
    db1 = services[ids["db1"]]
    assert db1 | {"created_at": None, "updated_at": None} == {
        "id": ids["db1"], "tenant_id": ids["acme"], "name": "orders", "engine": "yugabyte",
        "engine_version": "2.25", "pop": "local", "size": "small", "cpu": 2.0, "memory_gb": 8,
        "storage_gb": 50, "replicas": 3, "status": "Scaling", "deletion_protection": False,
        "labels": {"team": "shop"}, "credentials": None, "created_at": None, "updated_at": None,
        "last_operation_id": ids["scale"], "version": 3, "restore": None, "deleted_at": None,
        "cdc": None, "cdc_tables": None,
        "backup_policy": db1["backup_policy"]}
    assert db1["updated_at"] > db1["created_at"]
    assert {k: v for k, v in db1["backup_policy"].items() if k != "set_at"} == {
        "schedule": "0 3 * * *", "retain_count": 7, "retain_days": 30, "pitr": True}
    db2 = services[ids["db2"]]
    assert (db2["status"], db2["last_operation_id"]) == ("Deleted", ids["delete"])
    assert db2["deleted_at"] > db2["created_at"]
    assert (services[ids["db3"]]["tenant_id"], services[ids["db3"]]["status"]) == (ids["globex"], "Requested")

    operations = {r["id"]: r for r in dump(engine, "operations")}
    # 2 organizations, 3 services, 1 scale, 1 deletion, 1 rejection, 1 policy, 2 backups, 1 backup deletion
    assert len(operations) == 12
    org_op, create_op, rejected = operations[ids["org"]], operations[ids["create"]], operations[ids["reject"]]
    assert (org_op["type"], org_op["state"], org_op["total_steps"], org_op["aggregate_id"]) == (
        "CreateOrganization", "Succeeded", 0, ids["acme"])
    assert (create_op["type"], create_op["state"], create_op["done_steps"], create_op["total_steps"],
            create_op["aggregate_id"], create_op["requested_by"],
            (create_op["render_step"], create_op["commit_step"], create_op["report_step"]),
            create_op["correlation_id"]) == (
        "CreateService", "Accepted", 0, 3, ids["db1"], "alice", (None, None, None), f"corr-{ids['create']}")
    assert (rejected["state"], rejected["reason_code"], rejected["field"], rejected["requested_by"],
            rejected["tenant_id"]) == ("Failed", "invalid", "engine", "bob", ids["acme"])
    assert rejected["message"].startswith('engine "mysql" is not offered')
    backup, scheduled, forget = operations[ids["backup"]], operations[ids["scheduled"]], operations[ids["forget"]]
    assert (backup["type"], backup["aggregate_id"], backup["state"], backup["done_steps"]) == (
        "BackupService", ids["bk1"], "Succeeded", 3)
    assert (scheduled["state"], scheduled["reason_code"], scheduled["compensation"]["state"]) == (
        "Failed", "pop_failed", "Pending")
    assert (forget["type"], forget["state"], forget["report_step"]["state"]) == ("DeleteBackup", "Failed", "Failed")

    backups = {r["id"]: r for r in dump(engine, "backups")}
    bk1, bk2 = backups[ids["bk1"]], backups[ids["bk2"]]
    assert (bk1["status"], bk1["step"], bk1["taken_at"], bk1["pitr_from"], bk1["size_bytes"], bk1["pitr"]) == (
        "Completed", 3, T0 + timedelta(minutes=1), T0, 4096, True)
    assert (bk1["reason"], bk1["deletion_operation_id"], bk1["consistency"]) == (
        "store down", ids["forget"], {"lsn": "0/3000060"})
    assert (bk2["status"], bk2["slot"], bk2["reason"], bk2["tenant_id"]) == (
        "Failed", T0.isoformat(), "disk full", ids["acme"])

    stored = positions_of(engine, settings.events_topic)
    assert stored == {(name, p): end for name in READ_MODELS for p, end in ends.items() if end}


def test_replaying_from_the_beginning_leaves_every_row_unchanged(stack, settings, database):
    _dsn, engine = database
    log = EventLog()
    ids = _two_tenants(log, uuid.uuid4().hex[:6])
    ends = _project(stack, settings, log.envelopes, engine)
    before = _tables(engine)

    with engine.begin() as conn:
        conn.execute(text("UPDATE projection_positions SET next_offset = 0"))
    assert not caught_up(engine, settings.events_topic, ends)
    with running(settings):
        wait_for(lambda: caught_up(engine, settings.events_topic, ends), what="the replay to reach the end")
    assert _tables(engine) == before

    # An old event applied again after newer ones (ServiceRequested after the scale) changes nothing.
    requested = next(e for e in log.envelopes if e.aggregate_id == ids["db1"] and e.sequence == 1)
    with engine.begin() as conn:
        assert PROJECTIONS["services"].apply(conn, build_tables(), requested)
    assert _tables(engine) == before


def test_poison_is_dead_lettered_and_the_runner_keeps_going(stack, settings, database):
    """Random bytes cannot be decoded; an event PostgreSQL refuses (a NUL in a text field) cannot be
    applied: both go to the dead-letter topic with the reason, and the events after them are applied."""
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    first, refused, second = EventLog(), EventLog(), EventLog()
    first.organization(f"acme-{suffix}", "Acme")
    refused.organization(f"nul-{suffix}", "Nul\x00Corp")
    second.organization(f"initech-{suffix}", "Initech")
    poison = os.urandom(64)
    produce(stack.kafka, stack.registry, settings.events_topic, first.envelopes)
    produce_raw(stack.kafka, settings.events_topic, [(f"acme-{suffix}".encode(), poison)])
    produce(stack.kafka, stack.registry, settings.events_topic, refused.envelopes + second.envelopes)
    ends = end_offsets(stack.kafka, settings.events_topic)

    with running(settings):
        wait_for(lambda: caught_up(engine, settings.events_topic, ends), what="the runner to pass the poison")
    assert {r["id"] for r in dump(engine, "organizations")} == {f"acme-{suffix}", f"initech-{suffix}"}
    assert len(dump(engine, "operations")) == 3  # the refused organization's operation event is fine

    dead = {m.value(): m for m in consume_all(stack.kafka, settings.dead_letter_topic, 2)}
    undecodable = dead[poison]
    headers = {k: v.decode() for k, v in undecodable.headers()}
    assert undecodable.key() == f"acme-{suffix}".encode()
    assert headers[REASON_HEADER]  # e.g. "magic byte is 42, expected 0: not Confluent wire format"
    assert headers["dbaas-source-topic"] == settings.events_topic
    partition, offset = int(headers["dbaas-source-partition"]), int(headers["dbaas-source-offset"])
    assert offset < ends[partition]
    [unapplicable] = [m for v, m in dead.items() if v != poison]
    reason = dict(unapplicable.headers())[REASON_HEADER].decode()
    assert reason.startswith("projection organizations cannot apply OrganizationCreated"), reason

    # A rebuild skips both the same way and swaps in the same rows.
    live = _tables(engine)
    assert rebuild(settings).skipped == 2
    assert _tables(engine) == live


def test_only_committed_transactions_are_projected_and_positions_pass_their_markers(stack, settings, database):
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    committed, aborted, later = EventLog(), EventLog(), EventLog()
    committed.organization(f"acme-{suffix}", "Acme")
    committed.service(f"acme-{suffix}", f"db1-{suffix}", "orders")
    aborted.organization(f"ghost-{suffix}", "Ghost")
    later.organization(f"initech-{suffix}", "Initech")
    topic = settings.events_topic
    produce_in_transaction(stack.kafka, stack.registry, topic, committed.envelopes)
    produce_in_transaction(stack.kafka, stack.registry, topic, aborted.envelopes, commit=False)
    produce_in_transaction(stack.kafka, stack.registry, topic, later.envelopes)
    ends = end_offsets(stack.kafka, topic)

    with running(settings):
        wait_for(lambda: caught_up(engine, topic, ends), what="positions to pass the transaction markers")
    assert {r["id"] for r in dump(engine, "organizations")} == {f"acme-{suffix}", f"initech-{suffix}"}
    assert positions_of(engine, topic) == {(name, p): end for name in READ_MODELS for p, end in ends.items() if end}
    live = _tables(engine)
    assert rebuild(settings).positions == ends
    assert _tables(engine) == live


def _index_names(engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"))}


def test_rebuild_swaps_in_tables_equal_row_for_row(stack, settings, database):
    _dsn, engine = database
    log = EventLog()
    _two_tenants(log, uuid.uuid4().hex[:6])
    ends = _project(stack, settings, log.envelopes, engine)
    live = _tables(engine)
    indexes = _index_names(engine)
    seen: list[Progress] = []

    result = rebuild(settings, [], seen.append)

    assert _tables(engine) == live
    assert result.projections == READ_MODELS and "backups" in READ_MODELS and result.replayed == sum(ends.values())
    assert (seen[-2].phase, seen[-1].phase) == ("replayed", "swapped")
    assert seen[-1].replayed == seen[-1].total == sum(ends.values())
    assert _index_names(engine) == indexes  # the twins' indexes took the live names
    assert positions_of(engine, settings.events_topic) == {
        (name, p): end for name in READ_MODELS for p, end in ends.items()}
    # Once more for one read model: the twin names are free again.
    rebuild(settings, ["services"])
    assert _tables(engine) == live and _index_names(engine) == indexes


@pytest.mark.parametrize(("workers", "max_rows"), [(2, 250_000), (1, 5)])
def test_rebuild_in_worker_processes_or_spilling_swaps_in_equal_tables(stack, settings, database, workers, max_rows):
    """The bulk replay with the partitions split between two processes, and with a fold too small
    for the log (it writes what it holds and goes on batch by batch): the same rows either way."""
    _dsn, engine = database
    log = EventLog()
    for n in range(4):  # organizations on every partition
        _two_tenants(log, f"{uuid.uuid4().hex[:6]}{n}")
    ends = _project(stack, settings, log.envelopes, engine)
    live = _tables(engine)

    result = rebuild(settings, [], workers=workers, max_rows=max_rows)

    assert _tables(engine) == live
    assert result.replayed == sum(ends.values()) and result.skipped == 0
    assert positions_of(engine, settings.events_topic) == {
        (name, p): end for name in READ_MODELS for p, end in ends.items()}


def test_time_travel_from_snapshots_equals_replaying_the_whole_log(stack, settings, database):
    """The projector snapshots an organization every 3 events; at every moment, its rows from the
    latest snapshot before it plus the log after the snapshot equal the whole log replayed — also
    with an event recorded late (occurring before events logged ahead of it) — and one row alone
    too; a replay reads only up to where no later event of the organization occurred by the moment.
    A rebuild deletes the snapshots."""
    _dsn, engine = database
    log = EventLog()
    ids = _two_tenants(log, uuid.uuid4().hex[:6])
    acme = ids["acme"]
    late = next(i for i, e in enumerate(log.envelopes) if isinstance(e.payload, ServiceScaleRequested))
    log.envelopes[late] = dataclasses.replace(log.envelopes[late], occurred_at=T0 - timedelta(hours=1))
    settings = dataclasses.replace(settings, snapshot_every=3)
    topic = settings.events_topic
    with running(settings):
        for start in range(0, len(log.envelopes), 4):  # batches of 4: several snapshots
            produce(stack.kafka, stack.registry, topic, log.envelopes[start:start + 4])
            ends = end_offsets(stack.kafka, topic)
            wait_for(lambda ends=ends: caught_up(engine, topic, ends), what="the runner to reach the end")
    reads = SqlReadModel(engine)
    registry = Registry(stack.registry)
    try:
        serde = Serde(registry, EVENTS_SUBJECT)
        everything = timetravel.tenant_events(stack.kafka, serde, acme, topic)
        served, read = set(), []
        for moment in sorted({e.occurred_at for e in everything} | {T0 - timedelta(days=1)}):
            expected = timetravel.replay(everything, moment)
            snapshot = reads.snapshot(acme, moment, topic=topic)
            assert snapshot is not None  # its partition was counted from its first offset
            served.add(snapshot.next_offset)
            assert snapshot.next_offset == 0 or snapshot.occurred_until <= moment
            tail = timetravel.tenant_events(stack.kafka, serde, acme, topic, after=snapshot)
            read.append(len(tail))
            assert timetravel.replay(tail, moment, snapshot.rows) == expected, moment
            assert snapshot.events + sum(1 for e in tail if e.occurred_at <= moment) == \
                sum(1 for e in everything if e.occurred_at <= moment)
            for sid in (ids["db1"], ids["db2"]):
                one = reads.snapshot(acme, moment, "services", sid, topic=topic)
                assert one is not None and set(one.rows["services"]) <= {sid}
                tail = timetravel.tenant_events(stack.kafka, serde, acme, topic, after=one)
                rows = timetravel.replay(tail, moment, one.rows, only=("services", sid))
                assert rows["services"].get(sid) == expected["services"].get(sid), (moment, sid)
        assert len(served) >= 3  # the beginning and two snapshots at least
        assert read[0] == 0 and 0 < min(n for n in read if n) < len(everything)  # the tails stop early

        rebuild(settings)  # the snapshots go; the organization's events are one stretch again
        after = reads.snapshot(acme, T0 + timedelta(days=1), topic=topic)
        assert after is not None and (after.next_offset, after.read_until) == (0, None)
        tail = timetravel.tenant_events(stack.kafka, serde, acme, topic, after=after)
        assert timetravel.replay(tail, T0 + timedelta(days=1), after.rows) == \
            timetravel.replay(everything, T0 + timedelta(days=1))
    finally:
        registry.close()


def test_rebuild_keeps_events_the_live_runner_applied_while_it_ran(stack, settings, database):
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    log = EventLog()
    _two_tenants(log, suffix)
    produce(stack.kafka, stack.registry, settings.events_topic, log.envelopes)
    topic = settings.events_topic
    appended: dict[str, dict[int, int]] = {}

    def append_when_replayed(progress: Progress) -> None:
        """Between the replay's end and the swap, the live runner applies more events."""
        if progress.phase != "replayed" or appended:
            return
        more = EventLog()
        more.organization(f"hooli-{suffix}", "Hooli")
        more.service(f"hooli-{suffix}", f"db9-{suffix}", "search")
        more.reject(f"acme-{suffix}", "DeleteService", "not_found", "service_id", "no such service")
        produce(stack.kafka, stack.registry, topic, more.envelopes)
        appended["ends"] = end_offsets(stack.kafka, topic)
        wait_for(lambda: caught_up(engine, topic, appended["ends"]), what="the live runner to apply the append")

    with running(settings):
        wait_for(lambda: caught_up(engine, topic, end_offsets(stack.kafka, topic)), what="the first events")
        result = rebuild(settings, [], append_when_replayed)
        assert result.positions == appended["ends"]
        after = EventLog()
        after.organization(f"umbrella-{suffix}", "Umbrella")
        produce(stack.kafka, stack.registry, topic, after.envelopes)
        ends = end_offsets(stack.kafka, topic)
        wait_for(lambda: caught_up(engine, topic, ends), what="the runner to continue after the swap")

    assert {r["id"] for r in dump(engine, "organizations")} >= {f"hooli-{suffix}", f"umbrella-{suffix}"}
    # The reference: the same log projected from scratch into another database.
    with fresh_database(stack.postgres_dsn) as reference_dsn:
        reference = engine_for(reference_dsn)
        with running(Settings(stack.kafka, stack.registry, reference_dsn, events_topic=topic,
                              dlq_topic=settings.dlq_topic)):
            wait_for(lambda: caught_up(reference, topic, ends), what="the reference projection")
        expected = _tables(reference)
        reference.dispose()
    assert _tables(engine) == expected


def test_an_existing_database_gains_the_backups_table_and_the_services_new_columns(database):
    """A platform whose read models predate backups: the projector's start creates the backups table
    and adds the services' new columns in place (NULL in the rows there are, until events set them
    or a rebuild fills them); the rows stay."""
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    log = EventLog()
    log.organization(f"acme-{suffix}", "Acme")
    log.service(f"acme-{suffix}", f"db1-{suffix}", "orders")
    tables = create_all(engine)
    with engine.begin() as conn:
        for envelope in log.envelopes:
            for projection in PROJECTIONS.values():
                projection.apply(conn, tables, envelope)
        conn.execute(text('DROP TABLE "backups"'))
        for column in ("backup_policy", "restore", "deleted_at"):
            conn.execute(text(f'ALTER TABLE "services" DROP COLUMN "{column}"'))
    before = {k: v for k, v in dump(engine, "services")[0].items()}

    create_all(engine)
    create_all(engine)  # and again: nothing left to do
    [row] = dump(engine, "services")
    assert row == {**before, "backup_policy": None, "restore": None, "deleted_at": None}
    assert dump(engine, "backups") == []
    log.backup_policy(f"acme-{suffix}", f"db1-{suffix}", pitr=False)
    with engine.begin() as conn:
        assert PROJECTIONS["services"].apply(conn, build_tables(), log.envelopes[-2])
    assert dump(engine, "services")[0]["backup_policy"]["pitr"] is False


def test_the_read_port_answers_backups_policies_and_windows_from_the_tables(database):
    """`SqlReadModel` over the projected rows: a service's backups newest first (a Running one read
    from its step, deleted ones only when asked), one backup, the policy, and the recovery window."""
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    log = EventLog()
    ids = _two_tenants(log, suffix)
    ids["bk3"] = f"bk3-{suffix}"
    running_op = log.backup(ids["acme"], ids["db1"], ids["bk3"])
    log.backup_steps(ids["acme"], ids["bk3"], running_op, committed=False)
    tables = create_all(engine)
    with engine.begin() as conn:
        for envelope in log.envelopes:
            for projection in PROJECTIONS.values():
                projection.apply(conn, tables, envelope)
    reads = SqlReadModel(engine)
    listed = reads.backups(ids["db1"])
    assert [(b.backup_id, b.status) for b in listed] == [
        (ids["bk3"], "Running"), (ids["bk2"], "Failed"), (ids["bk1"], "Completed")]
    assert [b.backup_id for b in reads.backups(ids["db1"], "Running")] == [ids["bk3"]]
    assert reads.backups(ids["db1"], "Requested") == [] and reads.backups(ids["db1"], "Deleted") == []
    one = reads.backup(ids["bk1"])
    assert one is not None and (one.tenant_id, one.size_bytes, one.tables) == (
        ids["acme"], 4096, {"orders": {"rows": 2, "checksum": "x"}})
    assert reads.backup("nope") is None and reads.backup_facts("nope") is None
    facts = reads.backup_facts(ids["db1"])
    assert facts is not None and facts.policy is not None
    assert (facts.engine, facts.policy.schedule, facts.policy.pitr, facts.deleted_at) == (
        "yugabyte", "0 3 * * *", True, None)
    now = datetime.now(UTC)
    reading = reads.recovery_window(ids["db1"], now)
    assert reading is not None and reading.window.pitr
    assert (reading.window.earliest, reading.window.latest) == (T0, now)
    assert [i.backup_id for i in reading.window.instants] == [ids["bk1"]]
    assert reading.gaps == ()  # the failed scheduled backup was asked before the oldest instant was taken
    reads.close()


# --- batches written set-wise against event-by-event writes, on PostgreSQL only --------------------

def _tricky_log(suffix: str) -> list:
    """A valid log, then the cases a set-wise write must get right: a service created and scaled and
    deleted in one stretch, changes to services created long before, a rejected command, an old event
    delivered again after newer ones, and a re-delivered stretch of the log."""
    log = EventLog()
    ids = _two_tenants(log, suffix)
    log.scale(ids["acme"], ids["db1"], LARGE, SMALL)  # a row from far back in the log
    for i in range(8):
        service = f"s{i}-{suffix}"
        log.service(ids["globex"], service, f"svc-{i}")
        if i % 2:
            log.scale(ids["globex"], service, SMALL, LARGE)
        if i % 3 == 0:
            log.delete(ids["globex"], service)
    log.reject(ids["globex"], "ScaleService", "not_found", "service_id", "no such service")
    first_creation = next(e for e in log.envelopes if e.aggregate_id == ids["db1"] and e.sequence == 1)
    return [*log.envelopes, first_creation, *log.envelopes[5:15]]


def _items(envelopes: list) -> list[Item]:
    return [Item(0, offset, envelope, None, None) for offset, envelope in enumerate(envelopes)]  # type: ignore[arg-type]


def _reference(engine, envelopes: list) -> dict[str, list[dict]]:
    """The rows one statement per event writes (each in a savepoint: a refused event is skipped)."""
    tables = create_all(engine)
    with engine.begin() as conn:
        for envelope in envelopes:
            with contextlib.suppress(DataError), conn.begin_nested():
                for projection in PROJECTIONS.values():
                    projection.apply(conn, tables, envelope)
    return _tables(engine)


def _batched(engine, items: list[Item], size: int) -> tuple[dict[str, list[dict]], list[Item]]:
    twins = create_all(engine, build_tables(REBUILD_SUFFIX))
    dead: list[Item] = []
    for start in range(0, len(items), size):
        with engine.begin() as conn:
            dead += apply_batch(conn, twins, PROJECTIONS, items[start:start + size], {}).dead
    return {name: dump(engine, twins.read_model(name).name) for name in READ_MODELS}, dead


@pytest.mark.parametrize("size", [1, 3, 17, 1000])
def test_batches_write_the_rows_one_statement_per_event_writes(database, size):
    """Whatever the batch boundaries: a row created and changed in one batch, a change to a row of an
    earlier batch, an older event after a newer one, events delivered twice. And once written, the
    whole log again changes nothing."""
    _dsn, engine = database
    envelopes = _tricky_log(uuid.uuid4().hex[:6])
    expected = _reference(engine, envelopes)
    assert expected["services"] and expected["operations"]
    written, dead = _batched(engine, _items(envelopes), size)
    assert written == expected and dead == []
    written, dead = _batched(engine, _items(envelopes), len(envelopes))
    assert written == expected


@pytest.mark.parametrize("stored_version", [None, 1, 2, 3, 4])
def test_a_batch_changes_any_stored_row_as_one_statement_per_event_would(database, stored_version):
    """A service created, scaled and deleted in one batch, over a stored row of each version (its
    columns unlike what the log says): each column is taken from the batch only where the event
    that set it is newer than the stored row."""
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    log = EventLog()
    log.service(f"acme-{suffix}", f"db1-{suffix}", "orders")
    log.scale(f"acme-{suffix}", f"db1-{suffix}", SMALL, LARGE)
    log.delete(f"acme-{suffix}", f"db1-{suffix}")
    stored = {"id": f"db1-{suffix}", "tenant_id": "someone", "name": "stored", "engine": "vitess",
              "engine_version": "1", "pop": "elsewhere", "size": "huge", "cpu": 9.0, "memory_gb": 9,
              "storage_gb": 9, "replicas": 9, "status": "Ready", "deletion_protection": True,
              "labels": {"stored": "yes"}, "created_at": T0, "updated_at": T0, "last_operation_id": "op-0",
              "version": stored_version}
    expected: dict[str, list[dict]] = {}
    for tables in (create_all(engine), create_all(engine, build_tables(REBUILD_SUFFIX))):
        if stored_version is not None:
            with engine.begin() as conn:
                upsert(conn, tables.services, stored)
        with engine.begin() as conn:
            if tables.suffix:
                apply_batch(conn, tables, PROJECTIONS, _items(log.envelopes), {})
            else:
                for envelope in log.envelopes:
                    for projection in PROJECTIONS.values():
                        projection.apply(conn, tables, envelope)
        expected.setdefault("services", dump(engine, tables.services.name))
        assert dump(engine, tables.services.name) == expected["services"], tables.suffix


def test_changes_out_of_sequence_order_in_one_batch_are_written_change_by_change(database):
    """A scale (sequence 2) before its creation (sequence 1) in one batch: no row is stored, so the
    scale does nothing and the creation inserts the row, as event by event."""
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    log = EventLog()
    log.organization(f"acme-{suffix}", "Acme")
    log.service(f"acme-{suffix}", f"db1-{suffix}", "orders")
    log.scale(f"acme-{suffix}", f"db1-{suffix}", SMALL, LARGE)
    requested, accepted, scaled = log.envelopes[2], log.envelopes[3], log.envelopes[4]
    envelopes = [*log.envelopes[:2], scaled, requested, accepted]
    expected = _reference(engine, envelopes)
    assert expected["services"][0]["status"] == "Requested"
    assert _batched(engine, _items(envelopes), len(envelopes))[0] == expected


def test_an_event_postgresql_refuses_is_isolated_and_the_rest_of_its_batch_is_written(database):
    _dsn, engine = database
    suffix = uuid.uuid4().hex[:6]
    log = EventLog()
    _two_tenants(log, suffix)
    log.organization(f"nul-{suffix}", "Nul\x00Corp")
    log.service(f"acme-{suffix}", f"db7-{suffix}", "after-the-refusal")
    envelopes = log.envelopes
    expected = _reference(engine, envelopes)
    written, dead = _batched(engine, _items(envelopes), len(envelopes))
    assert written == expected
    [refused] = dead
    assert refused.envelope is not None and refused.envelope.aggregate_id == f"nul-{suffix}"
    assert refused.poison is not None and refused.poison.startswith("projection organizations cannot apply")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_stops_the_runner_process_with_its_positions_committed(stack, database, topics):
    dsn, engine = database
    topic = topics("test.projections.events", 1)
    dlq = topics("test.projections.dlq", 1)
    log = EventLog()
    for i in range(300):
        log.organization(f"t{i}-{uuid.uuid4().hex[:6]}", f"Tenant {i}")
    produce(stack.kafka, stack.registry, topic, log.envelopes)
    port = _free_port()
    env = {**os.environ, **stack.kafka_env(), "DBAAS_REGISTRY_URL": stack.registry,
           "DBAAS_DATABASE_URL": dsn, "DBAAS_EVENTS_TOPIC": topic, "DBAAS_EVENTS_DLQ_TOPIC": dlq,
           "DBAAS_METRICS_PORT": str(port), "DBAAS_PROJECTIONS_BATCH_SIZE": "20", "DBAAS_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([sys.executable, "-m", "projections.runner"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: caught_up(engine, topic, {0: 1}), what="the runner's first batch")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    for name in ("dbaas_projection_events_applied_total", "dbaas_projection_batch_size",
                 "dbaas_projection_latency_seconds", "dbaas_projection_consumer_lag"):
        assert name in metrics
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "projector stopped" for line in lines)

    # Rows and positions were committed together: exactly the events before the stored position.
    stored = positions_of(engine, topic)
    position = stored[("operations", 0)]
    assert {stored[(name, 0)] for name in READ_MODELS} == {position}
    applied = log.envelopes[:position]
    assert {r["id"] for r in dump(engine, "operations")} == {
        e.payload.operation_id for e in applied if isinstance(e.payload, OperationAccepted)}
    assert len(dump(engine, "organizations")) == sum(1 for e in applied if e.aggregate_type == "organization")


# --- the query API -------------------------------------------------------------------------------

@pytest.fixture
def api_data(database):
    """Read models filled by the projectors directly (no Kafka needed to test queries)."""
    _dsn, engine = database
    tables = create_all(engine)
    log = EventLog()
    ids = {"org": log.organization("acme", "Acme"), "globex": log.organization("globex", "Globex")}
    for i, (engine_name, pop) in enumerate([("yugabyte", "local"), ("yugabyte", "local"), ("vitess", "frankfurt"),
                                            ("vitess", "frankfurt"), ("dragonfly", "local")]):
        ids[f"create{i}"] = log.service("acme", f"svc-{i}", f"db-{i}", engine=engine_name, pop=pop)
    log.service("globex", "svc-g1", "ledger", engine="mongodb", pop="singapore")
    log.service("globex", "svc-g2", "events", engine="mongodb", pop="singapore")
    ids["scale"] = log.scale("acme", "svc-0", SMALL, LARGE)
    ids["delete"] = log.delete("acme", "svc-4")
    ids["reject"] = log.reject("acme", "ScaleService", "invalid", "storage_gb", "storage only grows")
    with engine.begin() as conn:
        for envelope in log.envelopes:
            for projection in PROJECTIONS.values():
                projection.apply(conn, tables, envelope)
    return engine, ids


@pytest.fixture
def client(api_data):
    engine, _ids = api_data
    app = FastAPI()
    app.include_router(api.make_router(engine), prefix="/api/v1")
    with TestClient(app) as c:
        yield c


def _ids(client, **params) -> list[str]:
    resp = client.get("/api/v1/services", params=params)
    assert resp.status_code == 200, resp.text
    return [s["id"] for s in resp.json()["items"]]


def test_services_filter_by_tenant_engine_pop_status_and_name(client):
    assert _ids(client, tenant="acme") == ["svc-0", "svc-1", "svc-2", "svc-3", "svc-4"]
    assert _ids(client, org="globex") == ["svc-g1", "svc-g2"]
    assert _ids(client, tenant="acme", engine="vitess") == ["svc-2", "svc-3"]
    assert _ids(client, pop="singapore") == ["svc-g1", "svc-g2"]
    assert _ids(client, status="Deleting") == ["svc-4"]
    assert _ids(client, status="Scaling", tenant="acme") == ["svc-0"]
    assert _ids(client, name="ledger") == ["svc-g1"]
    assert _ids(client, tenant="nobody") == []
    assert client.get("/api/v1/services", params={"status": "Sleeping"}).status_code == 422
    assert client.get("/api/v1/services", params={"tenant": "acme", "org": "globex"}).status_code == 400


def test_services_page_with_an_opaque_cursor(client):
    everything = _ids(client, limit=500)
    assert len(everything) == 7
    pages, cursor = [], None
    while True:
        body = client.get("/api/v1/services", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        pages.append([s["id"] for s in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert [i for page in pages for i in page] == everything
    assert client.get("/api/v1/services", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/services", params={"limit": 501}).status_code == 422
    bad = client.get("/api/v1/services", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]


def test_single_service_operation_and_organizations(client, api_data):
    _engine, ids = api_data
    service = client.get("/api/v1/services/svc-0").json()
    assert service["resources"] == {"cpu": 2.0, "memory_gb": 8, "storage_gb": 50, "replicas": 3}
    assert (service["status"], service["tenant_id"], service["last_operation_id"]) == ("Scaling", "acme", ids["scale"])
    assert "version" not in service

    operation = client.get(f"/api/v1/operations/{ids['create0']}").json()
    assert (operation["type"], operation["state"], operation["done_steps"], operation["total_steps"],
            operation["aggregate_id"], operation["requested_by"]) == ("CreateService", "Accepted", 0, 3, "svc-0", "alice")
    rejected = client.get(f"/api/v1/operations/{ids['reject']}").json()
    assert (rejected["state"], rejected["reason_code"], rejected["field"], rejected["message"]) == (
        "Failed", "invalid", "storage_gb", "storage only grows")

    missing = client.get("/api/v1/services/nope")
    assert missing.status_code == 404 and missing.json() == {"detail": "service nope not found"}
    missing = client.get(f"/api/v1/operations/{uuid.uuid4()}")
    assert missing.status_code == 404 and "not projected yet" in missing.json()["detail"]

    orgs = client.get("/api/v1/organizations").json()
    assert [o["id"] for o in orgs["items"]] == ["acme", "globex"] and orgs["next_cursor"] is None


def test_the_router_takes_its_engine_from_an_overridable_dependency_and_publishes_openapi(api_data):
    engine, _ids = api_data
    app = FastAPI()
    app.include_router(api.router, prefix="/api/v1")
    app.dependency_overrides[api.get_engine] = lambda: engine
    app.dependency_overrides[api.get_scope] = lambda: api.UNRESTRICTED
    with TestClient(app) as c:
        assert c.get("/api/v1/organizations", params={"limit": 1}).json()["next_cursor"]
        spec = c.get("/openapi.json").json()
    assert {"/api/v1/organizations", "/api/v1/services", "/api/v1/services/{service_id}",
            "/api/v1/operations/{operation_id}"} <= set(spec["paths"])
    assert {"Service", "Operation", "ServicePage", "OrganizationPage"} <= set(spec["components"]["schemas"])
    assert "404" in spec["paths"]["/api/v1/operations/{operation_id}"]["get"]["responses"]


@pytest.mark.parametrize("size", [1, 4])
def test_a_second_creation_of_an_organization_makes_nobody_a_member(database, size):
    """A forked log (an organization created again at a sequence its members were already seen at,
    as a processor that never saw the tenant would decide it) is dead-lettered, whether it arrives in
    the batch of the first creation or a later one: the squatter is in no read model."""
    _dsn, engine = database
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    rightful, forked = EventLog(), EventLog()
    rightful.organization(tenant, "Acme", owner="alice")
    forked.organization(tenant, "Acme", owner="mallory")
    written, dead = _batched(engine, _items([*rightful.envelopes, *forked.envelopes]), size)
    assert [(m["subject"], m["role"]) for m in written["members"]] == [("alice", "org-owner")]
    assert [o["owner"] for o in written["organizations"]] == ["alice"]
    [refused] = [d for d in dead if isinstance(d.envelope.payload, OrganizationCreated)]
    assert refused.envelope.payload.owner == "mallory"
    assert refused.poison is not None and refused.poison.startswith("out_of_sequence: OrganizationCreated at sequence 1")
