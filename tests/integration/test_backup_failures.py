"""Backups when things break: the object store down → the backup fails with the reason, nothing of
it is listed as restorable, and the next backup after the store is back completes; the local PoP
agent killed in the middle of backups → each backup completes exactly once and restores."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import boto3
import psycopg
import redis
from botocore.config import Config

from schemas import alerts_topic
from schemas.registry import ALERTS_SUBJECT
from tests.conftest import wait_for
from tests.integration.conftest import credentials as _credentials
from tests.integration.conftest import local_service as _create
from tests.integration.conftest import operation
from tests.integration.process_support import kill
from tests.integration.test_backups_e2e import _backup, _restore
from tests.integration.test_scheduler import Tail


def _pid(stack, name: str) -> int:
    return int(Path(stack.home, "run", name).read_text().split()[0])  # "<pid> <start time>"


def test_a_backup_fails_with_the_reason_while_the_object_store_is_down(stack, api, org):
    source = _create(api, org, "cache", "dragonfly")
    os.kill(_pid(stack, "s3.pid"), signal.SIGKILL)
    try:
        r = api.post(f"/services/{source}/backups", json={})
        assert r.status_code == 202, r.text
        failed = operation(api, r.json()["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed"),
                           "the backup to fail", timeout=180)
        assert failed["state"] == "Failed" and "object storage unavailable" in failed["message"], failed
        listed = api.get(f"/services/{source}/backups", params={"status": "Completed"}).json()["items"]
        assert listed == []
        window = api.get(f"/services/{source}/recovery-window").json()
        assert window["instants"] == []
        alerts = Tail(stack, alerts_topic(org), ALERTS_SUBJECT)
        try:
            [alert] = alerts.until(lambda rs: [a for a in rs if a["kind"] == "backup_failed"], "the alert",
                                   timeout=60)[:1]
        finally:
            alerts.close()
        assert alert["state"] == "raised" and alert["service_id"] == source
        assert "object storage unavailable" in alert["message"]
    finally:
        stack.stack_cli("up", "--json")  # the store comes back
    _backup(api, source)  # and backups work again


def test_the_agent_killed_during_backups_completes_each_once(stack, api, org):
    source = _create(api, org, "orders", "yugabyte")
    creds = _credentials(api, source)
    with psycopg.connect(creds["uri"], autocommit=True) as conn:  # a few seconds of dump and upload
        conn.execute("create table orders (id int primary key, note text)")
        conn.execute("insert into orders select g, repeat(md5(g::text), 20) from generate_series(1, 200000) g")
    ops = []
    for _ in range(2):
        r = api.post(f"/services/{source}/backups", json={})
        assert r.status_code == 202, r.text
        ops.append(r.json()["operation_id"])
        wait_for(lambda: list(Path(stack.home, "state").glob("**/backup-work/*")), timeout=120,
                 what="the agent to be taking the backup")
        kill(stack, "localpop-agent")
        done = operation(api, ops[-1], lambda o: o["state"] in ("Succeeded", "Failed"), "the backup", timeout=300)
        assert done["state"] == "Succeeded", done
    backups = api.get(f"/services/{source}/backups").json()["items"]
    assert sorted(b["operation_id"] for b in backups) == sorted(ops)
    assert all(b["status"] == "Completed" for b in backups)
    copy = _restore(api, source, "orders-copy", backup_id=backups[0]["backup_id"])
    with psycopg.connect(_credentials(api, copy)["uri"]) as conn:
        assert conn.execute("select count(*) from orders").fetchone()[0] == 200000


def test_the_saga_killed_during_backups_commits_each_claim_once(stack, api, org):
    source = _create(api, org, "kv", "dragonfly")
    ops = []
    for _ in range(3):
        r = api.post(f"/services/{source}/backups", json={})
        assert r.status_code == 202, r.text
        ops.append(r.json()["operation_id"])
        kill(stack, "saga", timeout=90)
        done = operation(api, ops[-1], lambda o: o["state"] in ("Succeeded", "Failed"), "the backup", timeout=240)
        assert done["state"] == "Succeeded", done
    remote = stack.gitops_remote.removeprefix("file://")
    trailers = subprocess.run(["git", "--git-dir", remote, "log", "--format=%(trailers:key=Operation-Id,valueonly)"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert [trailers.count(op) for op in ops] == [1, 1, 1]


def test_a_restore_from_a_damaged_backup_fails_and_the_new_service_is_removed(stack, api, org):
    source = _create(api, org, "kv", "dragonfly")
    creds = _credentials(api, source)
    redis.Redis.from_url(creds["uri"], socket_timeout=5).set(f"{creds['key_prefix']}k", "v")
    backup = _backup(api, source)
    env = stack.backup_env()
    s3 = boto3.client("s3", endpoint_url=env["DBAAS_S3_ENDPOINT"], aws_access_key_id=env["DBAAS_S3_ACCESS_KEY"],
                      aws_secret_access_key=env["DBAAS_S3_SECRET_KEY"], region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    prefix = f"tenants/{org}/backups/{backup['backup_id']}/"
    [data] = [o["Key"] for o in s3.list_objects_v2(Bucket="dbaas-backups", Prefix=prefix)["Contents"]
              if not o["Key"].endswith("manifest.json")]
    body = bytearray(s3.get_object(Bucket="dbaas-backups", Key=data)["Body"].read())
    body[-20] ^= 0xFF  # one flipped bit in the sealed data
    s3.put_object(Bucket="dbaas-backups", Key=data, Body=bytes(body))

    r = api.post(f"/services/{source}/restore", json={"name": "kv-copy", "backup_id": backup["backup_id"]})
    assert r.status_code == 202, r.text
    failed = operation(api, r.json()["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed")
                       and (o["state"] != "Failed" or (o.get("compensation") or {}).get("state") == "Done"),
                       "the restore to fail and be compensated", timeout=240)
    assert failed["state"] == "Failed" and "restore failed" in failed["message"], failed
    copy = api.get(f"/services/{r.json()['service_id']}").json()
    assert copy["status"] == "Failed"
    usage = api.get(f"/organizations/{org}/quotas").json()
    assert usage["usage"]["services"] == 1, usage  # the failed copy holds no quota
