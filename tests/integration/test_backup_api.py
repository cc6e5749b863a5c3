"""Backups, backup policies, recovery windows and restores through the HTTP API and the `dbaas` CLI
of the test platform: services Ready in PoP `local`, a policy (point-in-time recovery refused for
an engine without a log), a backup accepted as an operation of its own and listed, who may read
and who may write (a service-viewer reads, a stranger sees nothing), and restores judged against
the recovery window.

A backup is followed here until it is accepted and listed, not to its completion: what happens
after (its claim, the PoP's report) is asserted where those parts are tested."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import wait_for
from tests.integration.conftest import operation

LIVE = ("Requested", "Running", "Completed", "Failed")  # a backup accepted, then whatever came of it


def _ended(op: dict) -> bool:
    return op["state"] in ("Succeeded", "Failed", "Cancelled")


@pytest.fixture(scope="module")
def alice(stack):
    with httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def place(stack, alice) -> dict[str, str]:
    """An organization of alice's with a yugabyte service (`orders`), and two dragonfly ones (`cache`,
    backed up here, and `spare`, never backed up), Ready in PoP `local`."""
    org = f"bk-{uuid.uuid4().hex[:8]}"
    assert alice.post("/organizations", json={"slug": org}).status_code == 202
    wait_for(lambda: alice.get(f"/organizations/{org}/quotas").status_code == 200, what="the organization")
    created = {name: alice.post("/services", json={"org": org, "name": name, "engine": engine, "pop": "local"}).json()
               for name, engine in (("orders", "yugabyte"), ("cache", "dragonfly"), ("spare", "dragonfly"))}
    for name, accepted in created.items():
        done = operation(alice, accepted["operation_id"], _ended, f"{name} to be Ready", timeout=300)
        assert done["state"] == "Succeeded", done
    return {"org": org, **{name: accepted["service_id"] for name, accepted in created.items()}}


def _judged(client: httpx.Client, answer: httpx.Response) -> dict:
    assert answer.status_code == 202, answer.text
    assert answer.headers["Location"] == answer.json()["status_url"]
    return operation(client, answer.json()["operation_id"], lambda op: op["state"] != "Accepted" or
                     op["total_steps"] > 0, "the command to be judged")


def test_a_service_without_backups_has_an_empty_window_without_pitr(alice, place):
    window = alice.get(f"/services/{place['spare']}/recovery-window")
    assert window.status_code == 200, window.text
    body = window.json()
    assert (body["service_id"], body["engine"], body["pitr"], body["earliest"], body["latest"]) == (
        place["spare"], "dragonfly", False, None, None)
    assert body["instants"] == [] and body["gaps"] == []
    assert "restores backup instants only" in body["reason"]
    orders = alice.get(f"/services/{place['orders']}/recovery-window").json()
    assert (orders["pitr"], orders["instants"]) == (False, [])


def test_a_policy_is_set_and_read_and_pitr_is_refused_for_an_engine_without_a_log(alice, place):
    refused = _judged(alice, alice.put(f"/services/{place['cache']}/backup-policy", json={"pitr": True}))
    assert (refused["state"], refused["reason_code"], refused["field"]) == ("Failed", "unsupported", "pitr")
    assert "restores backup instants only" in refused["message"]
    assert alice.put(f"/services/{place['orders']}/backup-policy",
                     json={"schedule": "every night"}).status_code == 422

    policy = {"schedule": "0 3 1 1 *", "retain_count": 7, "retain_days": 30, "pitr": True}
    accepted = _judged(alice, alice.put(f"/services/{place['orders']}/backup-policy", json=policy))
    assert (accepted["type"], accepted["state"]) == ("SetBackupPolicy", "Succeeded")
    read = wait_for(lambda: (r := alice.get(f"/services/{place['orders']}/backup-policy").json())["set_at"] and r,
                    what="the policy in the read model")
    assert {k: read[k] for k in policy} == policy and read["pitr_supported"] is True
    service = alice.get(f"/services/{place['orders']}").json()
    assert service["backup_policy"]["pitr"] is True and service["restored_from"] is None
    cache = alice.get(f"/services/{place['cache']}/backup-policy").json()
    assert (cache["pitr"], cache["pitr_supported"], cache["set_at"]) == (False, False, None)

    window = alice.get(f"/services/{place['orders']}/recovery-window").json()
    assert window["pitr"] is False and "no completed backup" in window["reason"]


def test_a_backup_is_an_operation_and_shows_in_the_services_backups(alice, place):
    key = str(uuid.uuid4())
    answer = alice.post(f"/services/{place['orders']}/backups", json={}, headers={"Idempotency-Key": key})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    again = alice.post(f"/services/{place['orders']}/backups", json={}, headers={"Idempotency-Key": key})
    assert again.json() == accepted  # the same request: the same backup, the same operation
    op = operation(alice, accepted["operation_id"], lambda o: True, "the backup's operation")
    assert (op["type"], op["aggregate_id"], op["total_steps"]) == ("BackupService", accepted["backup_id"], 3)
    assert op["state"] in ("Accepted", "Running", "Succeeded", "Failed") and op["reason_code"] != "conflict"

    listed = wait_for(lambda: alice.get(f"/services/{place['orders']}/backups").json()["items"],
                      what="the backup in the list")
    assert [b["backup_id"] for b in listed] == [accepted["backup_id"]]
    backup = alice.get(f"/backups/{accepted['backup_id']}").json()
    assert backup["status"] in LIVE and backup["pitr"] is True  # the policy archives the log
    assert (backup["service_id"], backup["service_name"], backup["engine"], backup["pop"], backup["slot"]) == (
        place["orders"], "orders", "yugabyte", "local", None)
    assert backup["operation_id"] == accepted["operation_id"]
    if backup["status"] in ("Requested", "Running"):  # one backup of a service runs at a time
        second = _judged(alice, alice.post(f"/services/{place['orders']}/backups"))
        assert (second["state"], second["reason_code"]) == ("Failed", "conflict")
        assert accepted["backup_id"] in second["message"]
        deleting = _judged(alice, alice.delete(f"/backups/{accepted['backup_id']}"))
        assert (deleting["state"], deleting["reason_code"]) == ("Failed", "conflict")
        restoring = _judged(alice, alice.post(f"/services/{place['orders']}/restore",
                                              json={"name": "orders-copy", "backup_id": accepted["backup_id"]}))
        assert (restoring["state"], restoring["reason_code"]) == ("Failed", "conflict")
        assert "only a completed backup can be restored" in restoring["message"]


def test_the_cli_backs_up_lists_and_shows_the_policy(stack, place):
    org = place["org"]
    created = stack.dbaas("backup", "create", "cache", "--org", org, "--json")
    assert created.returncode == 0, created.stderr
    accepted = json.loads(created.stdout)
    assert accepted["state"] in ("Accepted", "Running", "Succeeded") and accepted["service_id"] == place["cache"]
    listed = wait_for(lambda: json.loads(stack.dbaas("backup", "list", "cache", "--org", org, "--json",
                                                     check=True).stdout), what="the backup in the CLI's list")
    assert [b["backup_id"] for b in listed] == [accepted["backup_id"]] and listed[0]["status"] in LIVE
    table = stack.dbaas("backup", "list", "cache", "--org", org, check=True).stdout
    assert accepted["backup_id"] in table and "on demand" in table
    shown = json.loads(stack.dbaas("backup", "get", accepted["backup_id"], "--json", check=True).stdout)
    assert shown["service_name"] == "cache"

    refused = stack.dbaas("backup", "policy", "cache", "--org", org, "--pitr")
    assert refused.returncode == 1 and "unsupported" in refused.stderr
    assert stack.dbaas("backup", "policy", "cache", "--org", org, "--schedule", "0 4 1 1 *", "--retain-count",
                       "3").returncode == 0
    policy = wait_for(lambda: (p := json.loads(stack.dbaas("backup", "policy", "cache", "--org", org, "--json",
                                                           check=True).stdout))["set_at"] and p,
                      what="the policy the CLI set")
    assert (policy["schedule"], policy["retain_count"], policy["retain_days"], policy["pitr"]) == (
        "0 4 1 1 *", 3, 0, False)
    assert "0 4 1 1 * (UTC)" in stack.dbaas("backup", "policy", "cache", "--org", org, check=True).stdout
    window = json.loads(stack.dbaas("service", "recovery-window", "cache", "--org", org, "--json",
                                    check=True).stdout)
    assert window["pitr"] is False and "instants only" in window["reason"]


def test_a_service_viewer_reads_backups_but_changes_nothing(stack, place):
    viewer = stack.auth("vic", {place["org"]: ["service-viewer"]})
    with httpx.Client(base_url=stack.api + "/api/v1", headers=viewer, timeout=30) as vic:
        assert vic.get(f"/services/{place['orders']}/backups").status_code == 200
        assert vic.get(f"/services/{place['orders']}/backup-policy").status_code == 200
        assert vic.get(f"/services/{place['spare']}/recovery-window").status_code == 200
        for method, path, body in (("POST", f"/services/{place['orders']}/backups", {}),
                                   ("PUT", f"/services/{place['orders']}/backup-policy", {"pitr": False}),
                                   ("POST", f"/services/{place['orders']}/restore",
                                    {"name": "mine", "backup_id": str(uuid.uuid4())})):
            answer = vic.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert "needs one of the roles org-owner, org-admin, service-admin" in answer.text
    cli = stack.dbaas("backup", "create", "orders", "--org", place["org"], subject="vic",
                      orgs={place["org"]: ["service-viewer"]})
    assert cli.returncode == 1 and "needs one of the roles" in cli.stderr


def test_another_organizations_user_finds_nothing(stack, alice, place):
    backup_id = alice.get(f"/services/{place['orders']}/backups").json()["items"][0]["backup_id"]
    stranger = stack.auth("mallory", {f"elsewhere-{uuid.uuid4().hex[:6]}": ["org-owner"]})
    with httpx.Client(base_url=stack.api + "/api/v1", headers=stranger, timeout=30) as mallory:
        for method, path, body in (("GET", f"/services/{place['orders']}/backups", None),
                                   ("GET", f"/backups/{backup_id}", None),
                                   ("DELETE", f"/backups/{backup_id}", None),
                                   ("GET", f"/services/{place['orders']}/backup-policy", None),
                                   ("PUT", f"/services/{place['orders']}/backup-policy", {"pitr": False}),
                                   ("GET", f"/services/{place['orders']}/recovery-window", None),
                                   ("POST", f"/services/{place['orders']}/backups", {}),
                                   ("POST", f"/services/{place['orders']}/restore",
                                    {"name": "stolen", "backup_id": backup_id})):
            answer = mallory.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert place["org"] not in answer.text


def test_a_restore_names_one_source_and_a_time_outside_the_window_is_rejected_with_it(stack, alice, place):
    now = datetime.now(UTC)
    both = alice.post(f"/services/{place['orders']}/restore",
                      json={"name": "copy", "backup_id": str(uuid.uuid4()), "to_time": now.isoformat()})
    assert both.status_code == 422 and "exactly one of backup_id" in both.text
    naive = alice.post(f"/services/{place['orders']}/restore",
                       json={"name": "copy", "to_time": now.replace(tzinfo=None).isoformat()})
    assert naive.status_code == 422 and "time zone" in naive.text

    # a day ago: before the service existed, so outside its window whatever its backups
    answer = alice.post(f"/services/{place['orders']}/restore",
                        json={"name": "orders-then", "to_time": (now - timedelta(days=1)).isoformat()})
    assert answer.status_code == 202, answer.text
    assert answer.json()["service_id"] not in (place["orders"], None)
    rejected = _judged(alice, answer)
    assert (rejected["type"], rejected["state"], rejected["reason_code"], rejected["field"]) == (
        "RestoreService", "Failed", "invalid", "to_time")
    assert "outside the recovery window" in rejected["message"]
    window = alice.get(f"/services/{place['orders']}/recovery-window").json()
    said = ("empty (no backup with point-in-time recovery)" if not window["pitr"]
            else f"from {datetime.fromisoformat(window['earliest']).isoformat()}")
    assert said in rejected["message"], (window, rejected["message"])

    instants_only = _judged(alice, alice.post(f"/services/{place['cache']}/restore",
                                              json={"name": "cache-then", "to_time": now.isoformat()}))
    assert (instants_only["state"], instants_only["reason_code"]) == ("Failed", "unsupported")

    cli = stack.dbaas("service", "restore", "orders", "--org", place["org"], "--to-time",
                      (now - timedelta(days=2)).isoformat(), "--name", "orders-cli")
    assert cli.returncode == 1 and "outside the recovery window" in cli.stderr
    neither = stack.dbaas("service", "restore", "orders", "--org", place["org"], "--name", "x")
    assert neither.returncode == 2 and "one of the arguments --to-time --backup is required" in neither.stderr
