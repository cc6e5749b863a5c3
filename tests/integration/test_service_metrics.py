"""Service metrics and alerts end to end on the test platform: the local PoP agent samples a
yugabyte service on its PostgreSQL server (the test platform samples every 5 s and counts a
claim's GiB as 32 MiB, `tests.conftest.PLATFORM_ENV`), `GET …/metrics` shows the samples, and the
alerts processor (Faust) raises one `storage_high` alert on `dbaas.alerts.{tenant}` once the
service's database passes 80 % of its storage — shown by `dbaas alerts list` — and resolves it,
under the same id, once the data is dropped. Vitess and dragonfly services are sampled on MariaDB
and Redis."""
from __future__ import annotations

import uuid

import psycopg
import pymysql
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.registry import ALERTS_SUBJECT, Registry, Serde
from tests.conftest import wait_for
from tests.integration.conftest import credentials as _credentials
from tests.integration.conftest import local_service as _create
from tests.integration.process_support import kill

MIB = 2**20


def _latest(api, service_id: str, predicate=lambda s: True, what: str = "a sample", timeout: float = 90) -> dict:
    def get():
        r = api.get(f"/services/{service_id}/metrics", params={"since": "15m", "step": "5s"})
        assert r.status_code == 200, r.text
        latest = r.json()["latest"]
        return r.json() if latest is not None and predicate(latest) else None
    return wait_for(get, timeout=timeout, interval=1, what=what)


class AlertTopic:
    """Every record of `dbaas.alerts.{tenant}` from its start."""

    def __init__(self, stack, tenant: str):
        self.topic = f"dbaas.alerts.{tenant}"
        self.serde = Serde(Registry(stack.registry), ALERTS_SUBJECT)
        self.records: list[dict] = []
        wait_for(lambda: self.topic in AdminClient(stack.kafka.client()).list_topics(timeout=10).topics,
                 timeout=120, what=f"topic {self.topic}")
        self.consumer = Consumer({**stack.kafka.client(), "group.id": f"test-{uuid.uuid4()}",
                                  "enable.auto.commit": False})
        parts = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in parts])

    def until(self, predicate, what: str, timeout: float = 90) -> list[dict]:
        def read():
            for msg in self.consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    self.records.append(self.serde.decode(msg.value()))
            return predicate(self.records)
        return wait_for(read, timeout=timeout, interval=0, what=what)

    def close(self) -> None:
        self.consumer.close()


def test_samples_show_in_the_api_and_a_full_service_raises_then_resolves_one_storage_alert(stack, api, org):
    service_id = _create(api, org, "metered", "yugabyte", storage_gb=1)
    creds = _credentials(api, service_id)

    doc = _latest(api, service_id, lambda s: s["storage_bytes"] > 0, "a sample of the new service")
    latest = doc["latest"]
    assert doc["engine"] == "yugabyte" and doc["name"] == "metered" and doc["points"]
    assert latest["storage_limit_bytes"] == 32 * MIB  # 1 GiB counted as 32 MiB on the test platform
    assert latest["max_connections"] == 20  # the service role's CONNECTION LIMIT
    assert 0 < latest["storage_used"] < 0.5

    with psycopg.connect(creds["uri"], connect_timeout=5, autocommit=True) as conn:
        conn.execute("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 32) AS pad "
                     "FROM generate_series(1, 20000) AS g")  # ~23 MB: past 80 % of 32 MiB
        # connections and transactions show in the samples
        full = _latest(api, service_id, lambda s: s["storage_used"] >= 0.8 and s["connections"] >= 1,
                       "a sample of the filled service")["latest"]
    assert full["transactions_per_s"] is not None

    alerts = AlertTopic(stack, org)
    try:
        [raised] = alerts.until(lambda rs: [r for r in rs if r["service_id"] == service_id
                                            and r["kind"] == "storage_high"], "the storage alert")
        assert (raised["state"], raised["severity"], raised["source"]) == ("raised", "warning", "alerts")
        assert "of its storage" in raised["message"] and raised["resolved_at"] is None

        api_alerts = wait_for(lambda: [a for a in api.get(f"/organizations/{org}/alerts").json()["items"]
                                       if a["alert_id"] == raised["alert_id"]], what="the alert in the read model")
        assert api_alerts[0]["state"] == "raised"
        listed = stack.dbaas("alerts", "list", "--org", org, "--open")
        assert listed.returncode == 0, listed.stderr
        assert "storage_high" in listed.stdout and "RAISED" in listed.stdout
        chart = stack.dbaas("service", "metrics", "metered", "--org", org, "--since", "10m")
        assert chart.returncode == 0, chart.stderr
        assert "storage" in chart.stdout and "of 32 MiB" in chart.stdout and "tx/s" in chart.stdout

        with psycopg.connect(creds["uri"], connect_timeout=5, autocommit=True) as conn:
            conn.execute("DROP TABLE filler")
        resolved = alerts.until(lambda rs: [r for r in rs if r["alert_id"] == raised["alert_id"]
                                            and r["state"] == "resolved"], "the storage alert resolved")
        assert resolved[0]["raised_at"] == raised["raised_at"] and resolved[0]["resolved_at"] > raised["raised_at"]
        # one raise and one resolve: nothing else about this service's storage
        assert len([r for r in alerts.records if r["kind"] == "storage_high"]) == 2
        wait_for(lambda: api.get(f"/organizations/{org}/alerts", params={"state": "open"}).json()["items"] == [],
                 what="no open alert left")
        listed = stack.dbaas("alerts", "list", "--org", org)
        assert "resolved" in listed.stdout and raised["alert_id"] not in listed.stdout  # ids are not shown
    finally:
        alerts.close()


def test_vitess_and_dragonfly_services_are_sampled_on_their_servers(stack, api, org):
    vitess = _create(api, org, "sampled-sql", "vitess")
    dragonfly = _create(api, org, "sampled-kv", "dragonfly")
    sql, kv = _credentials(api, vitess), _credentials(api, dragonfly)

    conn = pymysql.connect(host=sql["host"], port=sql["port"], user=sql["username"], password=sql["password"],
                           database=sql["database"], autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        for i in range(20):
            cur.execute("INSERT INTO t VALUES (%s, REPEAT('x', 100))", (i,))
        doc = _latest(api, vitess, lambda s: s["storage_bytes"] > 0 and s["connections"] >= 1
                      and s["ops_per_s"] is not None, "a sample of the vitess service")
    assert doc["latest"]["max_connections"] and doc["latest"]["storage_limit_bytes"] == 10 * 32 * MIB
    assert doc["latest"]["transactions_per_s"] is None  # statements per second instead (ops_per_s)

    client = redis.Redis.from_url(kv["uri"], socket_timeout=5)
    for i in range(50):
        client.set(f"{kv['key_prefix']}k{i}", "v" * 1000)
    latest = _latest(api, dragonfly, lambda s: s["keys"] == 50, "a sample counting the 50 keys")["latest"]
    client.close()
    assert latest["storage_bytes"] >= 50 * 1000 and latest["ops_per_s"] is not None
    assert latest["connections"] >= 0 and latest["max_connections"]


def test_a_failed_operation_and_a_full_quota_raise_alerts_from_the_event_log(stack, api, org):
    """PoP singapore never reports on the test platform: a creation there times out, fails and is
    reverted. While it holds the organization's only service of its quota, `quota_high` is raised;
    the failure raises `operation_failed` (critical), and the reverted creation, no longer holding
    quota, resolves `quota_high`."""
    quota = {"max_services": 1, "total": {"cpu": 64, "memory_gb": 256, "storage_gb": 10240}}
    assert api.put(f"/organizations/{org}/quotas", json=quota).status_code == 202
    wait_for(lambda: api.get(f"/organizations/{org}/quotas").json()["quota"]["max_services"] == 1, what="the quota")
    r = api.post("/services", json={"org": org, "name": "faraway", "engine": "mongodb", "pop": "singapore"})
    assert r.status_code == 202, r.text
    service_id = r.json()["service_id"]

    alerts = AlertTopic(stack, org)
    try:
        alerts.until(lambda rs: {(r["kind"], r["state"]) for r in rs} >= {
            ("quota_high", "raised"), ("quota_high", "resolved"), ("operation_failed", "raised")},
            "the quota and failure alerts", timeout=120)
        found = alerts.records
        quota_alerts = [r for r in found if r["kind"] == "quota_high"]
        assert [r["state"] for r in quota_alerts] == ["raised", "resolved"]
        assert quota_alerts[0]["service_id"] is None and "1 of 1 services" in quota_alerts[0]["message"]
        assert quota_alerts[0]["alert_id"] == quota_alerts[1]["alert_id"]
        [failed] = [r for r in found if r["kind"] == "operation_failed"]
        assert (failed["service_id"], failed["severity"], failed["state"]) == (service_id, "critical", "raised")
        assert 'service "faraway"' in failed["message"]
    finally:
        alerts.close()


def _judged(stack) -> float | None:
    """Samples the alerts processor judged since it started; None while it does not answer."""
    import httpx

    try:
        text = stack.metrics("alerts")
    except httpx.HTTPError:
        return None
    name = 'dbaas_alerts_samples_total{outcome="judged"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_restarted_alerts_processor_publishes_nothing_again(stack, api, org):
    """The alerts processor restarted (its child killed; the supervisor starts it again) folds the
    event log again and judges new samples: alerts already published are not published again."""

    service_id = _create(api, org, "restarted", "yugabyte", storage_gb=1)
    creds = _credentials(api, service_id)
    with psycopg.connect(creds["uri"], connect_timeout=5, autocommit=True) as conn:
        conn.execute("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 32) AS pad "
                     "FROM generate_series(1, 20000) AS g")
    alerts = AlertTopic(stack, org)
    try:
        alerts.until(lambda rs: [r for r in rs if r["kind"] == "storage_high"], "the storage alert")
        kill(stack, "alerts")
        # it is back once it judges samples again (every service of the platform is sampled every 5 s)
        before = wait_for(lambda: _judged(stack), timeout=120, what="samples judged after the restart")
        wait_for(lambda: (_judged(stack) or 0) > before, timeout=60, what="more samples judged")
        alerts.until(lambda rs: True, "the records so far", timeout=5)
        assert [r["state"] for r in alerts.records] == ["raised"]  # once: the restart added nothing
    finally:
        alerts.close()
