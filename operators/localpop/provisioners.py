"""One provisioner per local server: ``provision(tenant, service_id, name) -> Credentials`` and
``deprovision(tenant, service_id)``, both safe to run any number of times.

Names. A service's database, user and key prefix are all named ``service_identifier(tenant,
service_id)``: ``s_`` and 24 hex digits of SHA-256 over tenant and service id, 26 characters of
``[a-z0-9_]``: valid unquoted in PostgreSQL (≤ 63), MariaDB/MySQL (databases ≤ 64, users ≤ 32 in
MySQL 8, which Vitess speaks; MariaDB allows 80) and as Redis ACL user names; stable for a
service; distinct for distinct (tenant, service id) pairs but for a 2^-96 hash collision. Nothing
readable on purpose: every PostgreSQL role can list all databases and roles of the server (and
their comments), so names and comments must not tell one tenant who the others are. The
``service provisioned`` log line maps tenant and service id to the name.

Passwords. With a ``password_key`` (bytes, e.g. a secret of the instance), a service's password
is an HMAC of its identity, so provisioning again returns the very same working credentials —
retries and a lost reply cost nothing. Without one, each ``provision`` generates a new password
with ``secrets`` and the previous one stops working (rotation). Passwords reach the servers
hashed where the protocol allows it (SCRAM verifier, ``mysql_native_password`` hash, ACL
``#sha256``), are never logged, and are hidden from the reprs of ``Credentials`` and
``AdminEndpoint``.

Isolation. PostgreSQL: a LOGIN role owning its database, at most ``CONNECTION_LIMIT`` sessions,
CONNECT (and TEMPORARY) revoked from PUBLIC on that database so no other tenant can open it; the
server's ``postgres`` and ``template1`` databases are closed to PUBLIC by the platform (see
``deploy/stack/components.py``), so a tenant role opens its own database and nothing else. MariaDB: ``'user'@'127.0.0.1'`` and ``'user'@'localhost'`` with privileges on
their own database only. Redis: an ACL user confined to keys and channels under ``<name>:``,
without admin, dangerous or keyspace-wide commands (SCAN, RANDOMKEY, DBSIZE, FUNCTION, …).

Errors: ``ServerUnavailable`` (transient: retry with backoff) and ``ProvisioningFailed``
(permanent: wrong admin credentials, refused input, a server error), both ``ProvisioningError``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

import structlog

log = structlog.get_logger("operators.localpop")


class ProvisioningError(Exception):
    """Base of this package's errors; the message says what failed and what to do."""


class ServerUnavailable(ProvisioningError):
    """The server did not answer: transient, retry with backoff."""


class ProvisioningFailed(ProvisioningError):
    """The server refused or the request cannot succeed as given: permanent."""


@dataclass(frozen=True)
class AdminEndpoint:
    """How a provisioner reaches a server as its administrator."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Credentials:
    """What a tenant needs to connect to its service. ``database`` for SQL servers,
    ``key_prefix`` for Redis; ``uri`` carries the password (URL-encoded)."""

    username: str
    password: str = field(repr=False)
    host: str
    port: int
    uri: str = field(repr=False)
    database: str | None = None
    key_prefix: str | None = None


class Provisioner(Protocol):
    engine_server: str

    def provision(self, tenant: str, service_id: str, name: str) -> Credentials: ...

    def deprovision(self, tenant: str, service_id: str) -> None: ...


# -- naming and passwords ----------------------------------------------------------------------
def service_identifier(tenant: str, service_id: str) -> str:
    """The name of a service's database, user and key prefix on every local server."""
    if not tenant or not tenant.strip() or not service_id or not service_id.strip():
        raise ProvisioningFailed("tenant and service id must both be non-empty")
    return "s_" + hashlib.sha256(f"{tenant}\x00{service_id}".encode()).hexdigest()[:24]


def _password(key: bytes | None, server: str, identifier: str) -> str:
    if key is None:
        return secrets.token_urlsafe(24)
    mac = hmac.new(key, f"dbaas-localpop/{server}/{identifier}".encode(), "sha256").digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")[:32]


def scram_sha256_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677), so the clear
    password never reaches the server. Our passwords are ASCII, which SASLprep leaves as is."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    salt_b64, stored_b64, server_b64 = (base64.b64encode(raw).decode() for raw in
                                        (salt, hashlib.sha256(client_key).digest(), server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_b64}${stored_b64}:{server_b64}"


def mysql_native_hash(password: str) -> str:
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def _uri(scheme: str, user: str, password: str, host: str, port: int, path: str) -> str:
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{path}"


# -- PostgreSQL (YugabyteDB's YSQL) --------------------------------------------------------------
# Sessions one tenant role may hold: the server's max_connections is shared by every tenant.
CONNECTION_LIMIT = 20

class PostgresProvisioner:
    """A database and its owning LOGIN role. The admin needs CREATEROLE and CREATEDB (the
    platform's ``dbaas`` role) or superuser; ``admin_database`` is one it may connect to. No
    comment names the service: comments on databases are readable by every role."""

    engine_server = "postgres"

    def __init__(self, admin: AdminEndpoint, *, admin_database: str = "postgres",
                 password_key: bytes | None = None, connect_timeout: float = 5.0):
        self.admin = admin
        self.admin_database = admin_database
        self.password_key = password_key
        self.connect_timeout = connect_timeout

    def connect_to(self, database: str):
        """An autocommit admin session in ``database`` (a context manager), errors as this module's."""
        return self._connect(database)

    @contextmanager
    def _connect(self, database: str | None = None) -> Iterator:
        import psycopg

        try:
            conn = psycopg.connect(host=self.admin.host, port=self.admin.port, user=self.admin.user,
                                   password=self.admin.password, dbname=database or self.admin_database,
                                   connect_timeout=max(1, round(self.connect_timeout)), autocommit=True)
        except psycopg.OperationalError as exc:
            raise _classify_pg_connect_error(exc, self.admin) from None
        try:
            with conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise ServerUnavailable(f"PostgreSQL at {self.admin.host}:{self.admin.port} went away: "
                                    f"{_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise ProvisioningFailed(f"PostgreSQL refused: {_first_line(exc)}") from None

    def provision(self, tenant: str, service_id: str, name: str) -> Credentials:
        import psycopg
        from psycopg import sql

        ident = service_identifier(tenant, service_id)
        password = _password(self.password_key, self.engine_server, ident)
        role = sql.Identifier(ident)
        # Only a superuser may even mention SUPERUSER/REPLICATION/BYPASSRLS in ALTER ROLE; a new
        # role has none of them.
        options = sql.SQL("LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT {} PASSWORD {}").format(
            sql.Literal(CONNECTION_LIMIT), sql.Literal(scram_sha256_verifier(password)))
        with self._connect() as conn:
            for attempt in (1, 2):  # a concurrent provision of the same service may win a race
                try:
                    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ident,)).fetchone():
                        conn.execute(sql.SQL("ALTER ROLE {} WITH ").format(role) + options)
                    else:
                        conn.execute(sql.SQL("CREATE ROLE {} WITH ").format(role) + options)
                    # Membership lets the admin create a database owned by the role (PostgreSQL 15)
                    # and end its sessions on deprovision.
                    if not conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (ident,)).fetchone()[0]:
                        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (ident,)).fetchone():
                        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(role, role))
                    break
                except (psycopg.errors.DuplicateObject, psycopg.errors.DuplicateDatabase,
                        psycopg.errors.UniqueViolation):
                    if attempt == 2:
                        raise
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(role, role))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))
        log.info("service provisioned", server=self.engine_server, tenant=tenant, service_id=service_id, name=name,
                 database=ident)
        host, port = self.admin.host, self.admin.port
        return Credentials(ident, password, host, port, _uri("postgresql", ident, password, host, port, ident),
                           database=ident)

    def deprovision(self, tenant: str, service_id: str) -> None:
        from psycopg import sql

        ident = service_identifier(tenant, service_id)
        role = sql.Identifier(ident)
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ident,)).fetchone():
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))  # no new sessions
                if not conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (ident,)).fetchone()[0]:
                    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE usename = %s AND pid <> pg_backend_pid()", (ident,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(role))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        log.info("service deprovisioned", server=self.engine_server, tenant=tenant, service_id=service_id,
                 database=ident)


def _classify_pg_connect_error(exc: Exception, admin: AdminEndpoint) -> ProvisioningError:
    where = f"PostgreSQL at {admin.host}:{admin.port}"
    if getattr(exc, "sqlstate", None) in ("28P01", "28000") or "authentication failed" in str(exc):
        return ProvisioningFailed(f"{where} refused the admin user {admin.user!r}: check its password")
    return ServerUnavailable(f"{where} is not reachable: {_first_line(exc)}")


# -- MariaDB (Vitess's MySQL protocol) -----------------------------------------------------------
class MariaDBProvisioner:
    """A database and a user of the same name, for TCP (127.0.0.1) and the socket (localhost),
    with every privilege on that database and none elsewhere."""

    engine_server = "mariadb"
    HOSTS = ("127.0.0.1", "localhost")

    def __init__(self, admin: AdminEndpoint, *, password_key: bytes | None = None,
                 connect_timeout: float = 5.0):
        self.admin = admin
        self.password_key = password_key
        self.connect_timeout = connect_timeout

    @contextmanager
    def _cursor(self) -> Iterator:
        import pymysql

        where = f"MariaDB at {self.admin.host}:{self.admin.port}"
        try:
            conn = pymysql.connect(host=self.admin.host, port=self.admin.port, user=self.admin.user,
                                   password=self.admin.password, connect_timeout=self.connect_timeout,
                                   autocommit=True, charset="utf8mb4")
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 1045:
                raise ProvisioningFailed(f"{where} refused the admin user {self.admin.user!r}: "
                                         "check its password") from None
            raise ServerUnavailable(f"{where} is not reachable: {exc.args[-1]}") from None
        try:
            with conn, conn.cursor() as cur:
                yield cur
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in (2006, 2013):  # server gone away / lost connection
                raise ServerUnavailable(f"{where} went away: {exc.args[-1]}") from None
            raise ProvisioningFailed(f"MariaDB refused: {exc.args[-1]}") from None
        except pymysql.err.MySQLError as exc:
            raise ProvisioningFailed(f"MariaDB refused: {exc.args[-1] if exc.args else exc}") from None

    def provision(self, tenant: str, service_id: str, name: str) -> Credentials:
        ident = service_identifier(tenant, service_id)
        password = _password(self.password_key, self.engine_server, ident)
        hashed = mysql_native_hash(password)
        with self._cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{ident}` CHARACTER SET utf8mb4 "
                        "COLLATE utf8mb4_unicode_ci COMMENT %s",
                        (f"dbaas service {name} ({service_id}) of tenant {tenant}"[:1024],))
            for host in self.HOSTS:
                account = f"'{ident}'@'{host}'"
                cur.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY PASSWORD %s", (hashed,))
                cur.execute(f"ALTER USER {account} IDENTIFIED BY PASSWORD %s", (hashed,))
                cur.execute(f"GRANT ALL PRIVILEGES ON `{ident}`.* TO {account}")
        log.info("service provisioned", server=self.engine_server, tenant=tenant, service_id=service_id, name=name,
                 database=ident)
        host, port = self.admin.host, self.admin.port
        return Credentials(ident, password, host, port, _uri("mysql", ident, password, host, port, ident),
                           database=ident)

    def deprovision(self, tenant: str, service_id: str) -> None:
        import pymysql

        ident = service_identifier(tenant, service_id)
        with self._cursor() as cur:
            # Users first, so nothing logs in again; then end their sessions; then the data.
            cur.execute("DROP USER IF EXISTS " + ", ".join(f"'{ident}'@'{h}'" for h in self.HOSTS))
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (ident,))
            for (session,) in cur.fetchall():
                try:
                    cur.execute(f"KILL CONNECTION {int(session)}")
                except pymysql.err.MySQLError as exc:  # 1094: it ended on its own meanwhile
                    if exc.args[:1] != (1094,):
                        raise
            cur.execute(f"DROP DATABASE IF EXISTS `{ident}`")
        log.info("service deprovisioned", server=self.engine_server, tenant=tenant, service_id=service_id,
                 database=ident)


# -- Redis (DragonflyDB's protocol) -------------------------------------------------------------
# Beyond admin and dangerous commands: whatever reaches other tenants' keys, metadata or state.
REDIS_DENIED = ("-@admin", "-@dangerous", "-scan", "-randomkey", "-dbsize", "-function", "-script|flush",
                "-script|kill", "-pubsub", "-memory|doctor", "-memory|stats", "-memory|malloc-stats",
                "-memory|purge")


class RedisProvisioner:
    """An ACL user confined to the keys and channels under ``<name>:`` in every logical
    database; saved to the server's ACL file. Deprovisioning also deletes those keys."""

    engine_server = "redis"

    def __init__(self, admin: AdminEndpoint, *, password_key: bytes | None = None,
                 connect_timeout: float = 5.0):
        self.admin = admin
        self.password_key = password_key
        self.connect_timeout = connect_timeout

    @contextmanager
    def _client(self, db: int = 0) -> Iterator:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        where = f"Redis at {self.admin.host}:{self.admin.port}"
        # No retries inside the client: the caller retries ServerUnavailable with its own backoff,
        # and a refused password is not worth retrying at all.
        client = redis.Redis(host=self.admin.host, port=self.admin.port, username=self.admin.user,
                             password=self.admin.password, db=db, socket_timeout=self.connect_timeout,
                             socket_connect_timeout=self.connect_timeout, decode_responses=True,
                             retry=Retry(NoBackoff(), 0))
        try:
            yield client
        except redis.AuthenticationError:
            raise ProvisioningFailed(f"{where} refused the admin user {self.admin.user!r}: "
                                     "check its password") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ServerUnavailable(f"{where} is not reachable: {exc}") from None
        except redis.RedisError as exc:
            raise ProvisioningFailed(f"Redis refused: {exc}") from None
        finally:
            client.close()

    def provision(self, tenant: str, service_id: str, name: str) -> Credentials:
        ident = service_identifier(tenant, service_id)
        prefix = f"{ident}:"
        password = _password(self.password_key, self.engine_server, ident)
        digest = hashlib.sha256(password.encode()).hexdigest()
        with self._client() as client:
            # `reset` first: the rules below are the user's whole definition, whatever it had.
            client.execute_command("ACL", "SETUSER", ident, "reset", "on", f"#{digest}", f"~{prefix}*",
                                   f"&{prefix}*", "+@all", *REDIS_DENIED)
            client.execute_command("ACL", "SAVE")
        log.info("service provisioned", server=self.engine_server, tenant=tenant, service_id=service_id, name=name,
                 key_prefix=prefix)
        host, port = self.admin.host, self.admin.port
        return Credentials(ident, password, host, port, _uri("redis", ident, password, host, port, "0"),
                           key_prefix=prefix)

    def deprovision(self, tenant: str, service_id: str) -> None:
        ident = service_identifier(tenant, service_id)
        prefix = f"{ident}:"
        with self._client() as client:
            client.execute_command("ACL", "DELUSER", ident)  # also disconnects its clients
            client.execute_command("ACL", "SAVE")
            # A user may SELECT any logical database: delete its keys wherever they are.
            used = [int(name[2:]) for name in client.info("keyspace") if name.startswith("db")]
        for db in used:
            with self._client(db) as client:
                batch: list[str] = []
                for key in client.scan_iter(match=f"{prefix}*", count=1000):
                    batch.append(key)
                    if len(batch) == 1000:
                        client.unlink(*batch)
                        batch.clear()
                if batch:
                    client.unlink(*batch)
        log.info("service deprovisioned", server=self.engine_server, tenant=tenant, service_id=service_id,
                 key_prefix=prefix)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


PROVISIONERS: dict[str, type] = {
    # engine offered in PoP `local` -> the provisioner for the server standing in for it
    "yugabyte": PostgresProvisioner,
    "vitess": MariaDBProvisioner,
    "dragonfly": RedisProvisioner,
}
