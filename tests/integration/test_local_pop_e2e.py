"""As a newcomer would: an organization, then a yugabyte, a vitess and a dragonfly service in PoP
`local`, each waited for until Ready, used with the credentials the CLI hands out, scaled and
deleted — through the `dbaas` CLI against the test platform's own control plane."""
from __future__ import annotations

import json
import uuid

import psycopg
import pymysql
import pytest
import redis

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
    viewer = stack.dbaas("service", "credentials", "shop", "--org", org, roles="org-member")
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
