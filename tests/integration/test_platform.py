"""The local platform's components work for real: Avro through the registry, Debezium CDC from
PostgreSQL, topic spec application, launcher idempotence, and data surviving down/up."""
from __future__ import annotations

import json
import re
import uuid

import httpx
import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from runtime import topics
from tests.conftest import wait_for

SMOKE_SCHEMA = json.dumps({
    "type": "record", "name": "SmokeRecord", "namespace": "dbaas.test",
    "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "long"}],
})


def _topic(stack, prefix: str, partitions: int = 1) -> str:
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AdminClient(stack.kafka.client())
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result()
    return name


def _consume(stack, topic: str, count: int, timeout: float = 60.0, deserialize=None) -> list:
    consumer = Consumer({**stack.kafka.client(), "group.id": f"smoke-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list = []
    try:
        def poll():
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(deserialize(msg) if deserialize else msg.value())
            return len(got) >= count
        wait_for(poll, timeout=timeout, interval=0, what=f"{count} records on {topic}")
    finally:
        consumer.close()
    return got


def _avro_roundtrip_clients(stack):
    # A bounded request time: the client's default waits forever on a stalled connection.
    registry = SchemaRegistryClient({"url": stack.registry, "timeout": 30})
    return (AvroSerializer(registry, SMOKE_SCHEMA, lambda obj, ctx: obj),
            AvroDeserializer(registry, SMOKE_SCHEMA, lambda obj, ctx: obj))


def test_avro_record_round_trips_through_the_schema_registry(stack):
    topic = _topic(stack, "smoke.avro")
    serializer, deserializer = _avro_roundtrip_clients(stack)
    producer = Producer({**stack.kafka.client(), "enable.idempotence": True, "acks": "all"})
    records = [{"id": f"r{i}", "n": i} for i in range(5)]
    for rec in records:
        producer.produce(topic, key=rec["id"].encode(),
                         value=serializer(rec, SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(30) == 0
    got = _consume(stack, topic, 5, deserialize=lambda m: deserializer(
        m.value(), SerializationContext(topic, MessageField.VALUE)))
    assert got == records
    subjects = httpx.get(f"{stack.registry}/subjects").json()
    assert f"{topic}-value" in subjects
    # Confluent wire format: magic byte 0 then a 4-byte schema id the registry knows.
    raw = _consume(stack, topic, 1)[0]
    assert raw[0] == 0
    schema_id = int.from_bytes(raw[1:5], "big")
    assert "SmokeRecord" in httpx.get(f"{stack.registry}/schemas/ids/{schema_id}").json()["schema"]


def test_debezium_streams_a_postgres_insert_into_kafka(stack):
    table = f"cdc_smoke_{uuid.uuid4().hex[:8]}"
    name = f"smoke-{table}".replace("_", "-")
    target = f"dbaas.cdc.smoke.{table}"
    dsn = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"create table {table} (id int primary key, note text)")
        conn.execute(f"insert into {table} values (1, 'before the connector')")
    config = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput", "database.hostname": dsn["host"], "database.port": dsn["port"],
        "database.user": dsn["user"], "database.password": dsn["password"], "database.dbname": dsn["dbname"],
        "topic.prefix": name, "slot.name": table, "publication.name": f"pub_{table}",
        "publication.autocreate.mode": "filtered", "table.include.list": f"public.{table}",
        "topic.creation.default.replication.factor": "1", "topic.creation.default.partitions": "1",
        "transforms": "route", "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
        "transforms.route.regex": f"{name}\\.public\\.(.*)", "transforms.route.replacement": "dbaas.cdc.smoke.$1",
    }
    resp = httpx.put(f"{stack.connect}/connectors/{name}/config", json=config, timeout=30)
    assert resp.status_code in (200, 201), resp.text
    try:
        def running():
            st = httpx.get(f"{stack.connect}/connectors/{name}/status", timeout=10)
            if st.status_code != 200:
                return False
            body = st.json()
            assert body["connector"]["state"] != "FAILED", body
            return body["connector"]["state"] == "RUNNING" and body["tasks"] and all(
                t["state"] == "RUNNING" for t in body["tasks"])
        wait_for(running, timeout=90, what=f"connector {name} RUNNING")
        rows = _consume(stack, target, 1, timeout=90, deserialize=lambda m: json.loads(m.value()))
        assert rows[0]["after"] == {"id": 1, "note": "before the connector"} and rows[0]["op"] == "r"
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            conn.execute(f"insert into {table} values (2, 'streamed')")
        rows = _consume(stack, target, 2, timeout=90, deserialize=lambda m: json.loads(m.value()))
        assert rows[1]["op"] == "c" and rows[1]["after"] == {"id": 2, "note": "streamed"}
        assert rows[1]["source"]["table"] == table
    finally:
        httpx.delete(f"{stack.connect}/connectors/{name}", timeout=30)
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            wait_for(lambda: not conn.execute(
                "select 1 from pg_replication_slots where slot_name = %s and active", (table,)).fetchone(),
                timeout=60, what="the replication slot to be released")
            conn.execute("select pg_drop_replication_slot(%s)", (table,))
            conn.execute(f"drop publication if exists pub_{table}")


def test_topic_spec_is_applied_idempotently_and_drift_is_reported(stack):
    admin = AdminClient(stack.kafka.client())
    fixed, _, rf = topics.load("local")
    report = topics.apply(admin, fixed, rf)
    assert sorted(report.unchanged) == sorted(t.name for t in fixed)  # `up` applied them already
    events_cfg = next(t for t in fixed if t.name == "dbaas.events").config
    assert events_cfg["retention.ms"] == "-1"

    tenant = topics.topic_for("dbaas.audit.{tenant}", tenant=f"t{uuid.uuid4().hex[:8]}")
    assert topics.apply(admin, [tenant], rf).created == [tenant.name]
    assert topics.apply(admin, [tenant], rf).unchanged == [tenant.name]
    drifted = topics.TopicSpec(tenant.name, 4, {**tenant.config, "retention.ms": "1000"})
    report = topics.apply(admin, [drifted], rf)
    assert set(report.drift) == {tenant.name} and len(report.drift[tenant.name]) == 2 and not report.fixed
    report = topics.apply(admin, [drifted], rf, fix=True)
    assert report.fixed == [tenant.name]
    assert topics.apply(admin, [drifted], rf).unchanged == [tenant.name]


def test_up_twice_leaves_one_of_each(stack):
    before = json.loads(stack.stack_cli("status", "--json").stdout)
    again = stack.stack_cli("up", "--json")
    after = json.loads(again.stdout)
    assert after["healthy"]
    assert {n: c["pid"] for n, c in after["components"].items()} == \
           {n: c["pid"] for n, c in before["components"].items()}
    assert set(after["endpoints"]) >= {"kafka_bootstrap", "schema_registry_url", "connect_url",
                                       "postgres_dsn", "gitops_remote", "api_url"}


def test_port_taken_by_another_process_is_reported(tmp_path, stack):
    # A second instance asking for the ports the test platform holds must refuse, naming the port.
    proc = stack.cli("stack", "up", "--home", str(tmp_path / "other"), "--port-offset",
                     str(int(stack.kafka.bootstrap.rsplit(":", 1)[1]) - 19092), check=False)
    assert proc.returncode != 0
    assert "is taken by another process" in proc.stderr and "--port-offset" in proc.stderr


def test_data_and_schemas_survive_down_and_up(stack):
    topic = _topic(stack, "smoke.durable")
    serializer, _ = _avro_roundtrip_clients(stack)
    producer = Producer({**stack.kafka.client(), "acks": "all", "enable.idempotence": True})
    marker = {"id": uuid.uuid4().hex, "n": 42}
    producer.produce(topic, value=serializer(marker, SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(30) == 0
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute("create table if not exists durable_smoke (marker text)")
        conn.execute("insert into durable_smoke values (%s)", (marker["id"],))

    down = stack.stack_cli("down")
    assert "stopped kafka" in down.stdout and "stopped postgres" in down.stdout
    assert json.loads(stack.stack_cli("status", "--json", check=False).stdout)["healthy"] is False
    stack.stack_cli("up", "--json")

    # A brand-new deserializer must fetch the schema by id from the restarted registry.
    _, deserializer = _avro_roundtrip_clients(stack)
    got = _consume(stack, topic, 1, deserialize=lambda m: deserializer(
        m.value(), SerializationContext(topic, MessageField.VALUE)))
    assert got == [marker]
    with psycopg.connect(stack.postgres_dsn) as conn:
        assert conn.execute("select 1 from durable_smoke where marker = %s", (marker["id"],)).fetchone()


def test_the_platform_role_force_drops_a_database_with_another_roles_session_in_it(stack):
    # Autovacuum's workers run as no role at all; ending them, like ending a session of a role the
    # platform is not a member of, takes pg_signal_backend. Without it a deleted service's database
    # cannot be dropped while autovacuum visits it.
    name = f"drop_force_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD \'{password}\'')
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO "{name}"')
    base = stack.postgres_dsn.split("@", 1)[1].rsplit("/", 1)[0]
    other = psycopg.connect(f"postgresql://{name}:{password}@{base}/{name}", autocommit=True)
    try:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            assert not conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (name,)).fetchone()[0]
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
            conn.execute(f'DROP ROLE "{name}"')
    finally:
        other.close()


def test_status_shows_dsns_without_passwords_unless_asked(stack):
    password = json.loads((stack.home / "secrets.json").read_text())["dbaas_password"]
    human = stack.stack_cli("status", check=False).stdout
    doc = json.loads(stack.stack_cli("status", "--json", check=False).stdout)
    assert password not in human and f"dbaas:***@127.0.0.1:{doc['ports']['postgres']}/dbaas" in human
    assert password not in json.dumps(doc) and ":***@" in doc["endpoints"]["postgres_dsn"]
    shown = json.loads(stack.stack_cli("status", "--json", "--show-secrets", check=False).stdout)
    assert shown["endpoints"]["postgres_dsn"] == stack.postgres_dsn and password in stack.postgres_dsn
    assert password not in stack.stack_cli("logs", "-n", "500").stdout


def test_sign_in_issuers_are_kept_by_the_instance_and_a_change_restarts_the_api(stack):
    from runtime import devissuer

    key = devissuer.generate_key()
    idp = {"issuer": "https://idp.test.invalid/realms/dbaas", "audience": "dbaas",
           "jwks": devissuer.public_jwks(key)}
    idp_token = devissuer.mint(key, "erin", iss=idp["issuer"])

    def me(token: str) -> int:
        return httpx.get(f"{stack.api}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"},
                         timeout=30).status_code

    def api_pid() -> int:
        return json.loads(stack.stack_cli("status", "--json", check=False).stdout)["components"]["api"]["pid"]

    before = api_pid()
    assert me(stack.token("erin")) == 200 and me(idp_token) == 401
    try:
        changed = stack.stack_cli("up", "--oidc-issuer", json.dumps(idp))
        assert re.search(r"\bapi +settings changed: restarting", changed.stdout), changed.stdout
        assert f"sign-in: {idp['issuer']}" in changed.stdout
        assert api_pid() != before
        assert me(idp_token) == 200
        assert me(stack.token("erin")) == 401, "the development issuer stays off beside a configured one"
        status = json.loads(stack.stack_cli("status", "--json", check=False).stdout)["sign_in"]
        assert status == {"oidc_issuers": [idp["issuer"]], "default_issuer": None, "development_issuer": False}
        assert json.loads((stack.home / "stack.json").read_text())["sign_in"]["oidc_issuers"] == [idp]

        kept = api_pid()
        stack.stack_cli("up")  # nothing asked: the issuers stay, the API is left alone
        assert api_pid() == kept and me(idp_token) == 200
        refused = stack.cli("auth", "login", "--dev", "--user", "erin", "--print-token", "--home", str(stack.home),
                            check=False)
        assert refused.returncode == 1 and "does not trust the development issuer" in refused.stderr
    finally:
        stack.stack_cli("up", "--no-oidc-issuers")
    assert me(stack.token("erin")) == 200 and me(idp_token) == 401
