"""The local PoP's engine-compatible servers: MariaDB (where Vitess services live in PoP
``local``) and Redis (where DragonflyDB services live). PostgreSQL, which hosts YugabyteDB
services, is the platform's own ``Postgres`` component.

Each server is installed from Debian when missing, keeps its files in ``<home>/<name>``, binds
127.0.0.1 on the instance's port, runs as the package's service user when the launcher runs as
root, and is healthy only when it answers its protocol with the admin credentials stored in the
instance's secrets. Endpoints show host:port only: the credentials are the admin's.

Owns: how these two servers are installed, initialised, configured, started and probed.
Imports: ``deploy.stack.base`` (the ``Component`` contract) and, lazily, the PyMySQL and redis
clients; ``components`` lists these servers in ``INFRASTRUCTURE``.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from deploy.stack.base import Component, Context, StackError, apt_install, traversable_by_others
from deploy.stack.config import HOST


def service_dir(ctx: Context, name: str, user: str | None) -> Path:
    """``<home>/<name>``, unless a service user cannot reach the home (e.g. one below /root):
    then a folder of its own named after the home, removed on reset (as for PostgreSQL)."""
    home = ctx.config.home
    if user is None or traversable_by_others(home):
        return home / name
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return Path("/var/tmp/dbaas-stack") / digest / name


def _own(user: str | None, *paths: Path, mode: int = 0o750) -> None:
    for path in paths:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, mode)


def _service_user(name: str) -> str | None:
    # The server refuses to (mariadbd) or should not (redis-server) run as root; the Debian
    # package provides a user of its own.
    return name if os.geteuid() == 0 else None


def mysql_native_hash(password: str) -> str:
    """The ``mysql_native_password`` hash, so a password reaches the server (and its logs)
    only in hashed form: ``IDENTIFIED BY PASSWORD '<hash>'``."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


# --------------------------------------------------------------------------------------------
class MariaDB(Component):
    """MariaDB (Debian's 10.11): the MySQL-protocol server behind Vitess services in PoP
    ``local``. Row-based binlog on, so Debezium's MySQL connector can stream tenants' changes and
    backups can replay them to a point in time (``operators.backup.mariadb``): every commit is
    synced to the binlog, files rotate at 64 MiB (and whenever the backup job flushes them to ship
    the closed ones), and are kept for a week, long after they are shipped. The server runs in
    UTC, as the binlog tools are told to."""

    name = "mariadb"
    port_name = "mariadb"
    stop_signal = signal.SIGTERM  # a normal shutdown: InnoDB flushes and exits
    ADMIN_USER = "root"
    SECRET = "mariadb_root_password"
    SERVER = Path("/usr/sbin/mariadbd")
    INSTALL_DB = Path("/usr/bin/mariadb-install-db")
    BINLOG_FILE_BYTES = 64 * 1024**2
    # Shipping copies closed binlogs within minutes; the server keeps them a week all the same.
    BINLOG_KEEP_SECONDS = 7 * 24 * 3600

    def _installed(self, ctx: Context) -> None:
        if not (self.SERVER.exists() and self.INSTALL_DB.exists()):
            apt_install(ctx, "mariadb-server", "MariaDB")
            if not self.SERVER.exists():
                raise StackError(f"mariadb-server is installed but {self.SERVER} is missing; "
                                 "reinstall it with `apt-get install --reinstall -y mariadb-server`")

    def user(self, ctx: Context) -> str | None:
        return _service_user("mysql")

    def base(self, ctx: Context) -> Path:
        return service_dir(ctx, "mariadb", self.user(ctx))

    def data_dir(self, ctx: Context) -> Path:
        return self.base(ctx) / "data"

    def socket(self, ctx: Context) -> Path:
        return self.base(ctx) / "mysqld.sock"

    def prepare(self, ctx: Context) -> None:
        self._installed(ctx)
        base, data, user = self.base(ctx), self.data_dir(ctx), self.user(ctx)
        ready = base / ".initialised"
        if ready.exists():
            return
        if data.exists():  # an earlier initialisation stopped half-way: nothing in it to keep
            shutil.rmtree(data)
        data.mkdir(parents=True)
        _own(user, base, data)
        if base.parent != ctx.config.home:
            os.chmod(base.parent, 0o755)
        # Root gets the generated password (hashed here, so it is never on disk in clear) and
        # only loopback accounts remain: install-db also makes one for this machine's hostname.
        hashed = mysql_native_hash(ctx.secrets()[self.SECRET])
        loopback = "('localhost', '127.0.0.1', '::1')"
        extra = base / "init.sql"
        extra.write_text(
            f"DELETE FROM mysql.global_priv WHERE Host NOT IN {loopback};\n"
            f"DELETE FROM mysql.proxies_priv WHERE Host NOT IN {loopback};\n"
            "FLUSH PRIVILEGES;\n"
            + "".join(f"ALTER USER 'root'@'{host}' IDENTIFIED BY PASSWORD '{hashed}';\n"
                      for host in ("localhost", "127.0.0.1", "::1")))
        _own(user, extra, mode=0o600)
        ctx.say("mariadb: initialising a new data folder…")
        argv = [str(self.INSTALL_DB), "--no-defaults", f"--datadir={data}",
                "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
                f"--extra-file={extra}"]
        if user:
            argv.append(f"--user={user}")
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        extra.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise StackError(f"mariadb-install-db failed:\n{proc.stdout[-1000:]}{proc.stderr[-2000:]}")
        ready.write_text("mariadb-install-db done\n")

    def argv(self, ctx: Context) -> list[str]:
        base, data = self.base(ctx), self.data_dir(ctx)
        return [str(self.SERVER), "--no-defaults",  # never /etc/mysql/my.cnf: this instance only
                f"--datadir={data}", f"--port={ctx.config.port('mariadb')}", f"--bind-address={HOST}",
                "--skip-networking=0", f"--socket={self.socket(ctx)}",
                f"--pid-file={base / 'mariadbd.pid'}", "--skip-name-resolve",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
                "--innodb-buffer-pool-size=64M", "--max-connections=200",
                "--default-time-zone=+00:00",
                # per-user counters (information_schema.USER_STATISTICS): services' transactions/s
                "--userstat=1",
                # for Debezium's MySQL connector and point-in-time recovery
                "--server-id=1", "--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL",
                "--sync-binlog=1", f"--max-binlog-size={self.BINLOG_FILE_BYTES}",
                # Tenants create their own triggers and functions; row-based logging makes that
                # safe for replay, so no SUPER is needed for it.
                "--log-bin-trust-function-creators=1",
                f"--binlog-expire-logs-seconds={self.BINLOG_KEEP_SECONDS}"]

    def _connect(self, ctx: Context):
        import pymysql

        return pymysql.connect(host=HOST, port=ctx.config.port("mariadb"), user=self.ADMIN_USER,
                               password=ctx.secrets()[self.SECRET], connect_timeout=2,
                               read_timeout=5, write_timeout=5)

    def healthy(self, ctx: Context) -> bool:
        import pymysql

        try:
            with self._connect(ctx) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        except (pymysql.err.MySQLError, OSError):
            return False

    def endpoint(self, ctx: Context) -> str:
        return f"{HOST}:{ctx.config.port('mariadb')}"

    def reset_paths(self, ctx: Context) -> list[Path]:
        base = self.base(ctx)
        return [base.parent] if base.parent != ctx.config.home else []


# --------------------------------------------------------------------------------------------
class Redis(Component):
    """Redis (Debian's 7.0): the Redis-protocol server behind DragonflyDB services in PoP
    ``local``. Users live in an ACL file (each tenant service an ACL user confined to a key
    prefix); the ``default`` user is off, so every client authenticates."""

    name = "redis"
    port_name = "redis"
    stop_signal = signal.SIGTERM  # redis fsyncs its append-only file and exits
    ADMIN_USER = "admin"
    SECRET = "redis_admin_password"
    SERVER = Path("/usr/bin/redis-server")

    def user(self, ctx: Context) -> str | None:
        return _service_user("redis")

    def base(self, ctx: Context) -> Path:
        return service_dir(ctx, "redis", self.user(ctx))

    def acl_file(self, ctx: Context) -> Path:
        return self.base(ctx) / "users.acl"

    def prepare(self, ctx: Context) -> None:
        if not self.SERVER.exists():
            apt_install(ctx, "redis-server", "Redis")
        base, user = self.base(ctx), self.user(ctx)
        data = base / "data"
        data.mkdir(parents=True, exist_ok=True)
        _own(user, base, data)
        if base.parent != ctx.config.home:
            os.chmod(base.parent, 0o755)
        (base / "redis.conf").write_text(f"""\
# generated by the dbaas launcher on every start; edit deploy/stack/engines.py instead
port {ctx.config.port('redis')}
bind {HOST}
protected-mode yes
daemonize no
logfile ""
dir {data}
appendonly yes
appendfsync everysec
aclfile {self.acl_file(ctx)}
""")
        self._ensure_acl_file(ctx)

    def _ensure_acl_file(self, ctx: Context) -> None:
        """Admin and ``default`` lines as they must be; every other user (the tenants') kept.
        Rewritten only when they differ, and only the password's SHA-256 is written."""
        path = self.acl_file(ctx)
        digest = hashlib.sha256(ctx.secrets()[self.SECRET].encode()).hexdigest()
        fixed = {"default": "user default off resetpass resetkeys resetchannels -@all",
                 self.ADMIN_USER: f"user {self.ADMIN_USER} on #{digest} ~* &* +@all"}
        lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
        users = {words[1]: set(words[2:]) for words in lines if len(words) > 1}
        # Compared by meaning: ACL SAVE writes rules in its own canonical form.
        admin, default = users.get(self.ADMIN_USER, set()), users.get("default", set())
        default_can_log_in = "off" not in default or any(w == "nopass" or w[:1] in "#>" for w in default)
        if {"on", f"#{digest}", "~*", "+@all"} <= admin and not default_can_log_in:
            return
        kept = [" ".join(words) for words in lines if len(words) > 1 and words[1] not in fixed]
        wanted = [*fixed.values(), *kept]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(wanted) + "\n")
        _own(self.user(ctx), tmp, mode=0o600)
        os.replace(tmp, path)

    def argv(self, ctx: Context) -> list[str]:
        return [str(self.SERVER), str(self.base(ctx) / "redis.conf")]

    def healthy(self, ctx: Context) -> bool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(host=HOST, port=ctx.config.port("redis"), username=self.ADMIN_USER,
                             password=ctx.secrets()[self.SECRET], socket_timeout=2,
                             socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        try:
            return client.ping() is True
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def endpoint(self, ctx: Context) -> str:
        return f"{HOST}:{ctx.config.port('redis')}"

    def reset_paths(self, ctx: Context) -> list[Path]:
        base = self.base(ctx)
        return [base.parent] if base.parent != ctx.config.home else []
