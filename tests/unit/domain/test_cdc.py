"""Change data capture as `decide` judges it: enabling and disabling are operations (render,
commit, PoP report) of the service admins, engines without a Debezium source are refused as
unsupported, a connector that stays failed after it ran is recorded, and deleting a service
removes its connector first."""

from __future__ import annotations

import pytest
from domain_builders import DB1, MEMBER, SYSTEM, TENANT, cdc_report, cdc_saga, cmd, op, run, saga

from commands import (
    CreateOrganization,
    CreateService,
    DeleteService,
    DisableCdc,
    EnableCdc,
    RecordCdcStepFailed,
)
from commands.cdc import connector_name, disable_operation_id
from events import (
    CdcConnectorFailed,
    CdcConnectorRegistered,
    CdcDisabled,
    CdcDisableRequested,
    CdcEnableRequested,
    CdcStatus,
    CommandRejected,
    OperationAccepted,
    OperationStarted,
    ServiceDeletionRequested,
)

ORG = cmd(CreateOrganization(TENANT, "Acme"))


def ready(engine: str = "yugabyte") -> list:
    create = cmd(CreateService(DB1, "orders", engine, "local", "small"))
    return [ORG, create, *saga(DB1, op(create), pop="local")]


ENABLE = cmd(EnableCdc(DB1, ("orders",)))
RUNNING = [*ready(), ENABLE, *cdc_saga(DB1, op(ENABLE))]


def rejection(produced) -> CommandRejected:
    [rejected] = [e.payload for e in produced if isinstance(e.payload, CommandRejected)]
    return rejected


def test_enabling_is_an_operation_that_names_the_connector_and_its_tables() -> None:
    state, produced = run([*ready(), ENABLE])
    accepted, requested = produced[-1].payload, produced[-2].payload

    assert isinstance(accepted, OperationAccepted) and accepted.total_steps == 3
    assert requested == CdcEnableRequested(DB1, op(ENABLE), "orders", "yugabyte", "local",
                                           connector_name(TENANT, DB1), ("orders",))
    assert state.cdc[DB1].status is CdcStatus.ENABLING


def test_the_pop_reporting_it_running_registers_it() -> None:
    state, produced = run(RUNNING)

    assert isinstance(produced[-1].payload, CdcConnectorRegistered)
    assert state.cdc[DB1].status is CdcStatus.RUNNING


@pytest.mark.parametrize("engine", ["dragonfly", "aerospike"])
def test_an_engine_without_a_debezium_source_is_refused_unsupported(engine: str) -> None:
    pop = "local" if engine == "dragonfly" else "frankfurt"
    create = cmd(CreateService(DB1, "cache", engine, pop, "small"))
    enable = cmd(EnableCdc(DB1))
    _, produced = run([ORG, create, *saga(DB1, op(create), pop=pop), enable])

    refused = rejection(produced)
    assert (refused.reason_code, refused.field) == ("unsupported", "engine")
    assert "no change-data-capture source" in refused.message


@pytest.mark.parametrize("tables, field", [
    (("Orders",), "tables[0]"),
    (("a.b.c",), "tables[0]"),
    (("orders", "orders"), "tables"),
], ids=["uppercase", "three parts", "twice"])
def test_a_table_that_cannot_name_a_topic_is_invalid(tables, field: str) -> None:
    _, produced = run([*ready(), cmd(EnableCdc(DB1, tables))])

    refused = rejection(produced)
    assert (refused.reason_code, refused.field) == ("invalid", field)


def test_only_the_service_admins_enable_it() -> None:
    _, produced = run([*ready(), cmd(EnableCdc(DB1), actor=MEMBER)])

    assert rejection(produced).reason_code == "forbidden"


def test_a_service_not_ready_yet_is_refused() -> None:
    create = cmd(CreateService(DB1, "orders", "yugabyte", "local", "small"))
    _, produced = run([ORG, create, cmd(EnableCdc(DB1))])

    refused = rejection(produced)
    assert refused.reason_code == "conflict" and "not ready yet" in refused.message


def test_one_cdc_operation_at_a_time() -> None:
    _, produced = run([*ready(), ENABLE, cmd(DisableCdc(DB1))])

    refused = rejection(produced)
    assert refused.reason_code == "conflict" and op(ENABLE) in refused.message


def test_disabling_removes_the_connector() -> None:
    disable = cmd(DisableCdc(DB1))
    state, produced = run([*RUNNING, disable, *cdc_saga(DB1, op(disable), "Removed")])

    assert [type(e.payload) for e in produced[-5:]] == [CdcDisableRequested, OperationAccepted,
                                                        type(produced[-3].payload), type(produced[-2].payload),
                                                        CdcDisabled]
    assert state.cdc[DB1].status is CdcStatus.DISABLED


def test_disabling_what_is_not_enabled_is_refused() -> None:
    _, produced = run([*ready(), cmd(DisableCdc(DB1))])

    assert rejection(produced).reason_code == "conflict"


def test_a_connector_that_stays_failed_after_it_ran_is_recorded_and_can_recover() -> None:
    state, produced = run([*RUNNING, cdc_report(DB1, op(ENABLE), "Failed", reason="task 0 FAILED")])

    failed = produced[-1].payload
    assert isinstance(failed, CdcConnectorFailed) and failed.code == "connector_failed"
    assert "task 0 FAILED" in failed.reason
    assert state.cdc[DB1].status is CdcStatus.FAILED

    state, produced = run([cdc_report(DB1, op(ENABLE), "Running")], state)
    assert isinstance(produced[-1].payload, CdcConnectorRegistered)
    assert state.cdc[DB1].status is CdcStatus.RUNNING


def test_a_failed_connector_can_be_disabled() -> None:
    disable = cmd(DisableCdc(DB1))
    state, _ = run([*RUNNING, cdc_report(DB1, op(ENABLE), "Failed"), disable,
                    *cdc_saga(DB1, op(disable), "Removed")])

    assert state.cdc[DB1].status is CdcStatus.DISABLED


def test_a_repeated_report_changes_nothing() -> None:
    state, _ = run(RUNNING)
    _, produced = run([cdc_report(DB1, op(ENABLE), "Running")], state)

    assert produced == []


def test_a_step_timing_out_fails_the_operation() -> None:
    _, produced = run([*ready(), ENABLE, cdc_saga(DB1, op(ENABLE))[0], cdc_saga(DB1, op(ENABLE))[1],
                       cmd(RecordCdcStepFailed(DB1, op(ENABLE), "pop-report", "no report in 600 s", "timed_out"),
                           actor=SYSTEM)])

    failed = produced[-1].payload
    assert isinstance(failed, CdcConnectorFailed) and (failed.code, failed.step) == ("timed_out", "pop-report")


def test_deleting_a_service_removes_its_connector_first() -> None:
    delete = cmd(DeleteService(DB1))
    state, produced = run([*RUNNING, delete])

    kinds = [type(e.payload) for e in produced[-4:]]
    assert kinds == [CdcDisableRequested, ServiceDeletionRequested, OperationAccepted, OperationStarted]
    removal = produced[-4].payload
    assert removal.reason == "service_deleted" and removal.operation_id == disable_operation_id(op(delete))

    state, produced = run(cdc_saga(DB1, disable_operation_id(op(delete)), "Removed"), state)
    assert isinstance(produced[-1].payload, CdcDisabled)


def test_deleting_a_service_without_cdc_emits_no_removal() -> None:
    _, produced = run([*ready(), cmd(DeleteService(DB1))])

    assert not any(isinstance(e.payload, CdcDisableRequested) for e in produced)


def test_another_pop_cannot_report_on_the_connector() -> None:
    _, produced = run([*ready(), ENABLE, *cdc_saga(DB1, op(ENABLE), pop="lagos")])

    assert rejection(produced).reason_code == "forbidden"
