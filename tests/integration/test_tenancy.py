"""Tenancy on the test platform: every request needs a valid token; members and roles decide what
a caller may do; nobody reads or changes another organization's services — through any endpoint
or directly on the command topic."""
from __future__ import annotations

import json
import uuid

import httpx
import pytest

from commands import Actor, DeleteService, ScaleService, SetDeletionProtection, operation_id
from tests.conftest import wait_for
from tests.integration.kafka_support import command


def _client(stack, subject: str = "alice", orgs=None) -> httpx.Client:
    return httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(subject, orgs), timeout=30)


def _judged(c: httpx.Client, resp: httpx.Response) -> dict:
    assert resp.status_code == 202, resp.text
    op_id = resp.json()["operation_id"]

    def get():
        r = c.get(f"/operations/{op_id}")
        return r.json() if r.status_code == 200 and r.json()["state"] != "Accepted" else None
    return wait_for(get, what=f"operation {op_id} judged")


@pytest.fixture(scope="module")
def world(stack):
    """Organization `acme` of alice with one service and one operation; `globex` of mallory."""
    acme, globex = f"acme-{uuid.uuid4().hex[:6]}", f"globex-{uuid.uuid4().hex[:6]}"
    with _client(stack, "alice") as alice, _client(stack, "mallory") as mallory:
        assert _judged(alice, alice.post("/organizations", json={"slug": acme}))["state"] == "Succeeded"
        assert _judged(mallory, mallory.post("/organizations", json={"slug": globex}))["state"] == "Succeeded"
        created = alice.post("/services", json={"org": acme, "name": "orders", "engine": "vitess", "pop": "lagos"})
        assert _judged(alice, created)["state"] in ("Running", "Succeeded")
    return {"acme": acme, "globex": globex, "service": created.json()["service_id"],
            "operation": created.json()["operation_id"]}


def test_requests_without_a_valid_token_are_refused(stack):
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic YWxpY2U6eA=="},
                    {"Authorization": f"Bearer {stack.token('alice', exp=1_000_000)}"},
                    {"X-Dbaas-Subject": "alice", "X-Dbaas-Roles": "org-owner"}):
        r = httpx.get(stack.api + "/api/v1/services", headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert httpx.get(stack.api + "/healthz", timeout=30).status_code == 200  # probes need no token


def test_whoami_lists_memberships(stack, world):
    with _client(stack, "alice", {"hooli": ["org-member"]}) as alice:
        me = alice.get("/users/me").json()
    assert me["subject"] == "alice" and me["development_token"] is True
    orgs = {m["organization"]: m["roles"] for m in me["organizations"]}
    assert orgs[world["acme"]] == ["org-owner"] and orgs["hooli"] == ["org-member"]
    with _client(stack, "alice") as alice:
        users = {u["subject"]: u for u in alice.get("/users").json()}
    assert "alice" in users and "mallory" not in users  # only people who share an organization


def test_another_tenant_can_read_nothing_and_change_nothing(stack, world):
    acme, sid, op = world["acme"], world["service"], world["operation"]
    with _client(stack, "mallory") as m:
        assert acme not in [o["id"] for o in m.get("/organizations", params={"limit": 500}).json()["items"]]
        assert all(s["tenant_id"] != acme for s in m.get("/services", params={"limit": 500}).json()["items"])
        reads = [m.get("/services", params={"org": acme}), m.get(f"/services/{sid}"), m.get(f"/operations/{op}"),
                 m.get(f"/services/{sid}/credentials"), m.get(f"/organizations/{acme}/quotas"),
                 m.get(f"/organizations/{acme}/members"), m.get(f"/organizations/{acme}/audit"),
                 m.get(f"/organizations/{acme}/replay", params={"until": "2030-01-01T00:00:00Z"}),
                 m.get(f"/services/{sid}", params={"as_of": "2030-01-01T00:00:00Z"})]
        writes = [m.post("/services", json={"org": acme, "name": "evil", "engine": "vitess", "pop": "lagos"}),
                  m.post(f"/services/{sid}/scale", json={"cpu": 4}), m.delete(f"/services/{sid}"),
                  m.put(f"/services/{sid}/deletion-protection", json={"enabled": True}),
                  m.post(f"/operations/{op}/cancel"),
                  m.put(f"/organizations/{acme}/quotas", json={"max_services": 0, "total": {
                      "cpu": 0, "memory_gb": 0, "storage_gb": 0}}),
                  m.post(f"/organizations/{acme}/members", json={"subject": "mallory", "role": "org-owner"}),
                  m.put(f"/organizations/{acme}/members/alice", json={"role": "org-member"}),
                  m.delete(f"/organizations/{acme}/members/alice"),
                  m.post("/organizations", json={"slug": acme})]  # taking the slug over: judged, refused
        for r in reads + writes[:-1]:
            assert r.status_code == 404, (r.request.method, r.request.url, r.status_code, r.text)
            assert "orders" not in r.text and "alice" not in r.text
        taken = _judged(m, writes[-1])
        assert (taken["state"], taken["reason_code"]) == ("Failed", "conflict")

    # Straight onto the command topic, past the gateway: decide refuses too.
    publisher = stack.publisher()
    mallory = stack.principal("mallory")
    try:
        forged = [command(acme, DeleteService(sid), actor=Actor(mallory)),
                  command(acme, SetDeletionProtection(sid, True), actor=Actor(mallory)),
                  command(acme, ScaleService(sid, cpu=4), actor=Actor(mallory, ("org-member",)))]
        for c in forged:
            publisher.publish(c)
    finally:
        publisher.close()
    with _client(stack, "alice") as alice:
        for c in forged:
            op_id = operation_id(acme, c.command_id)
            op = wait_for(lambda: (r := alice.get(f"/operations/{op_id}")).status_code == 200 and r.json(),
                          what="the forged command judged")
            assert (op["state"], op["reason_code"]) == ("Failed", "forbidden")
        assert alice.get(f"/services/{sid}").json()["status"] != "Deleting"


def test_members_and_roles_through_the_api_and_cli(stack, world):
    acme, sid = world["acme"], world["service"]
    with _client(stack, "alice") as alice, _client(stack, "bob") as bob:
        assert bob.get(f"/services/{sid}").status_code == 404  # not a member yet
        added = _judged(alice, alice.post(f"/organizations/{acme}/members",
                                          json={"subject": "bob", "role": "service-viewer"}))
        assert added["state"] == "Succeeded"
        wait_for(lambda: bob.get(f"/services/{sid}").status_code == 200, what="bob to see the service")
        assert bob.get(f"/services/{sid}/credentials").status_code == 403
        denied = bob.post(f"/services/{sid}/scale", json={"cpu": 2})
        assert denied.status_code == 403 and "service-viewer" in denied.json()["detail"]
        members = {m["subject"]: m["role"] for m in alice.get(f"/organizations/{acme}/members").json()}
        assert members == {"alice": "org-owner", "bob": "service-viewer"}

        admin = _judged(alice, alice.put(f"/organizations/{acme}/members/bob", json={"role": "org-admin"}))
        assert admin["state"] == "Succeeded"
        escalation = _judged(bob, bob.post(f"/organizations/{acme}/members",
                                           json={"subject": "eve", "role": "org-owner"}))
        assert (escalation["state"], escalation["reason_code"]) == ("Failed", "forbidden")
        last_owner = _judged(bob, bob.delete(f"/organizations/{acme}/members/alice"))
        assert last_owner["reason_code"] == "forbidden"

    listed = stack.dbaas("member", "list", "--org", acme, "--json", check=True)
    assert {m["subject"] for m in json.loads(listed.stdout)} == {"alice", "bob"}
    removed = stack.dbaas("member", "remove", "bob", "--org", acme, "--json", check=True)
    assert json.loads(removed.stdout)["state"] == "Succeeded"
    with _client(stack, "bob") as bob:
        wait_for(lambda: bob.get(f"/services/{sid}").status_code == 404, what="bob to lose access")


def test_cli_login_with_the_development_issuer(stack, world, tmp_path):
    env_home = ["--home", str(stack.home)]
    printed = stack.cli("auth", "login", "--dev", "--user", "carol", "--org", world["acme"], "--role",
                        "service-viewer", "--print-token", *env_home)
    assert printed.stdout.count(".") == 2 and "development" in printed.stderr
    r = httpx.get(f"{stack.api}/api/v1/services/{world['service']}", timeout=30,
                  headers={"Authorization": f"Bearer {printed.stdout.strip()}"})
    assert r.status_code == 200
