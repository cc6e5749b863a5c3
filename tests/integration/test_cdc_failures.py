"""CDC connectors failing and the platform's Connect restarting, in PoP local: a connector that
stays failed through the local PoP agent's restarts becomes `CdcConnectorFailed` (the service's
stream shows Failed with Connect's reason) and a critical alert on `dbaas.alerts.{tenant}`,
resolved by disabling it, which still leaves nothing behind; a Connect restart loses no change:
rows written while Connect is down arrive once it is back."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import psycopg

from schemas import alerts_topic
from schemas.registry import ALERTS_SUBJECT
from tests.conftest import wait_for
from tests.integration.conftest import operation
from tests.integration.test_cdc_e2e import FINISHED, _consume_all, _create, _enable, _held
from tests.integration.test_scheduler import Tail


def _pid(stack, name: str) -> int:
    return int(Path(stack.home, "run", name).read_text().split()[0])  # "<pid> <start time>"


def _stream(api, service: str) -> dict:
    return api.get(f"/services/{service}").json()["cdc"]


def test_a_connector_that_stays_failed_is_recorded_and_alerted_and_disabling_clears_it(stack, api, org):
    service = _create(api, org, "broken", "yugabyte")
    creds = api.get(f"/services/{service}/credentials").json()
    with psycopg.connect(creds["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = _enable(api, service)
    name = stream["connector"]

    # the connector breaks behind the platform's back: it now streams a publication that is not there
    config = httpx.get(f"{stack.connect}/connectors/{name}/config", timeout=10).json()
    r = httpx.put(f"{stack.connect}/connectors/{name}/config", timeout=30,
                  json={**config, "publication.name": "no_such_publication", "publication.autocreate.mode": "disabled"})
    assert r.status_code == 200, r.text

    failed = wait_for(lambda: (s := _stream(api, service))["status"] == "Failed" and s, timeout=180,
                      what="the connector to be reported failed after its restarts")
    assert "failed after 2 restarts" in failed["reason"], failed
    alerts = Tail(stack, alerts_topic(org), ALERTS_SUBJECT)
    try:
        [raised] = alerts.until(lambda rs: [a for a in rs if a["kind"] == "cdc_connector_failed"], "the alert",
                                timeout=60)[:1]
        assert (raised["state"], raised["severity"], raised["service_id"]) == ("raised", "critical", service)

        r = api.delete(f"/services/{service}/cdc")
        done = operation(api, r.json()["operation_id"], lambda o: o["state"] in FINISHED, "CDC to be disabled",
                         timeout=180)
        assert done["state"] == "Succeeded", done
        resolved = alerts.until(lambda rs: [a for a in rs if a["alert_id"] == raised["alert_id"]
                                            and a["state"] == "resolved"], "the alert resolved", timeout=60)
        assert resolved
    finally:
        alerts.close()
    assert _held(stack, name) == (False, False, False)


def test_a_connect_restart_loses_no_change(stack, api, org):
    service = _create(api, org, "steady", "yugabyte")
    creds = api.get(f"/services/{service}/credentials").json()
    with psycopg.connect(creds["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY)")
        conn.execute("INSERT INTO events SELECT generate_series(1, 50)")
    _enable(api, service, ["events"])
    topic = f"dbaas.cdc.yugabyte.{org}.events"
    assert sorted(k["id"] for k, _ in _consume_all(stack, topic, 50)) == list(range(1, 51))

    pid = _pid(stack, "connect.pid")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), timeout=60, what="Connect to stop")
    try:
        with psycopg.connect(creds["uri"], autocommit=True) as conn:  # written while Connect is down
            conn.execute("INSERT INTO events SELECT generate_series(51, 100)")
    finally:
        stack.stack_cli("up", "--json")

    ids = [k["id"] for k, _ in _consume_all(stack, topic, 100, timeout=180)]
    assert sorted(set(ids)) == list(range(1, 101))  # every row; at least once (a replay may repeat some)
    assert _stream(api, service)["status"] == "Running"
    r = api.delete(f"/services/{service}/cdc")  # its slot would hold WAL for as long as the test platform runs
    assert operation(api, r.json()["operation_id"], lambda o: o["state"] in FINISHED, "CDC to be disabled",
                     timeout=180)["state"] == "Succeeded"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
