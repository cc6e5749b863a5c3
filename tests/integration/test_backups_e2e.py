"""Backups end to end in PoP `local`, through the API, the command processor, the saga (the
DatabaseBackup committed to GitOps), the local PoP agent (dump, seal, upload to the platform's S3
server) and back: a yugabyte service and a vitess service get rows at T1 and more at T2, are
restored to T1 into new services holding exactly the T1 rows, and from a backup after their
source was deleted; the stored bytes never show a row in clear; a dragonfly service's backup
restores its keys."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import boto3
import psycopg
import pymysql
import pytest
import redis
from botocore.config import Config

from tests.conftest import wait_for
from tests.integration.conftest import credentials as _credentials
from tests.integration.conftest import local_service as _create
from tests.integration.conftest import operation

MARKER = "row-" + uuid.uuid4().hex  # a value no sealed byte may show


def _backup(api, service_id: str) -> dict:
    r = api.post(f"/services/{service_id}/backups", json={})
    assert r.status_code == 202, r.text
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed"),
                     "the backup", timeout=240)
    assert done["state"] == "Succeeded", done
    [backup] = [b for b in api.get(f"/services/{service_id}/backups").json()["items"]
                if b["operation_id"] == r.json()["operation_id"]]
    assert backup["status"] == "Completed" and backup["dek_id"] and backup["kek_id"]
    return backup


def _restore(api, source: str, name: str, **point) -> str:
    body = {"name": name, **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in point.items()}}
    r = api.post(f"/services/{source}/restore", json=body)
    assert r.status_code == 202, r.text
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed"),
                     f"the restore into {name}", timeout=300)
    assert done["state"] == "Succeeded", done
    return r.json()["service_id"]


def _policy(api, service_id: str, **policy) -> None:
    r = api.put(f"/services/{service_id}/backup-policy", json=policy)
    assert r.status_code == 202, r.text
    operation(api, r.json()["operation_id"], lambda o: o["state"] == "Succeeded", "the policy")


def _between(write_before, write_after) -> datetime:
    """A time strictly after `write_before`'s commit and before `write_after`'s (whole seconds
    apart: MariaDB's binlog keeps whole seconds)."""
    write_before()
    time.sleep(1.1)  # a second boundary between the writes, not a wait for a condition
    at = datetime.now(UTC)
    time.sleep(1.1)
    write_after()
    return at


# -- engines ---------------------------------------------------------------------------------
class Postgres:
    engine = "yugabyte"

    def __init__(self, creds: dict):
        self.creds = creds

    def run(self, *sql: str) -> None:
        with psycopg.connect(self.creds["uri"], connect_timeout=5, autocommit=True) as conn:
            for s in sql:
                conn.execute(s)

    def rows(self) -> list[tuple]:
        with psycopg.connect(self.creds["uri"], connect_timeout=5) as conn:
            return conn.execute("select id, note from orders order by id").fetchall()


class MariaDB(Postgres):
    engine = "vitess"

    def _conn(self):
        c = self.creds
        return pymysql.connect(host=c["host"], port=c["port"], user=c["username"], password=c["password"],
                               database=c["database"], connect_timeout=5, autocommit=True)

    def run(self, *sql: str) -> None:
        with self._conn() as conn, conn.cursor() as cur:
            for s in sql:
                cur.execute(s)

    def rows(self) -> list[tuple]:
        with self._conn() as conn, conn.cursor() as cur:
            cur.execute("select id, note from orders order by id")
            return [tuple(r) for r in cur.fetchall()]


@pytest.mark.parametrize("kind", [Postgres, MariaDB], ids=["yugabyte", "vitess"])
def test_a_service_restores_to_a_point_in_time_and_from_a_backup_after_its_deletion(stack, api, org, kind):
    source = _create(api, org, "orders", kind.engine)
    db = kind(_credentials(api, source))
    db.run("create table orders (id int primary key, note text)",
           f"insert into orders values (1, '{MARKER}'), (2, 'tea')")
    _policy(api, source, pitr=True)
    backup = _backup(api, source)
    assert backup["pitr_from"] is not None

    t1 = _between(lambda: db.run("insert into orders values (3, 'coffee')"),
                  lambda: db.run("insert into orders values (4, 'cake')", "delete from orders where id = 2"))
    at_t1 = [(1, MARKER), (2, "tea"), (3, "coffee")]
    window = api.get(f"/services/{source}/recovery-window").json()
    assert window["pitr"], window
    assert datetime.fromisoformat(window["earliest"]) <= t1 <= datetime.fromisoformat(window["latest"]), window

    copy = _restore(api, source, "orders-t1", to_time=t1)
    assert kind(_credentials(api, copy)).rows() == at_t1

    _assert_sealed(stack, org, backup["backup_id"])

    deleted = api.delete(f"/services/{source}")
    assert deleted.status_code == 202
    operation(api, deleted.json()["operation_id"], lambda o: o["state"] == "Succeeded", "the deletion")
    from_backup = _restore(api, source, "orders-again", backup_id=backup["backup_id"])
    assert kind(_credentials(api, from_backup)).rows() == [(1, MARKER), (2, "tea")]


def test_a_time_outside_the_window_is_refused_with_the_window(api, org):
    source = _create(api, org, "plain", "yugabyte")
    r = api.post(f"/services/{source}/restore", json={"name": "copy", "to_time": datetime.now(UTC).isoformat()})
    assert r.status_code == 202, r.text
    refused = operation(api, r.json()["operation_id"], lambda o: o["state"] == "Failed", "the refusal")
    assert "recovery window" in refused["message"]


def test_a_dragonfly_backup_restores_its_keys(api, org):
    source = _create(api, org, "cache", "dragonfly")
    creds = _credentials(api, source)
    client = redis.Redis.from_url(creds["uri"], socket_timeout=5)
    client.set(f"{creds['key_prefix']}greeting", "hello")
    client.set(f"{creds['key_prefix']}session", "s1", ex=3600)
    backup = _backup(api, source)
    copy = _restore(api, source, "cache-copy", backup_id=backup["backup_id"])
    restored = _credentials(api, copy)
    other = redis.Redis.from_url(restored["uri"], socket_timeout=5)
    assert other.get(f"{restored['key_prefix']}greeting") == b"hello"
    assert 0 < other.ttl(f"{restored['key_prefix']}session") <= 3600


def _assert_sealed(stack, org: str, backup_id: str) -> None:
    """The backup's objects are in the platform's S3 server, and not one byte shows a row."""
    env = stack.backup_env()
    s3 = boto3.client("s3", endpoint_url=env["DBAAS_S3_ENDPOINT"], aws_access_key_id=env["DBAAS_S3_ACCESS_KEY"],
                      aws_secret_access_key=env["DBAAS_S3_SECRET_KEY"], region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    listed = s3.list_objects_v2(Bucket="dbaas-backups", Prefix=f"tenants/{org}/backups/{backup_id}/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith("/manifest.json") for k in keys) and len(keys) >= 2
    for key in keys:
        body = s3.get_object(Bucket="dbaas-backups", Key=key)["Body"].read()
        assert MARKER.encode() not in body, key


def test_a_policy_every_minute_takes_backups_and_retention_prunes_them(api, org):
    source = _create(api, org, "sessions", "dragonfly")
    _policy(api, source, schedule="* * * * *", retain_count=1)

    def backups(status: str) -> list[dict]:
        return api.get(f"/services/{source}/backups", params={"status": status}).json()["items"]

    # slots of two minutes completed, the older one deleted by retention
    deleted = wait_for(lambda: backups("Deleted"), timeout=240, interval=2, what="a backup pruned by retention")
    assert deleted[0]["slot"] and deleted[0]["deletion_reason"] == "expired"
    [kept] = wait_for(lambda: backups("Completed"), timeout=60, what="the backup kept")
    assert kept["slot"] > deleted[0]["slot"]
    assert len({b["slot"] for b in backups("Completed") + backups("Deleted")}) == len(
        backups("Completed") + backups("Deleted"))  # one backup per slot
