"""Change data capture end to end in PoP `local`: enabling CDC on a yugabyte service (the API,
the command processor, the saga committing a KafkaConnector to GitOps, the local PoP agent
registering it with the platform's Kafka Connect) streams an inserted row, in Avro through the
schema registry, to `dbaas.cdc.yugabyte.{tenant}.{table}`, where a plain confluent-kafka consumer
reads it; disabling it, or deleting the service, leaves no connector, no replication slot and no
publication; a dragonfly service is refused as unsupported."""
from __future__ import annotations

import json
import uuid

import httpx
import psycopg
import pymysql
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from runtime.kafka import KafkaAccess
from tests.conftest import wait_for
from tests.integration.conftest import local_service as _create
from tests.integration.conftest import operation

FINISHED = ("Succeeded", "Failed")


def cdc_deserializer(registry: str) -> AvroDeserializer:
    """A confluent-kafka Avro deserializer for CDC topics, configured as docs/cdc.md tells tenants:
    subjects named by topic (the default, ASSOCIATED, first asks the registry's associations API,
    which Apicurio's Confluent-compatible API does not serve) and a bounded request time."""
    return AvroDeserializer(SchemaRegistryClient({"url": registry, "timeout": 30}),
                            conf={"subject.name.strategy.type": "TOPIC"})


def _enable(api, service_id: str, tables: list[str] | None = None) -> dict:
    r = api.post(f"/services/{service_id}/cdc", json={"tables": tables or []})
    assert r.status_code == 202, r.text
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in FINISHED, "CDC to be enabled",
                     timeout=240)
    assert done["state"] == "Succeeded", done
    assert [s["state"] for s in done["steps"]] == ["Done", "Done", "Done"]
    return api.get(f"/services/{service_id}").json()["cdc"]


def _consume_one(stack, topic: str, timeout: float = 90, access: KafkaAccess | None = None,
                 group: str | None = None) -> tuple[dict, dict]:
    """The first change on ``topic``: (key, value), decoded as any Confluent client would; read as
    ``access`` (the platform's administrator by default) in consumer group ``group``."""
    values, keys = cdc_deserializer(stack.registry), cdc_deserializer(stack.registry)
    consumer = Consumer((access or stack.kafka).client(**{"group.id": group or f"tenant-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    try:
        wait_for(lambda: topic in consumer.list_topics(timeout=5).topics, timeout=timeout,
                 what=f"topic {topic}")
        consumer.subscribe([topic])

        def one():
            msg = consumer.poll(1.0)
            if msg is None or msg.error() or msg.value() is None:
                return None
            ctx = SerializationContext(topic, MessageField.VALUE)
            return keys(msg.key(), SerializationContext(topic, MessageField.KEY)), values(msg.value(), ctx)
        return wait_for(one, timeout=timeout, what=f"a change on {topic}")
    finally:
        consumer.close()


def _consume_all(stack, topic: str, count: int, timeout: float = 90) -> list[tuple[dict, dict]]:
    """At least ``count`` changes from the start of ``topic`` (key, value), decoded."""
    decode = cdc_deserializer(stack.registry)
    consumer = Consumer(stack.kafka.client(**{"group.id": f"tenant-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    got: list[tuple[dict, dict]] = []
    try:
        wait_for(lambda: topic in consumer.list_topics(timeout=5).topics, timeout=timeout, what=f"topic {topic}")
        consumer.subscribe([topic])

        def enough():
            for msg in consumer.consume(500, 1.0):
                if msg.error() or msg.value() is None:
                    continue
                got.append((decode(msg.key(), SerializationContext(topic, MessageField.KEY)),
                            decode(msg.value(), SerializationContext(topic, MessageField.VALUE))))
            return len({k["id"] for k, _ in got}) >= count or None
        wait_for(enough, timeout=timeout, what=f"{count} changes on {topic}")
        return got
    finally:
        consumer.close()


def _held(stack, connector: str) -> tuple[bool, bool, bool]:
    """(Connect has the connector, PostgreSQL has its slot, any database has its publication)."""
    slot = connector.replace("-", "_")
    in_connect = httpx.get(f"{stack.connect}/connectors/{connector}", timeout=10).status_code == 200
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        has_slot = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        databases = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 's\\_%'")]
    has_pub = False
    base = stack.postgres_dsn.rsplit("/", 1)[0]
    for db in databases:
        try:
            with psycopg.connect(f"{base}/{db}", autocommit=True) as conn:
                has_pub |= bool(conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (slot,)).fetchone())
        except psycopg.OperationalError:
            continue  # a database being dropped meanwhile
    return in_connect, bool(has_slot), has_pub


def test_a_row_inserted_reaches_the_tenants_cdc_topic_and_disabling_leaves_nothing(stack, api, org):
    service = _create(api, org, "shop", "yugabyte")
    creds = api.get(f"/services/{service}/credentials").json()
    with psycopg.connect(creds["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)")

    stream = _enable(api, service, ["orders"])
    assert stream["status"] == "Running" and stream["tables"] == ["orders"]
    assert stream["topic_prefix"] == f"dbaas.cdc.yugabyte.{org}"
    with psycopg.connect(creds["uri"], autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'book')")

    key, change = _consume_one(stack, f"dbaas.cdc.yugabyte.{org}.orders")
    assert key == {"id": 1}
    assert change["op"] in ("c", "r") and change["after"] == {"id": 1, "item": "book"}
    assert change["source"]["table"] == "orders"
    assert _held(stack, stream["connector"]) == (True, True, True)

    # the organization's own subscription reads the same change with a plain client
    sub = api.post(f"/organizations/{org}/subscriptions", json={"name": "cdc-reader"})
    assert sub.status_code == 202, sub.text
    client = sub.json()["client"]
    granted = operation(api, sub.json()["operation_id"], lambda o: o["state"] in FINISHED, "the subscription")
    assert granted["state"] == "Succeeded", granted
    tenant = KafkaAccess(client["bootstrap_servers"], client["sasl_username"], client["sasl_password"])
    key, change = _consume_one(stack, f"dbaas.cdc.yugabyte.{org}.orders", access=tenant,
                               group=client["group_id_prefix"] + "orders")
    assert key == {"id": 1} and change["after"] == {"id": 1, "item": "book"}

    r = api.delete(f"/services/{service}/cdc")
    assert r.status_code == 202, r.text
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in FINISHED, "CDC to be disabled",
                     timeout=180)
    assert done["state"] == "Succeeded", done
    assert api.get(f"/services/{service}").json()["cdc"]["status"] == "Disabled"
    assert _held(stack, stream["connector"]) == (False, False, False)


def test_deleting_a_service_removes_its_connector_first(stack, api, org):
    service = _create(api, org, "ledger", "yugabyte")
    creds = api.get(f"/services/{service}/credentials").json()
    with psycopg.connect(creds["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE entries (id int PRIMARY KEY)")
    stream = _enable(api, service)
    assert _held(stack, stream["connector"]) == (True, True, True)

    r = api.delete(f"/services/{service}")
    assert r.status_code == 202, r.text
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in FINISHED, "the deletion", timeout=240)
    assert done["state"] == "Succeeded", done
    wait_for(lambda: _held(stack, stream["connector"]) == (False, False, False), timeout=60,
             what="the connector, its slot and its publication to be gone")


def _mysql(creds: dict):
    return pymysql.connect(host=creds["host"], port=int(creds["port"]), user=creds["username"],
                           password=creds["password"], database=creds["database"], autocommit=True)


def test_a_vitess_row_reaches_its_keyspace_topic_through_mariadbs_binlog(stack, api, org):
    service = _create(api, org, "catalog", "vitess")
    creds = api.get(f"/services/{service}/credentials").json()
    with _mysql(creds) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)")

    stream = _enable(api, service, ["items"])
    with _mysql(creds) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO items VALUES (7, 'lamp')")

    key, change = _consume_one(stack, f"dbaas.cdc.vitess.{org}.catalog.items")
    assert key == {"id": 7}
    assert change["after"] == {"id": 7, "name": "lamp"} and change["source"]["table"] == "items"

    r = api.delete(f"/services/{service}/cdc")
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in FINISHED, "CDC to be disabled",
                     timeout=180)
    assert done["state"] == "Succeeded", done
    assert httpx.get(f"{stack.connect}/connectors/{stream['connector']}", timeout=10).status_code == 404
    consumer = Consumer(stack.kafka.client(**{"group.id": "probe"}))
    try:
        assert f"dbaas.cdc-history.{stream['connector']}" not in consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()


@pytest.mark.parametrize("engine", ["dragonfly"])
def test_an_engine_without_a_change_data_capture_source_is_refused(api, org, engine):
    service = _create(api, org, "cache", engine)

    r = api.post(f"/services/{service}/cdc", json={})
    assert r.status_code == 202, r.text
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in FINISHED, "the refusal")
    assert (done["state"], done["reason_code"]) == ("Failed", "unsupported"), done
    assert "no change-data-capture source" in done["message"]




def test_the_cli_enables_shows_and_disables_a_stream_and_says_why_it_refuses(stack):
    org = f"cdc-{uuid.uuid4().hex[:8]}"
    assert stack.dbaas("org", "create", org).returncode == 0
    created = json.loads(stack.dbaas("service", "create", "books", "--org", org, "--engine", "yugabyte", "--pop",
                                     "local", "--json", check=True).stdout)
    stack.dbaas("operation", "wait", created["operation_id"], "--json", check=True)

    enabled = stack.dbaas("cdc", "enable", "books", "--org", org, "--wait", "--json")
    assert enabled.returncode == 0, enabled.stderr + enabled.stdout
    assert json.loads(enabled.stdout)["state"] == "Succeeded"
    status = stack.dbaas("cdc", "status", "books", "--org", org, check=True).stdout
    assert "Running" in status and f"dbaas.cdc.yugabyte.{org}.<table>" in status and "every table" in status
    as_json = json.loads(stack.dbaas("cdc", "status", "books", "--org", org, "--json", check=True).stdout)
    assert as_json["cdc"]["status"] == "Running"

    viewer = stack.dbaas("cdc", "disable", "books", "--org", org, subject="vic", orgs={org: ["service-viewer"]})
    assert viewer.returncode != 0 and "needs one of the roles" in viewer.stderr
    bad = stack.dbaas("cdc", "enable", "books", "--org", org, "--table", "Bad Name")
    assert bad.returncode != 0 and "cannot name a CDC topic" in bad.stderr

    disabled = stack.dbaas("cdc", "disable", "books", "--org", org, "--wait", "--json", check=True)
    assert json.loads(disabled.stdout)["state"] == "Succeeded"
    assert "Disabled" in stack.dbaas("cdc", "status", "books", "--org", org, check=True).stdout
