"""End to end through the public surfaces: HTTP gateway and query API, and the `dbaas` CLI,
against the test platform's own control plane (command processor, projector, API)."""
from __future__ import annotations

import json
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from commands import operation_id
from schemas.registry import COMMANDS_SUBJECT, Registry, Serde
from tests.conftest import wait_for


def _operation(api, op_id: str, states=("Accepted", "Running", "Succeeded", "Failed")) -> dict:
    def get():
        r = api.get(f"/operations/{op_id}")
        return r.json() if r.status_code == 200 and r.json()["state"] in states else None
    return wait_for(get, timeout=60, what=f"operation {op_id} in {states}")


def _org(api) -> str:
    slug = f"e2e-{uuid.uuid4().hex[:8]}"
    r = api.post("/organizations", json={"slug": slug})
    assert r.status_code == 202
    assert _operation(api, r.json()["operation_id"])["state"] == "Succeeded"
    return slug


def _commands_end(stack) -> dict[int, int]:
    c = Consumer({**stack.kafka.client(), "group.id": "offsets"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition("dbaas.commands", p), timeout=10)[1] for p in range(12)}
    finally:
        c.close()


def _command_ids_since(stack, start: dict[int, int]) -> set[str]:
    """Ids of the commands published on `dbaas.commands` since `start` (other tests' sagas and PoP
    reports publish concurrently, so the offsets alone cannot say whether *this* request published)."""
    end = _commands_end(stack)
    serde = Serde(Registry(stack.registry), COMMANDS_SUBJECT)
    c = Consumer({**stack.kafka.client(), "group.id": "scan", "enable.auto.commit": False})
    c.assign([TopicPartition("dbaas.commands", p, off) for p, off in start.items() if end[p] > off])
    ids, want = set(), sum(end[p] - off for p, off in start.items())
    try:
        read = 0
        while read < want:
            for m in c.consume(500, 1.0):
                if not m.error():
                    read += 1
                    ids.add(serde.decode(m.value())["command_id"])
    finally:
        c.close()
    return ids


def test_service_lifecycle_through_the_gateway(api, stack):
    org = _org(api)
    r = api.post("/services", json={"org": org, "name": "orders", "engine": "yugabyte", "pop": "frankfurt",
                                     "size": "medium"})
    assert r.status_code == 202
    body = r.json()
    assert r.headers["Location"] == f"/api/v1/operations/{body['operation_id']}"
    op = _operation(api, body["operation_id"])
    assert op["state"] in ("Accepted", "Running") and op["total_steps"] == 3
    assert op["requested_by"] == stack.principal("alice")  # the subject bound to its issuer
    svc = api.get(f"/services/{body['service_id']}").json()
    assert (svc["name"], svc["tenant_id"]) == ("orders", org)
    assert svc["status"] in ("Requested", "Provisioning")  # Provisioning once the saga rendered it
    assert svc["resources"] == {"cpu": 2.0, "memory_gb": 8, "storage_gb": 100, "replicas": 3}

    r = api.post(f"/services/{body['service_id']}/scale", json={"replicas": 5})
    assert r.status_code == 202
    _operation(api, r.json()["operation_id"])
    assert wait_for(lambda: api.get(f"/services/{body['service_id']}").json()["resources"]["replicas"] == 5)
    r = api.delete(f"/services/{body['service_id']}")
    assert r.status_code == 202
    _operation(api, r.json()["operation_id"])
    assert wait_for(lambda: api.get(f"/services/{body['service_id']}").json()["status"] == "Deleting")

    listed = api.get("/services", params={"org": org}).json()
    assert [s["id"] for s in listed["items"]] == [body["service_id"]]


def test_idempotency_key_makes_a_retry_the_same_operation(api, stack):
    org = _org(api)
    key = str(uuid.uuid4())
    req = {"org": org, "name": "cache", "engine": "dragonfly", "pop": "local"}
    first = api.post("/services", json=req, headers={"Idempotency-Key": key}).json()
    second = api.post("/services", json=req, headers={"Idempotency-Key": key}).json()
    # The operation is the key scoped to the organization: another tenant's same key is another one.
    assert first == second and first["operation_id"] == operation_id(org, key)
    _operation(api, first["operation_id"])
    items = wait_for(lambda: api.get("/services", params={"org": org}).json()["items"])
    assert len(items) == 1
    # The same key with another body is refused up front, not answered with the first operation.
    other = api.post("/services", json={**req, "name": "other"}, headers={"Idempotency-Key": key})
    assert other.status_code == 409 and "already used for a different request" in other.json()["detail"]


@pytest.mark.parametrize("body, field, text", [
    ({"name": "x", "engine": "yugabyte", "pop": "frankfurt"}, "org", "Field required"),
    ({"org": "acme", "name": "x", "engine": "mysql", "pop": "frankfurt"}, "engine", "choose one of"),
    ({"org": "acme", "name": "Bad_Name", "engine": "vitess", "pop": "lagos"}, "name", "lowercase"),
    ({"org": "acme", "name": "x", "engine": "vitess", "pop": "lagos", "replicas": "many"}, "replicas", "integer"),
], ids=["missing-org", "unknown-engine", "bad-name", "wrong-type"])
def test_malformed_requests_get_422_with_the_field_and_publish_nothing(api, stack, body, field, text):
    before = _commands_end(stack)
    key = str(uuid.uuid4())
    r = api.post("/services", json=body, headers={"Idempotency-Key": key})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any(d["loc"][-1] == field and text in d["msg"] for d in detail), detail
    assert key not in _command_ids_since(stack, before)


def test_unknown_ids_answer_404_and_openapi_lists_the_routes(api, stack):
    assert api.get(f"/services/{uuid.uuid4()}").status_code == 404
    assert api.post(f"/services/{uuid.uuid4()}/scale", json={"replicas": 3}).status_code == 404
    paths = httpx.get(stack.api + "/openapi.json").json()["paths"]
    for path in ("/api/v1/organizations", "/api/v1/services", "/api/v1/services/{service_id}",
                 "/api/v1/services/{service_id}/scale", "/api/v1/operations/{operation_id}"):
        assert path in paths
    assert httpx.post(stack.api + "/api/v1/organizations", json={"slug": "x"}).status_code == 401


def test_cli_flow_with_json_output_and_refusals(stack):
    org = f"cli-{uuid.uuid4().hex[:8]}"
    assert stack.dbaas("org", "create", org).returncode == 0
    created = stack.dbaas("service", "create", "orders", "--org", org, "--engine", "vitess", "--pop", "lagos",
                          "--json", check=True)
    doc = json.loads(created.stdout)
    assert doc["state"] in ("Accepted", "Running") and doc["operation_id"] and doc["service_id"]
    listed = json.loads(stack.dbaas("service", "list", "--org", org, "--json", check=True).stdout)
    assert [s["name"] for s in listed] == ["orders"]
    got = json.loads(stack.dbaas("service", "get", "orders", "--org", org, "--json", check=True).stdout)
    assert got["id"] == doc["service_id"] and got["engine"] == "vitess"
    scaled = json.loads(stack.dbaas("service", "scale", "orders", "--org", org, "--storage-gb", "50",
                                    "--json", check=True).stdout)
    waited = stack.dbaas("operation", "wait", scaled["operation_id"], "--until", "Accepted", "--json", check=True)
    assert json.loads(waited.stdout)["state"] == "Accepted"
    assert waited.stderr == ""  # --json turns progress off; stdout carries only the JSON document

    bad_enum = stack.dbaas("service", "create", "x", "--org", org, "--engine", "mysql", "--pop", "lagos")
    assert bad_enum.returncode != 0 and "choose one of: yugabyte, vitess" in bad_enum.stderr
    dup = stack.dbaas("service", "create", "orders", "--org", org, "--engine", "vitess", "--pop", "lagos")
    assert dup.returncode != 0 and "conflict" in dup.stderr and "already exists" in dup.stderr
    forbidden = stack.dbaas("service", "delete", "orders", "--org", org, subject="bob", orgs={org: ["org-member"]})
    assert forbidden.returncode != 0 and "needs one of the roles" in forbidden.stderr
    deleted = stack.dbaas("service", "delete", "orders", "--org", org, "--json", check=True)
    assert json.loads(deleted.stdout)["state"] == "Accepted"  # queued behind the scale
    queued = stack.dbaas("service", "create", "orders", "--org", org, "--engine", "mysql", "--pop", "lagos",
                         "--json", "--no-wait")
    assert queued.returncode != 0  # the gateway refuses it before anything is published
    member = stack.dbaas("service", "create", "again", "--org", org, "--engine", "vitess", "--pop", "lagos",
                         "--json", "--no-wait", subject="bob", orgs={org: ["org-member"]})
    assert member.returncode != 0 and "org-member" in member.stderr  # a fast 403: nothing published
    stranger = stack.dbaas("service", "list", "--org", org, subject="mallory")
    assert stranger.returncode != 0 and "among yours" in stranger.stderr


def test_processes_expose_metrics(stack):
    assert "dbaas_commands_judged_total" in stack.metrics("command-processor")
    assert "dbaas_projection_latency_seconds" in stack.metrics("projector")
    assert "dbaas_http_requests_total" in httpx.get(stack.api + "/metrics/").text
