"""As a newcomer would: an organization, then a yugabyte, a vitess and a dragonfly service in PoP
`local`, each waited for until Ready, used with the credentials the CLI hands out, scaled and
deleted — through the `dbaas` CLI against the test platform's own control plane."""
from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import httpx
import psycopg
import pymysql
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from tests.conftest import wait_for


def _use_postgres(c: dict) -> None:
    with psycopg.connect(c["uri"], connect_timeout=5) as conn:
        conn.execute("create table orders (id int primary key, item text)")
        conn.execute("insert into orders values (1, 'tea'), (2, 'coffee')")
        assert conn.execute("select count(*) from orders").fetchone()[0] == 2


def _use_mariadb(c: dict) -> None:
    conn = pymysql.connect(host=c["host"], port=c["port"], user=c["username"], password=c["password"],
                           database=c["database"], connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("create table orders (id int primary key, item text)")
        cur.execute("insert into orders values (1, 'tea'), (2, 'coffee')")
        conn.commit()
        cur.execute("select count(*) from orders")
        assert cur.fetchone()[0] == 2


def _use_redis(c: dict) -> None:
    client = redis.Redis.from_url(c["uri"], socket_timeout=5)
    client.set(f"{c['key_prefix']}greeting", "hello")
    assert client.get(f"{c['key_prefix']}greeting") == b"hello"
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("someone-else:greeting")


def _refused(engine: str, c: dict) -> bool:
    try:
        {"yugabyte": lambda: psycopg.connect(c["uri"], connect_timeout=5).close(),
         "vitess": lambda: pymysql.connect(host=c["host"], port=c["port"], user=c["username"],
                                           password=c["password"], connect_timeout=5).close(),
         "dragonfly": lambda: redis.Redis.from_url(c["uri"], socket_timeout=5).ping()}[engine]()
    except (psycopg.OperationalError, pymysql.err.OperationalError, redis.exceptions.AuthenticationError,
            redis.exceptions.ResponseError):
        return True
    return False


def _assert_nowhere_in_clear(stack, *secrets: str) -> None:
    """The secrets (a service password, a caller's bearer token) are on no topic of the platform —
    events, commands, PoP reports, audit trails, dead letters —, in no GitOps commit and in no log
    line of the platform."""
    wanted = [s.encode() for s in secrets]
    consumer = Consumer({**stack.kafka.client(), "group.id": f"scan-{uuid.uuid4()}",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    topics = consumer.list_topics(timeout=30).topics
    parts = [TopicPartition(name, p, 0) for name, meta in topics.items() if name.startswith("dbaas.")
             for p in meta.partitions]
    assert any(tp.topic.startswith("dbaas.audit.") for tp in parts)
    consumer.assign(parts)
    eof, leaked = set(), []
    while len(eof) < len(parts):
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                eof.add((msg.topic(), msg.partition()))
            elif any(secret in (msg.value() or b"") for secret in wanted):
                leaked.append((msg.topic(), msg.offset()))
    consumer.close()
    assert leaked == [], f"a secret is in clear on {leaked}"
    history = subprocess.run(["git", "--git-dir", stack.gitops_remote.removeprefix("file://"), "log", "-p", "--all"],
                             capture_output=True, check=True).stdout
    assert not any(secret in history for secret in wanted)
    for log in Path(stack.home, "logs").glob("*.log"):
        data = log.read_bytes()
        assert not any(secret in data for secret in wanted), f"a secret is in {log}"


@pytest.mark.parametrize("engine, use", [("yugabyte", _use_postgres), ("vitess", _use_mariadb),
                                         ("dragonfly", _use_redis)])
def test_newcomer_runs_a_database_in_the_local_pop(stack, engine, use):
    org = f"local-{uuid.uuid4().hex[:8]}"
    assert stack.dbaas("org", "create", org).returncode == 0
    created = json.loads(stack.dbaas("service", "create", "shop", "--org", org, "--engine", engine,
                                     "--pop", "local", "--json", check=True).stdout)
    ready = stack.dbaas("operation", "wait", created["operation_id"], "--timeout", "180", "--json")
    assert ready.returncode == 0, ready.stderr
    assert json.loads(ready.stdout)["state"] == "Succeeded"
    assert json.loads(stack.dbaas("service", "get", "shop", "--org", org, "--json", check=True).stdout)[
        "status"] == "Ready"

    creds = json.loads(stack.dbaas("service", "credentials", "shop", "--org", org, "--json", check=True).stdout)
    use(creds)
    token = stack.token("alice")
    assert httpx.get(f"{stack.api}/api/v1/services", params={"org": org}, timeout=30,
                     headers={"Authorization": f"Bearer {token}"}).status_code == 200
    _assert_nowhere_in_clear(stack, creds["password"], token)
    viewer = stack.dbaas("service", "credentials", "shop", "--org", org, subject="bob", orgs={org: ["org-member"]})
    assert viewer.returncode != 0 and "needs one of the roles" in viewer.stderr

    scaled = json.loads(stack.dbaas("service", "scale", "shop", "--org", org, "--replicas", "2", "--json",
                                    check=True).stdout)
    assert stack.dbaas("operation", "wait", scaled["operation_id"], "--timeout", "180").returncode == 0
    again = json.loads(stack.dbaas("service", "credentials", "shop", "--org", org, "--json", check=True).stdout)
    assert again["password"] == creds["password"]  # scaling keeps the credentials

    deleted = json.loads(stack.dbaas("service", "delete", "shop", "--org", org, "--json", check=True).stdout)
    assert stack.dbaas("operation", "wait", deleted["operation_id"], "--timeout", "180").returncode == 0
    assert wait_for(lambda: _refused(engine, creds), timeout=60, what="the credentials to stop working")


def test_an_engine_without_a_local_server_is_refused_with_the_pops_that_offer_it(stack):
    org = f"local-{uuid.uuid4().hex[:8]}"
    assert stack.dbaas("org", "create", org).returncode == 0
    refused = stack.dbaas("service", "create", "big", "--org", org, "--engine", "scylla", "--pop", "local")
    assert refused.returncode != 0
    assert "lagos, johannesburg, frankfurt, ashburn, singapore" in refused.stderr


def test_deletion_protection_holds_until_lifted_then_the_service_goes(stack):
    org = f"local-{uuid.uuid4().hex[:8]}"
    assert stack.dbaas("org", "create", org).returncode == 0
    created = json.loads(stack.dbaas("service", "create", "keep", "--org", org, "--engine", "dragonfly",
                                     "--pop", "local", "--deletion-protection", "--json", check=True).stdout)
    assert stack.dbaas("operation", "wait", created["operation_id"], "--timeout", "180").returncode == 0
    remote = stack.gitops_remote.removeprefix("file://")

    def manifest() -> str:
        [path] = subprocess.run(["git", "--git-dir", remote, "ls-tree", "-r", "--name-only", "HEAD",
                                 f"tenants/{org}/"], capture_output=True, text=True, check=True).stdout.split()
        return subprocess.run(["git", "--git-dir", remote, "show", f"HEAD:{path}"],
                              capture_output=True, text=True, check=True).stdout
    assert "Prune=false,Delete=false" in manifest()

    refused = stack.dbaas("service", "delete", "keep", "--org", org)
    assert refused.returncode != 0 and "deletion protection on" in refused.stderr
    viewer = stack.dbaas("service", "deletion-protection", "keep", "off", "--org", org,
                         subject="bob", orgs={org: ["service-viewer"]})
    assert viewer.returncode != 0 and "needs one of the roles" in viewer.stderr

    lifted = json.loads(stack.dbaas("service", "deletion-protection", "keep", "off", "--org", org, "--json",
                                    check=True).stdout)
    # Sent at once: the deletion queues behind the commit that lifts the protection.
    deleted = json.loads(stack.dbaas("service", "delete", "keep", "--org", org, "--json", check=True).stdout)
    done = stack.dbaas("operation", "wait", lifted["operation_id"], "--timeout", "180", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["state"] == "Succeeded", done.stdout + done.stderr
    assert stack.dbaas("operation", "wait", deleted["operation_id"], "--timeout", "180").returncode == 0
    log = subprocess.run(["git", "--git-dir", remote, "log", "--format=%H %(trailers:key=Operation-Id,valueonly)",
                          "--", f"tenants/{org}/"], capture_output=True, text=True, check=True).stdout.split("\n")
    ops = [line.split()[1] for line in log if len(line.split()) == 2]
    assert ops == [deleted["operation_id"], lifted["operation_id"], created["operation_id"]], \
        "lifted in its own commit, before the one that removes the service"
    svc = json.loads(stack.dbaas("service", "list", "--org", org, "--json", check=True).stdout)
    assert [s["status"] for s in svc if s["name"] == "keep"] in ([], ["Deleted"])
