"""PoP local's connector logic with fakes: which connectors to register, watch, remove and forget;
a failed connector restarted with a doubling back-off and reported Failed after the last restart,
Running again when it recovers; a registration Connect refuses is Failed with the reason; what the
render leaves to the PoP is filled in, and a reference PoP local cannot resolve is refused."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from operators.localpop.cdc import (
    ConnectorClaim,
    ConnectorRecord,
    ForgetConnector,
    InvalidConnector,
    LocalCdc,
    Register,
    RemoveConnector,
    WantedConnector,
    Watch,
    backoff,
    converter_registry_url,
    plan_connectors,
)
from operators.localpop.claims import CommitRef
from runtime.connect import ConnectorState, ConnectRefused, TaskState
from runtime.kafka import KafkaAccess

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLAIM = ConnectorClaim("acme", "svc-1", "yugabyte", "local", "cdc-0123", "io.debezium.connector.postgresql.PostgresConnector",
                       {"database.password": "${secrets:tenant-acme/cdc-0123:password}",
                        "value.converter.apicurio.registry.url": "${env:DBAAS_CONVERTER_REGISTRY_URL}",
                        "transforms.route.replacement": "dbaas.cdc.yugabyte.acme.$1"})
WANTED = WantedConnector("tenants/acme/local/cdc/svc-1.yaml", CLAIM, "op-1", "corr-1", "c0ffee")


class FakeDatabase:
    def login(self, tenant, service_id):
        return {"host": "127.0.0.1", "port": "5432", "username": "dbaas", "password": "s3cret", "database": "s_x"}


class FakeConnect:
    def __init__(self, states, refuse: str | None = None):
        self.states = list(states)
        self.puts: list[dict] = []
        self.restarts = 0
        self.refuse = refuse

    def put_config(self, name, config):
        if self.refuse:
            raise ConnectRefused(self.refuse)
        self.puts.append(config)

    def status(self, name):
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def restart_failed(self, name):
        self.restarts += 1


RUNNING = ConnectorState("cdc-0123", "RUNNING", (TaskState(0, "RUNNING"),))
FAILED = ConnectorState("cdc-0123", "RUNNING", (TaskState(0, "FAILED", "org.postgresql.util.PSQLException: boom\n\tat x"),))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def cdc(connect, clock=None, **kw) -> LocalCdc:
    return LocalCdc(connect, {"yugabyte": FakeDatabase()}, registry_url="http://r:8080/apis/ccompat/v7",
                    kafka=KafkaAccess("k:9092"), clock=lambda: T0, monotonic=clock or Clock(), **kw)


def test_registering_fills_in_what_the_pop_knows_and_reports_running():
    connect = FakeConnect([RUNNING])
    record = cdc(connect).register(WANTED)

    [config] = connect.puts
    assert config["database.password"] == "s3cret"
    assert config["value.converter.apicurio.registry.url"] == "http://r:8080/apis/registry/v2"
    assert config["transforms.route.replacement"] == "dbaas.cdc.yugabyte.acme.$1"  # not a reference
    assert config["connector.class"] == CLAIM.connector_class
    assert (record.phase, record.reported) == ("Running", False)


def test_a_reference_pop_local_cannot_resolve_is_refused():
    claim = ConnectorClaim(**{**CLAIM.__dict__, "config": {"x": "${file:/etc/secret:key}"}})
    with pytest.raises(InvalidConnector, match="does not provide"):
        cdc(FakeConnect([RUNNING])).resolve(claim)


def test_a_registration_connect_refuses_is_failed_with_its_reason():
    record = cdc(FakeConnect([RUNNING], refuse="Connector configuration is invalid")).register(WANTED)

    assert record.phase == "Failed" and "invalid" in record.reason


def test_a_failed_task_is_restarted_with_a_doubling_backoff_then_reported_failed():
    clock, connect = Clock(), FakeConnect([FAILED])
    local = cdc(connect, clock, max_restarts=3, max_backoff=60)
    record = ConnectorRecord(WANTED.path, "acme", "svc-1", "yugabyte", "cdc-0123", "op-1", "corr-1", "c0ffee",
                             "Running", T0.isoformat(), reported=True)
    waits = []
    while record.phase == "Running":
        before = record.restarts
        record = local.watch(record)
        if record.restarts > before:
            waits.append(record.next_restart - clock.t)
        clock.t += 1.0
    assert connect.restarts == 3 and waits == [2.0, 4.0, 8.0]
    assert record.phase == "Failed" and not record.reported
    assert "failed after 3 restarts" in record.reason and "boom" in record.reason


def test_a_failed_connector_that_recovers_is_reported_running_again_under_a_new_report():
    clock = Clock()
    failed = ConnectorRecord(WANTED.path, "acme", "svc-1", "yugabyte", "cdc-0123", "op-1", "corr-1", "c0ffee",
                             "Failed", T0.isoformat(), reason="x", reported=True, reports=1, restarts=3)
    record = cdc(FakeConnect([RUNNING]), clock).watch(failed)

    assert record.phase == "Running" and not record.reported
    assert record.report_id != failed.report_id


def test_the_backoff_doubles_up_to_its_most():
    assert [backoff(n, 10) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10, 10]


def record(phase="Running", reported=True, operation_id="op-1", path=WANTED.path) -> ConnectorRecord:
    return ConnectorRecord(path, "acme", "svc-1", "yugabyte", "cdc-0123", operation_id, None, "c0ffee", phase,
                           T0.isoformat(), reported=reported)


@pytest.mark.parametrize("wanted, records, step", [
    ({"acme/svc-1": WANTED}, {}, Register),
    ({"acme/svc-1": WANTED}, {"acme/svc-1": record(operation_id="op-0")}, Register),
    ({"acme/svc-1": WANTED}, {"acme/svc-1": record()}, Watch),
    ({}, {"acme/svc-1": record()}, RemoveConnector),
    ({}, {"acme/svc-1": record("Removed", reported=False)}, Watch),
    ({}, {"acme/svc-1": record("Removed", reported=True)}, ForgetConnector),
], ids=["new", "another operation", "known", "file gone", "removal unreported", "removal reported"])
def test_the_plan(wanted, records, step):
    [planned] = plan_connectors(wanted, records)
    assert isinstance(planned, step)


def test_a_file_that_cannot_be_read_never_removes_its_connector():
    assert plan_connectors({}, {"acme/svc-1": record()}, {WANTED.path}) == []


def test_the_converter_speaks_the_registrys_own_api():
    assert converter_registry_url("http://127.0.0.1:8081/apis/ccompat/v7") == "http://127.0.0.1:8081/apis/registry/v2"


def test_removal_reports_on_the_operation_that_removed_the_file():
    class Removing(FakeConnect):
        def remove(self, name):
            self.removed = name

    connect = Removing([RUNNING])
    gone = cdc(connect).remove(record(), CommitRef("beef", "op-2", "corr-2", "D"))

    assert connect.removed == "cdc-0123"
    assert (gone.phase, gone.operation_id, gone.reported) == ("Removed", "op-2", False)
