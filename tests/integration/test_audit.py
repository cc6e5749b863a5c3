"""Audit and time travel on the test platform: every judged command and every event of an
organization lands once on its `dbaas.audit.{tenant}` topic (90-day retention) with actor, reason
and correlation id; the audit API filters it; a replay of the event log as of a moment equals
the read model as it was then; the rate limit answers 429."""
from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.conftest import RATE_LIMIT, wait_for
from tests.integration.kafka_support import read_events


def _client(stack, subject="alice", orgs=None):
    return httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(subject, orgs), timeout=60)


def _op(c, op_id, predicate=lambda o: o["state"] != "Accepted"):
    def get():
        r = c.get(f"/operations/{op_id}")
        return r.json() if r.status_code == 200 and predicate(r.json()) else None
    return wait_for(get, timeout=120, what=f"operation {op_id}")


def _org(c, prefix="audit"):
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _op(c, c.post("/organizations", json={"slug": slug}).json()["operation_id"])
    return slug


def _report(stack, tenant, service_id, op_id, phase="Ready"):
    stack.report("frankfurt", tenant, service_id, op_id, phase, endpoint="db.example:5433",
                 credentials="gAAAAAB-an-encrypted-token")


def test_every_command_and_event_is_audited_once_with_actor_reason_and_correlation(stack):
    with _client(stack) as alice:
        org = _org(alice)
        created = alice.post("/services", json={"org": org, "name": "orders", "engine": "scylla", "pop": "frankfurt"},
                             headers={"X-Correlation-Id": "corr-audit-1"}).json()
        _op(alice, created["operation_id"], lambda o: o["done_steps"] >= 2)
        _report(stack, org, created["service_id"], created["operation_id"])
        _op(alice, created["operation_id"], lambda o: o["state"] == "Succeeded")
        refused = alice.post("/services", json={"org": org, "name": "orders", "engine": "scylla", "pop": "lagos"}).json()
        _op(alice, refused["operation_id"])

        tenant_events = [e for e in read_events(stack, "dbaas.events", 12) if e.tenant_id == org]

        def audited():
            page = alice.get(f"/organizations/{org}/audit", params={"limit": 1000}).json()["items"]
            return page if len(page) >= len(tenant_events) else None
        records = wait_for(audited, timeout=60, what="every event audited")

    assert Counter(r["audit_id"] for r in records) == Counter(e.event_id for e in tenant_events)  # once each
    commands = {r["action"]: r for r in records if r["kind"] == "command" and r["outcome"] == "accepted"}
    assert commands["CreateService"]["actor"] == stack.principal("alice")  # bound to its issuer
    assert commands["CreateService"]["correlation_id"] == "corr-audit-1"
    [rejection] = [r for r in records if r["outcome"] == "rejected"]
    assert (rejection["action"], rejection["reason_code"], rejection["actor"]) == ("CreateService", "conflict", stack.principal("alice"))
    assert "already exists" in rejection["message"]
    ready = next(r for r in records if r["action"] == "ServiceReady")
    assert ready["details"]["credentials"] == "<redacted>" and "gAAAA" not in json.dumps(records)

    with _client(stack) as alice:
        only = alice.get(f"/organizations/{org}/audit", params={"outcome": "rejected"}).json()["items"]
        assert [r["audit_id"] for r in only] == [rejection["audit_id"]]
        later = alice.get(f"/organizations/{org}/audit", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert later["items"] == []

    admin = AdminClient(stack.kafka.client())
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"dbaas.audit.{org}")
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == str(90 * 24 * 3600 * 1000)


def test_audit_is_for_owners_and_admins_of_the_organization(stack):
    with _client(stack) as alice:
        org = _org(alice)
    with _client(stack, "bob", {org: ["org-member"]}) as member, _client(stack, "mallory") as stranger:
        assert member.get(f"/organizations/{org}/audit").status_code == 403
        assert stranger.get(f"/organizations/{org}/audit").status_code == 404
    tail = stack.dbaas("audit", "tail", "--org", org, "--json", check=True)
    assert any(r["action"] == "CreateOrganization" for r in json.loads(tail.stdout))


def test_replay_as_of_a_moment_equals_the_read_model_then(stack):
    snapshots = []
    with _client(stack) as alice:
        org = _org(alice, "replay")
        created = alice.post("/services", json={"org": org, "name": "ledger", "engine": "mongodb",
                                                "pop": "frankfurt", "size": "small"}).json()
        sid, op = created["service_id"], created["operation_id"]

        def snap():
            moment = datetime.now(timezone.utc)
            snapshots.append((moment, alice.get(f"/services/{sid}").json()))
            # Events keep milliseconds: the next command must be issued in a later millisecond.
            wait_for(lambda: datetime.now(timezone.utc) >= moment + timedelta(milliseconds=2), timeout=1,
                     interval=0.001, what="the clock to pass the snapshot's millisecond")

        _op(alice, op, lambda o: o["done_steps"] >= 2)
        snap()  # committed, awaiting the PoP
        _report(stack, org, sid, op)
        _op(alice, op, lambda o: o["state"] == "Succeeded")
        snap()  # Ready
        scale = alice.post(f"/services/{sid}/scale", json={"cpu": 2, "storage_gb": 20}).json()["operation_id"]
        _op(alice, scale, lambda o: o["done_steps"] >= 2)
        snap()  # Scaling, committed
        _report(stack, org, sid, scale)
        _op(alice, scale, lambda o: o["state"] == "Succeeded")
        snap()  # Ready, scaled
        delete = alice.delete(f"/services/{sid}").json()["operation_id"]
        _op(alice, delete, lambda o: o["done_steps"] >= 2)
        snap()  # Deleting

        for moment, live in snapshots:
            then = alice.get(f"/services/{sid}", params={"as_of": moment.isoformat()})
            assert then.status_code == 200, then.text
            assert then.json() == live, moment
        before = alice.get(f"/services/{sid}", params={"as_of": "2000-01-01T00:00:00+00:00"})
        assert before.status_code == 404 and "did not exist" in before.json()["detail"]
        assert alice.get(f"/services/{sid}", params={"as_of": "2026-01-01T00:00:00"}).status_code == 400

    moment, live = snapshots[1]
    replayed = stack.dbaas("audit", "replay", "--org", org, "--until", moment.isoformat(), "--json", check=True)
    doc = json.loads(replayed.stdout)
    [service] = doc["read_models"]["services"]
    assert (service["status"], service["cpu"]) == (live["status"], live["resources"]["cpu"]) == ("Ready", 1.0)
    assert "credentials" not in service


def test_the_rate_limit_answers_429_with_retry_after(stack):
    rate, burst = (float(x) for x in RATE_LIMIT.split("/"))
    with _client(stack) as alice:
        org = _org(alice, "ratelimit")
        answers = [alice.get(f"/organizations/{org}/members") for _ in range(int(burst) + 3)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(r.status_code in (200, 429) for r in answers)
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert sum(r.status_code == 200 for r in answers) <= burst + 1
    metrics = httpx.get(stack.api + "/metrics/", timeout=30).text
    assert f'dbaas_http_rate_limited_total{{tenant="{org}"}}' in metrics
    with _client(stack) as alice:  # the bucket refills at its rate
        wait_for(lambda: alice.get(f"/organizations/{org}/members").status_code == 200, timeout=5 / rate,
                 interval=1.0 / rate, what="the bucket to refill")
