"""The local PoP's servers for real: MariaDB and Redis run in the test platform next to its
PostgreSQL, and each engine's provisioner hands out credentials that work, reach only their own
service, survive restarts, and stop working once the service is deprovisioned."""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import pymysql
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deploy.stack import config as stack_config
from deploy.stack.engines import MariaDB, Redis
from deploy.stack.launcher import Launcher
from operators.localpop.provisioners import (
    AdminEndpoint,
    Credentials,
    MariaDBProvisioner,
    PostgresProvisioner,
    ProvisioningFailed,
    RedisProvisioner,
    ServerUnavailable,
    service_identifier,
)
from tests.conftest import wait_for

# What a tenant's client raises when its credentials, session or data are gone.
CLIENT_ERRORS = (psycopg.Error, pymysql.err.MySQLError, redis.RedisError, OSError, AssertionError)


# -- one adapter per engine: how a tenant uses its credentials -----------------------------------
@dataclass(frozen=True)
class Engine:
    name: str
    make: Callable[[bytes | None], object]  # password_key -> provisioner
    write: Callable[[Credentials, str], None]  # store a marker with the service's credentials
    read: Callable[[Credentials], str | None]  # the marker, read back with the credentials
    reach_other: Callable[[Credentials, Credentials], None]  # raises when `mine` cannot reach `other`
    denied: tuple[type[BaseException], ...]
    leftovers: Callable[[Credentials], bool]  # the admin still sees the service's data or user
    open_session: Callable[[Credentials], Callable[[], bool]]  # -> "is that session still usable?"


def _pg(c: Credentials, dbname: str | None = None):
    return psycopg.connect(host=c.host, port=c.port, user=c.username, password=c.password,
                           dbname=dbname or c.database, connect_timeout=5, autocommit=True)


def _my(c: Credentials, database: str | None = None):
    return pymysql.connect(host=c.host, port=c.port, user=c.username, password=c.password,
                           database=database or c.database, connect_timeout=5, autocommit=True)


def _pg_write(c, marker):
    with _pg(c) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS markers (v text)")
        conn.execute("INSERT INTO markers VALUES (%s)", (marker,))


def _pg_read(c):
    with _pg(c) as conn:
        row = conn.execute("SELECT v FROM markers").fetchone()
        return row[0] if row else None


def _my_write(c, marker):
    with _my(c) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS markers (v varchar(100))")
        cur.execute("INSERT INTO markers VALUES (%s)", (marker,))


def _my_read(c):
    with _my(c) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM markers")
        row = cur.fetchone()
        return row[0] if row else None


def _my_reach_other(mine, other):
    try:  # connecting to the other database: 1044 access denied
        _my(mine, other.database).close()
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] == 1044, exc
    else:
        raise AssertionError("connected to another tenant's database")
    with _my(mine) as conn, conn.cursor() as cur:  # naming it from its own database: 1142
        cur.execute(f"SELECT v FROM `{other.database}`.markers")


def _rd(c, db: int = 0):
    return redis.Redis(host=c.host, port=c.port, username=c.username, password=c.password, db=db,
                       socket_timeout=5, decode_responses=True, retry=Retry(NoBackoff(), 0))


def _rd_write(c, marker):
    with _rd(c) as client:
        client.set(f"{c.key_prefix}marker", marker)
    with _rd(c, db=3) as client:  # another logical database, same prefix: still the tenant's
        client.set(f"{c.key_prefix}elsewhere", marker)


def _rd_session(c):
    """One raw connection, never re-opened behind our back."""
    conn = redis.Connection(host=c.host, port=c.port, username=c.username, password=c.password,
                            socket_timeout=5)
    conn.connect()
    return conn


def _rd_ping(conn):
    conn.send_command("PING")
    assert conn.read_response() in (b"PONG", "PONG", True)


def _rd_read(c):
    with _rd(c) as client:
        return client.get(f"{c.key_prefix}marker")


def _rd_reach_other(mine, other):
    with _rd(mine) as client:
        client.get(f"{other.key_prefix}marker")


def _session(connect, probe):
    def opener(c):
        conn = connect(c)

        def alive():
            try:
                probe(conn)
                return True
            except CLIENT_ERRORS:
                return False
        return alive
    return opener


@pytest.fixture(scope="session")
def engines(stack) -> dict[str, Engine]:
    secrets = json.loads((stack.home / "secrets.json").read_text())
    ports = stack.status["ports"]
    pg = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
    pg_admin = AdminEndpoint(pg["host"], int(pg["port"]), pg["user"], pg["password"])
    my_admin = AdminEndpoint("127.0.0.1", ports["mariadb"], "root", secrets["mariadb_root_password"])
    rd_admin = AdminEndpoint("127.0.0.1", ports["redis"], "admin", secrets["redis_admin_password"])

    def pg_leftovers(c):
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %(n)s UNION ALL "
                                     "SELECT 1 FROM pg_roles WHERE rolname = %(n)s", {"n": c.username}).fetchall())

    def my_leftovers(c):
        with pymysql.connect(host=my_admin.host, port=my_admin.port, user="root",
                             password=my_admin.password) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s UNION ALL "
                        "SELECT 1 FROM mysql.user WHERE User = %s", (c.database, c.username))
            return bool(cur.fetchall())

    def rd_leftovers(c):
        with redis.Redis(host=rd_admin.host, port=rd_admin.port, username="admin",
                         password=rd_admin.password, decode_responses=True) as admin:
            found = c.username in admin.acl_users()
            for db in range(16):
                admin.select(db)
                found = found or any(admin.scan_iter(match=f"{c.key_prefix}*"))
            return found

    return {
        "postgres": Engine(
            "postgres", lambda key: PostgresProvisioner(pg_admin, admin_database=pg["dbname"], password_key=key),
            _pg_write, _pg_read, lambda mine, other: _pg(mine, other.database).close(),
            (psycopg.OperationalError,), pg_leftovers,
            _session(_pg, lambda conn: conn.execute("SELECT 1"))),
        "mariadb": Engine(
            "mariadb", lambda key: MariaDBProvisioner(my_admin, password_key=key),
            _my_write, _my_read, _my_reach_other, (pymysql.err.OperationalError,), my_leftovers,
            _session(_my, lambda conn: conn.cursor().execute("SELECT 1"))),
        "redis": Engine(
            "redis", lambda key: RedisProvisioner(rd_admin, password_key=key),
            _rd_write, _rd_read, _rd_reach_other, (redis.exceptions.NoPermissionError,), rd_leftovers,
            _session(_rd_session, _rd_ping)),
    }


def _works(engine: Engine, c: Credentials) -> bool:
    try:
        engine.read(c)
        return True
    except CLIENT_ERRORS:
        return False


def _new_service() -> tuple[str, str]:
    return f"t{uuid.uuid4().hex[:10]}", str(uuid.uuid4())


ENGINES = ["postgres", "mariadb", "redis"]


# -- the servers in the platform -----------------------------------------------------------------
def test_mariadb_and_redis_run_healthy_without_showing_admin_passwords(stack):
    proc = stack.stack_cli("status", "--json", check=False)
    status = json.loads(proc.stdout)
    secrets = json.loads((stack.home / "secrets.json").read_text())
    for name in ("mariadb", "redis"):
        comp = status["components"][name]
        assert comp["state"] == "healthy" and comp["pid"], comp
        assert comp["endpoint"] == f"127.0.0.1:{status['ports'][name]}"
    assert secrets["mariadb_root_password"] not in proc.stdout
    assert secrets["redis_admin_password"] not in proc.stdout
    assert {"postgres_superuser_password", "dbaas_password"} <= set(secrets)  # old keys kept


# -- provisioning, per engine ------------------------------------------------------------------
@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_service_gets_working_credentials_that_reach_only_its_own_data(engines, engine_name):
    engine = engines[engine_name]
    provisioner = engine.make(None)
    tenant_a, service_a = _new_service()
    tenant_b, service_b = _new_service()
    a = provisioner.provision(tenant_a, service_a, "orders")
    b = provisioner.provision(tenant_b, service_b, "orders")
    try:
        assert a.username == service_identifier(tenant_a, service_a) and a.username != b.username
        assert a.password not in repr(a) and a.uri.startswith(
            {"postgres": "postgresql://", "mariadb": "mysql://", "redis": "redis://"}[engine_name])
        engine.write(a, "from-a")
        assert engine.read(a) == "from-a"
        with pytest.raises(engine.denied):
            engine.reach_other(b, a)
        with pytest.raises(engine.denied):
            engine.reach_other(a, b)
    finally:
        provisioner.deprovision(tenant_a, service_a)
        provisioner.deprovision(tenant_b, service_b)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_provisioning_again_rotates_the_password_and_keeps_the_data(engines, engine_name):
    engine = engines[engine_name]
    provisioner = engine.make(None)
    tenant, service = _new_service()
    first = provisioner.provision(tenant, service, "orders")
    try:
        engine.write(first, "kept")
        second = provisioner.provision(tenant, service, "orders")
        assert second.password != first.password
        assert engine.read(second) == "kept"
        assert not _works(engine, first), "the rotated-out password still works"
    finally:
        provisioner.deprovision(tenant, service)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_with_a_password_key_provisioning_again_returns_the_same_credentials(engines, engine_name):
    engine = engines[engine_name]
    provisioner = engine.make(b"instance secret for the test")
    tenant, service = _new_service()
    first = provisioner.provision(tenant, service, "orders")
    try:
        engine.write(first, "kept")
        second = provisioner.provision(tenant, service, "orders")
        assert second == first
        assert engine.read(first) == "kept"
    finally:
        provisioner.deprovision(tenant, service)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_deprovisioning_removes_data_and_user_and_ends_open_sessions(engines, engine_name):
    engine = engines[engine_name]
    provisioner = engine.make(None)
    tenant, service = _new_service()
    creds = provisioner.provision(tenant, service, "orders")
    engine.write(creds, "doomed")
    alive = engine.open_session(creds)
    assert alive()

    provisioner.deprovision(tenant, service)
    assert not _works(engine, creds)
    wait_for(lambda: not alive(), timeout=30, what=f"the open {engine_name} session to be ended")
    assert not engine.leftovers(creds)
    provisioner.deprovision(tenant, service)  # again: nothing to do, no error

    again = provisioner.provision(tenant, service, "orders")  # the same service id, from scratch
    try:
        assert _empty_or_missing(engine, again)
    finally:
        provisioner.deprovision(tenant, service)


def _empty_or_missing(engine: Engine, c: Credentials) -> bool:
    try:
        return engine.read(c) is None
    except (psycopg.errors.UndefinedTable, pymysql.err.ProgrammingError):
        return True  # the table went with the database


# -- PostgreSQL specifics -------------------------------------------------------------------------
def test_a_tenant_role_opens_its_own_database_and_no_other(engines, stack):
    provisioner = engines["postgres"].make(None)
    (tenant, service), (other_tenant, other_service) = _new_service(), _new_service()
    creds = provisioner.provision(tenant, service, "orders")
    other = provisioner.provision(other_tenant, other_service, "orders")
    try:
        _pg(creds).close()
        for dbname in ("dbaas", "registry", "postgres", "template1", other.database):
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                _pg(creds, dbname).close()
        # the platform itself still opens the server's own database
        platform = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
        with psycopg.connect(**{**platform, "dbname": "postgres"}, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        provisioner.deprovision(tenant, service)
        provisioner.deprovision(other_tenant, other_service)


def test_a_tenant_role_holds_a_limited_number_of_sessions(engines, stack):
    from operators.localpop.provisioners import CONNECTION_LIMIT

    provisioner = engines["postgres"].make(None)
    tenant, service = _new_service()
    creds = provisioner.provision(tenant, service, "orders")
    sessions = []
    try:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            limit = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (creds.username,)).fetchone()
        assert limit == (CONNECTION_LIMIT,)
        sessions = [_pg(creds) for _ in range(CONNECTION_LIMIT)]
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            _pg(creds).close()
    finally:
        for conn in sessions:
            conn.close()
        provisioner.deprovision(tenant, service)


# -- errors an agent can act on -----------------------------------------------------------------
def test_wrong_admin_password_is_permanent_and_unreachable_server_is_transient(stack):
    ports = stack.status["ports"]
    cases = [  # (reason, provisioner, expected error)
        ("mariadb wrong password",
         MariaDBProvisioner(AdminEndpoint("127.0.0.1", ports["mariadb"], "root", "wrong")), ProvisioningFailed),
        ("redis wrong password",
         RedisProvisioner(AdminEndpoint("127.0.0.1", ports["redis"], "admin", "wrong")), ProvisioningFailed),
        ("postgres wrong password",
         PostgresProvisioner(AdminEndpoint("127.0.0.1", ports["postgres"], "dbaas", "wrong")), ProvisioningFailed),
        ("nothing listens", RedisProvisioner(AdminEndpoint("127.0.0.1", 1, "admin", "x")), ServerUnavailable),
        ("nothing listens", MariaDBProvisioner(AdminEndpoint("127.0.0.1", 1, "root", "x")), ServerUnavailable),
        ("nothing listens", PostgresProvisioner(AdminEndpoint("127.0.0.1", 1, "dbaas", "x")), ServerUnavailable),
    ]
    for reason, provisioner, error in cases:
        with pytest.raises(error) as caught:
            provisioner.provision("acme", str(uuid.uuid4()), "orders")
        assert "wrong" not in str(caught.value), reason  # the admin password is never echoed


# -- durability ------------------------------------------------------------------------------
def test_provisioned_services_survive_a_restart_of_their_servers(engines, stack):
    services = {}
    for name in ("mariadb", "redis"):
        engine = engines[name]
        tenant, service = _new_service()
        creds = engine.make(None).provision(tenant, service, "orders")
        engine.write(creds, "durable")
        services[name] = (engine, tenant, service, creds)

    # Only these two servers restart: the platform's own restart is test_platform's business.
    launcher = Launcher(stack_config.resolve(stack.home), say=lambda _m: None, components=[MariaDB(), Redis()])
    assert sorted(launcher.down()) == ["mariadb", "redis"]
    assert all(s.state == "stopped" for s in launcher.status())
    launcher.up()
    try:
        for name, (engine, _, _, creds) in services.items():
            assert engine.read(creds) == "durable", name
    finally:
        for engine, tenant, service, _ in services.values():
            engine.make(None).deprovision(tenant, service)
