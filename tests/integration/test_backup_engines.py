"""Backup, restore and point-in-time recovery against the test platform's own servers: a service's
data goes to local files and comes back into a new service, identical by its manifest's stats;
a changed row is reported; PostgreSQL recovers a database to a time from a base backup and the
archived WAL; MariaDB replays its binlog to a time; both refuse a time their archive does not
reach."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import psycopg
import pymysql
import pytest
import redis

from deploy.stack import config as stack_config
from deploy.stack.base import Context
from deploy.stack.components import Postgres
from operators.backup.manifest import Manifest
from operators.backup.mariadb import MariaDBBackups
from operators.backup.postgres import PostgresBackups, spool_listing, wal_needed
from operators.backup.redis import RedisBackups
from operators.backup.tools import RecoveryTargetNotReached
from operators.localpop.provisioners import (
    AdminEndpoint,
    Credentials,
    MariaDBProvisioner,
    PostgresProvisioner,
    RedisProvisioner,
)
from tests.conftest import wait_for
from tests.integration.process_support import paused

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def admins(stack) -> dict[str, AdminEndpoint]:
    secrets = json.loads((stack.home / "secrets.json").read_text())
    ports = stack.status["ports"]
    pg = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
    yield {"postgres": AdminEndpoint(pg["host"], int(pg["port"]), pg["user"], pg["password"]),
           "mariadb": AdminEndpoint("127.0.0.1", ports["mariadb"], "root", secrets["mariadb_root_password"]),
           "redis": AdminEndpoint("127.0.0.1", ports["redis"], "admin", secrets["redis_admin_password"])}
    if TIMINGS:
        print("\nbackup engine timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in TIMINGS.items()))


class Services:
    """New services of the test, each deprovisioned afterwards."""

    KINDS: ClassVar[dict[str, type]] = {"postgres": PostgresProvisioner, "mariadb": MariaDBProvisioner, "redis": RedisProvisioner}

    def __init__(self, admins: dict[str, AdminEndpoint]):
        self.admins = admins
        self.made: dict[str, tuple[object, str, str]] = {}  # user -> (provisioner, tenant, service id)

    def __call__(self, engine: str) -> Credentials:
        provisioner = self.KINDS[engine](self.admins[engine])
        tenant, service_id = f"t{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
        creds = provisioner.provision(tenant, service_id, "orders")
        self.made[creds.username] = (provisioner, tenant, service_id)
        return creds

    def ids(self, creds: Credentials) -> tuple[str, str]:
        _, tenant, service_id = self.made[creds.username]
        return tenant, service_id

    def remove_all(self) -> None:
        for provisioner, tenant, service_id in self.made.values():
            provisioner.deprovision(tenant, service_id)


@pytest.fixture
def services(admins):
    made = Services(admins)
    yield made
    made.remove_all()


def _timed(name: str, fn: Callable):
    started = time.monotonic()
    result = fn()
    TIMINGS[name] = time.monotonic() - started
    return result


def _after_this_second(moment: datetime) -> None:
    """Until the wall clock is past ``moment``'s second (binlog times are whole seconds)."""
    wait_for(lambda: datetime.now(timezone.utc).replace(microsecond=0) > moment.replace(microsecond=0),
             timeout=5, interval=0.02, what="the next second")


class Writer(threading.Thread):
    """Inserts rows into a table, one transaction each, until stopped: backups taken meanwhile
    must be of one instant all the same."""

    def __init__(self, connect: Callable[[], object], insert: Callable[[object, int], None]):
        super().__init__(daemon=True)
        self.connect, self.insert = connect, insert
        self.count, self.stopping, self.error = 0, threading.Event(), None

    def run(self):
        try:
            with self.connect() as conn:
                while not self.stopping.is_set():
                    self.insert(conn, 100000 + self.count)
                    self.count += 1
        except Exception as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> int:
        self.stopping.set()
        self.join(30)
        assert self.error is None, self.error
        return self.count


# -- PostgreSQL ---------------------------------------------------------------------------------
def _pg(c: Credentials):
    return psycopg.connect(host=c.host, port=c.port, user=c.username, password=c.password, dbname=c.database,
                           autocommit=True, connect_timeout=5)


def _pg_fill(c: Credentials, rows: int = 20000) -> None:
    with _pg(c) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags jsonb, "
                     "raw bytea, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO items (id, name, price, tags, raw) SELECT g, CASE WHEN g %% 7 = 0 THEN NULL "
                     "ELSE 'item ' || g END, g / 3.0, jsonb_build_object('g', g), decode(md5(g::text), 'hex') "
                     "FROM generate_series(1, %s) g", (rows,))
        conn.execute("CREATE SCHEMA billing")
        conn.execute("CREATE TABLE billing.invoices (id bigserial PRIMARY KEY, item int REFERENCES items, total numeric)")
        conn.execute("INSERT INTO billing.invoices (item, total) SELECT g, g * 2 FROM generate_series(1, 500) g")
        conn.execute("CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 10")
        conn.execute("CREATE TABLE empty_one (x int)")


@pytest.fixture(scope="module")
def pg_backups(admins):
    return PostgresBackups(admins["postgres"], admin_database="dbaas")


def test_postgres_backup_restores_into_a_new_service_with_identical_data(pg_backups, services, tmp_path):
    source = services("postgres")
    _pg_fill(source)
    tenant, service_id = services.ids(source)
    with _pg(source) as conn:
        conn.execute("CREATE TABLE busy (id int PRIMARY KEY)")
    writer = Writer(lambda: _pg(source), lambda conn, n: conn.execute("INSERT INTO busy VALUES (%s)", (n,)))
    writer.start()
    wait_for(lambda: writer.count > 5, what="the writer to write")
    manifest = _timed("postgres backup (20k rows)", lambda: pg_backups.backup(tenant, service_id, "b-1", tmp_path))
    written = writer.stop()

    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.engine == "postgres" and manifest.files == {"data": "data.dump"}
    assert (tmp_path / "data.dump").stat().st_size > 0
    assert manifest.tables["public.items"].rows == 20000 and manifest.tables["billing.invoices"].rows == 500
    assert manifest.tables["public.empty_one"].rows == 0
    assert 0 < manifest.tables["public.busy"].rows <= written  # the writer's rows of that instant
    assert set(manifest.consistency) == {"lsn", "snapshot_time"}

    target = services("postgres")
    _timed("postgres restore (20k rows)", lambda: pg_backups.restore(manifest, tmp_path, target.database))
    assert pg_backups.verify(manifest, target.database) == []

    with _pg(target) as conn:  # the new service's own role owns and uses all of it
        owners = conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'billing')"
                              ).fetchall()
        assert owners == [(target.username,)]
        assert conn.execute("SELECT count(*) FROM cheap").fetchone()[0] > 0
        conn.execute("INSERT INTO billing.invoices (item, total) VALUES (1, 1)")  # its sequence works too
        conn.execute("DELETE FROM billing.invoices WHERE total = 1 AND item = 1 AND id > 500")
        conn.execute("UPDATE items SET name = 'changed' WHERE id = 5")
    problems = pg_backups.verify(manifest, target.database)
    assert len(problems) == 1 and problems[0].startswith("public.items: same row count (20000) but different content")
    with _pg(target) as conn:
        conn.execute("DELETE FROM items WHERE id = 19999")
        conn.execute("DROP TABLE empty_one")
    problems = pg_backups.verify(manifest, target.database)
    assert problems == ["public.empty_one: missing from the copy (0 rows backed up)",
                        "public.items: 19999 rows, 20000 backed up"]


def _staged_wal(spool: Path, names: list[str]) -> Path:
    """What a restore fetches: only the segments it needs, in a folder PostgreSQL's user reads."""
    folder = Path(tempfile.mkdtemp(prefix="dbaas-test-wal-", dir="/var/tmp"))
    os.chmod(folder, 0o755)
    for name in names:
        shutil.copyfile(spool / name, folder / name)
        os.chmod(folder / name, 0o644)
    return folder


def test_postgres_recovers_a_database_to_a_point_in_time(pg_backups, services, stack, tmp_path):
    spool = Postgres().wal_spool(Context(stack_config.resolve(stack.home), lambda: None))
    source = services("postgres")
    tenant, service_id = services.ids(source)
    with _pg(source) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, phase text)")
        conn.execute("INSERT INTO events SELECT g, 'before base' FROM generate_series(1, 10) g")
    # the local PoP agent ships the spool to the object store every few seconds: paused, the spool
    # holds every segment from the base backup's start until the WAL is staged for the recovery
    with paused(stack, "localpop-agent"):
        base = _timed("postgres base backup", lambda: pg_backups.base_backup(tmp_path / "base"))
        assert base.files == {"base": "base.tar", "manifest": "backup_manifest"}
        assert base.start_time <= base.end_time <= datetime.now(timezone.utc)
        with _pg(source) as conn:
            conn.execute("INSERT INTO events SELECT g, 'T1' FROM generate_series(11, 100) g")
        t1 = datetime.now(timezone.utc)
        wait_for(lambda: datetime.now(timezone.utc) > t1 + timedelta(milliseconds=50), interval=0.01, what="a gap")
        with _pg(source) as conn:
            conn.execute("INSERT INTO events SELECT g, 'T2' FROM generate_series(101, 200) g")
            conn.execute("UPDATE events SET phase = 'T2 update' WHERE id <= 10")
        switched = _timed("postgres switch_wal", lambda: pg_backups.switch_wal())
        archived = spool_listing(spool)
        assert switched.segment in archived and not any(n.endswith(".tmp") for n in os.listdir(spool))
        needed = wal_needed(base, archived)
        assert needed[0] == base.start_segment and switched.segment in needed
        wal = _staged_wal(spool, needed)
    temporary = set(Path(tempfile.gettempdir()).glob("dbaas-pitr-*"))
    try:
        result = _timed("postgres PITR (recover + dump)", lambda: pg_backups.recover_database(
            tmp_path / "base", wal, t1, source.database, tmp_path / "pitr" / "data.dump"))
        assert result.reached is not None and result.reached <= t1
        assert result.tables["public.events"].rows == 100

        target = services("postgres")
        manifest = result.manifest(tenant, service_id, "pitr-1")
        pg_backups.restore(manifest, tmp_path / "pitr", target.database)
        assert pg_backups.verify(manifest, target.database) == []
        with _pg(target) as conn:
            phases = conn.execute("SELECT phase, count(*) FROM events GROUP BY phase ORDER BY phase").fetchall()
        assert phases == [("T1", 90), ("before base", 10)]

        later = datetime.now(timezone.utc) + timedelta(minutes=10)
        with pytest.raises(RecoveryTargetNotReached, match="archived WAL ends before"):
            pg_backups.recover_database(tmp_path / "base", wal, later, source.database, tmp_path / "late.dump")
        assert not (tmp_path / "late.dump").exists()
        assert set(Path(tempfile.gettempdir()).glob("dbaas-pitr-*")) == temporary, "temporary clusters are removed"
    finally:
        shutil.rmtree(wal)


# -- MariaDB ------------------------------------------------------------------------------------
def _my(c: Credentials):
    return pymysql.connect(host=c.host, port=c.port, user=c.username, password=c.password, database=c.database,
                           autocommit=True, connect_timeout=5)


def _my_exec(c: Credentials, *statements, args=None):
    with _my(c) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, args)
        return cur.fetchall()


@pytest.fixture(scope="module")
def my_backups(admins):
    return MariaDBBackups(admins["mariadb"])


def _my_fill(c: Credentials, rows: int = 20000) -> None:
    with _my(c) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(10,2), ratio DOUBLE, "
                    "raw VARBINARY(32), at DATETIME(6)) ENGINE=InnoDB")
        cur.executemany("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s)",
                        [(g, None if g % 7 == 0 else ("NULL" if g % 11 == 0 else f"item {g}"), g / 3, g / 7,
                          bytes([g % 256, 0, 255]), datetime(2024, 1, 1) + timedelta(seconds=g))
                         for g in range(1, rows + 1)])
        cur.execute("CREATE TABLE busy (id INT PRIMARY KEY)")
        cur.execute("CREATE TABLE empty_one (x INT)")
        cur.execute("CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 10")
        cur.execute("CREATE TRIGGER named BEFORE INSERT ON items FOR EACH ROW SET NEW.name = COALESCE(NEW.name, 'unnamed')")


def test_mariadb_backup_restores_into_a_new_service_with_identical_data(my_backups, services, tmp_path):
    source = services("mariadb")
    _my_fill(source)
    tenant, service_id = services.ids(source)
    writer = Writer(lambda: _my(source), lambda conn, n: conn.cursor().execute("INSERT INTO busy VALUES (%s)", (n,)))
    writer.start()
    wait_for(lambda: writer.count > 5, what="the writer to write")
    manifest = _timed("mariadb backup (20k rows)", lambda: my_backups.backup(tenant, service_id, "b-1", tmp_path))
    written = writer.stop()

    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.tables["items"].rows == 20000 and manifest.tables["empty_one"].rows == 0
    assert 0 < manifest.tables["busy"].rows <= written
    assert manifest.consistency["binlog_file"].startswith("binlog.") and manifest.consistency["binlog_pos"] > 4
    assert manifest.consistency["gtid"]

    target = services("mariadb")
    _timed("mariadb restore (20k rows)", lambda: my_backups.restore(manifest, tmp_path, target.database))
    assert my_backups.verify(manifest, target.database) == []
    definers = _my_exec(target, "SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() "
                                "UNION ALL SELECT DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()")
    assert set(definers) == {(f"{target.username}@localhost",)}  # never the old service's user
    assert _my_exec(target, "INSERT INTO items (id) VALUES (0)", "SELECT name FROM items WHERE id = 0") == (("unnamed",),)

    _my_exec(target, "DELETE FROM items WHERE id = 0", "UPDATE items SET ratio = ratio + 1 WHERE id = 3")
    problems = my_backups.verify(manifest, target.database)
    assert len(problems) == 1 and problems[0].startswith("items: same row count (20000) but different content")


def test_mariadb_replays_its_binlog_to_a_point_in_time(my_backups, services, admins, tmp_path):
    source, bystander = services("mariadb"), services("mariadb")
    tenant, service_id = services.ids(source)
    for c in (source, bystander):
        _my_exec(c, "CREATE TABLE events (id INT PRIMARY KEY, phase VARCHAR(20))",
                 "INSERT INTO events VALUES (1, 'backup'), (2, 'backup')")
    manifest = my_backups.backup(tenant, service_id, "b-1", tmp_path / "backup")

    _my_exec(source, "INSERT INTO events VALUES (3, 'T1'), (4, 'T1')", "UPDATE events SET phase = 'T1 update' WHERE id = 1",
             "CREATE TABLE later (x INT)", "INSERT INTO later VALUES (1)")
    _my_exec(bystander, "INSERT INTO events VALUES (3, 'other tenant')")
    passer_by = MariaDBProvisioner(admins["mariadb"])  # the platform provisions another service meanwhile
    passer_tenant, passer_service = f"t{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
    passer = passer_by.provision(passer_tenant, passer_service, "gone")
    passer_by.deprovision(passer_tenant, passer_service)
    t1 = datetime.now(timezone.utc)
    _after_this_second(t1)
    _my_exec(source, "INSERT INTO events VALUES (5, 'T2')", "DELETE FROM events WHERE id = 2", "DROP TABLE later")

    closed = my_backups.flush_and_list_closed_binlogs()
    assert manifest.consistency["binlog_file"] in closed
    shipped = my_backups.copy_binlogs(closed, tmp_path / "binlogs")
    assert [p.name for p in shipped] == closed

    target = services("mariadb")
    my_backups.restore(manifest, tmp_path / "backup", target.database)
    report = _timed("mariadb PITR replay", lambda: my_backups.replay_to_time(
        manifest, tmp_path / "binlogs", t1, target_database=target.database))
    assert report["files"][0] == manifest.consistency["binlog_file"]
    assert _my_exec(target, "SELECT id, phase FROM events ORDER BY id") == (
        (1, "T1 update"), (2, "backup"), (3, "T1"), (4, "T1"))
    assert _my_exec(target, "SELECT x FROM later") == ((1,),)
    assert _my_exec(source, "SELECT COUNT(*) FROM events") == ((4,),)  # the source is untouched
    with pymysql.connect(host=admins["mariadb"].host, port=admins["mariadb"].port, user="root",
                         password=admins["mariadb"].password) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User = %s", (passer.username,))
        assert cur.fetchone() == (0,), "the platform's own account statements are never replayed"
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (passer.database,))
        assert cur.fetchone() == (0,)

    later = datetime.now(timezone.utc) + timedelta(minutes=10)
    with pytest.raises(RecoveryTargetNotReached, match="shipped binlogs end at"):
        my_backups.replay_to_time(manifest, tmp_path / "binlogs", later, target_database=target.database)


# -- Redis --------------------------------------------------------------------------------------
def _rd(c: Credentials, db: int = 0):
    return redis.Redis(host=c.host, port=c.port, username=c.username, password=c.password, db=db, socket_timeout=5)


def test_redis_backup_restores_keys_under_the_new_prefix(admins, services, tmp_path):
    backups = RedisBackups(admins["redis"])
    source, other = services("redis"), services("redis")
    tenant, service_id = services.ids(source)
    p = source.key_prefix
    with _rd(source) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(5000):
            pipe.set(f"{p}k{i}", i)
        pipe.execute()
        client.hset(f"{p}hash", mapping={f"f{i}": i for i in range(300)})
        client.sadd(f"{p}set", *range(200))
        client.zadd(f"{p}zset", {"a": 1.5, "b": -2})
        client.rpush(f"{p}list", *"abcabc")
        client.xadd(f"{p}stream", {"k": "v"})
        client.set(f"{p}session", "x", ex=3600)
    with _rd(source, db=3) as client:
        client.set(f"{p}elsewhere", "db3")
    with _rd(other) as client:
        client.set(f"{other.key_prefix}not-mine", "x")

    manifest = _timed("redis backup (5k keys)", lambda: backups.backup(tenant, service_id, "b-1", tmp_path))
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert {name: stat.rows for name, stat in manifest.tables.items()} == {"db0": 5006, "db3": 1}

    target = services("redis")
    restored = _timed("redis restore (5k keys)", lambda: backups.restore(manifest, tmp_path, target.key_prefix))
    assert restored == 5007
    assert backups.verify(manifest, target.key_prefix) == []
    with _rd(target) as client:  # the new service's own user reads them
        assert client.get(f"{target.key_prefix}k42") == b"42"
        assert 3500 < client.ttl(f"{target.key_prefix}session") <= 3600
        assert client.get(f"{target.key_prefix}not-mine") is None
        client.hset(f"{target.key_prefix}hash", "f7", "changed")
    with _rd(target, db=3) as client:
        assert client.get(f"{target.key_prefix}elsewhere") == b"db3"
    problems = backups.verify(manifest, target.key_prefix)
    assert len(problems) == 1 and problems[0].startswith("db0: same row count (5006) but different content")
