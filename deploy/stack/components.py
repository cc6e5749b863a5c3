"""Each part of the local platform: how to prepare it, start it, probe it and stop it.

A component is prepared once (initdb, storage format, bare repository), started as a detached
process tracked by a pid file, and is *healthy* only when it answers its own protocol
(a SQL query, a Kafka metadata request, an HTTP call) — an open port is not enough.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from deploy.stack.base import (
    SIGNING_KEYS,
    Component,
    Context,
    StackError,
    apt_install,
    find_java,
    port_open,
    traversable_by_others,
)
from deploy.stack.config import HOST, REPO_ROOT, ConfigError
from deploy.stack import kube
from deploy.stack.engines import MariaDB, Redis
from deploy.stack.objectstore import ObjectStorage, backup_env
from deploy.stack.tracing import tracing_env
from deploy.stack import kafka_security
from runtime import devissuer, sealing, signing
from runtime.kafka import KafkaAccess

# --------------------------------------------------------------------------------------------


def _java(heap: str, *args: str, java: str = "java") -> list[str]:
    return [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true", *args]


LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""


# --------------------------------------------------------------------------------------------
class Postgres(Component):
    """PostgreSQL 15 in its own data folder: read models, the registry's storage, local PoP.

    Its WAL is archived for point-in-time recovery: ``archive_command`` runs ``archive-wal.sh``
    (written by ``prepare``), which copies each finished segment into the spool folder
    ``<cluster folder>/postgres-archive/wal`` — outside the data folder, so base backups never
    carry the archive — atomically (copy to a temporary name, fsync, rename, fsync the folder),
    succeeding again for an identical copy and refusing to overwrite a different one.
    ``archive_timeout`` bounds how old the newest archived change can be. The local PoP agent gets
    the spool's path (``DBAAS_LOCALPOP_PG_WAL_SPOOL``) and ships it. The archive settings are
    command-line options: ``up`` restarts a cluster started without them (or with others)."""

    name = "postgres"
    port_name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back clients, checkpoint, exit

    BINDIR = Path("/usr/lib/postgresql/15/bin")
    ARCHIVE_TIMEOUT = 60  # seconds: a segment is archived at least this often while anything is written

    def _bindir(self, ctx: Context) -> Path:
        if (self.BINDIR / "postgres").exists():
            return self.BINDIR
        apt_install(ctx, "postgresql-15", "PostgreSQL 15")
        return self.BINDIR

    def user(self, ctx: Context) -> str | None:
        # PostgreSQL refuses to run as root; the Debian package provides the `postgres` user.
        return "postgres" if os.geteuid() == 0 else None

    def data_dir(self, ctx: Context) -> Path:
        home = ctx.config.home
        if os.geteuid() != 0 or traversable_by_others(home):
            return home / "postgres"
        # The home sits below a folder the postgres user cannot enter (e.g. /root): keep the
        # cluster in a folder of its own named after the home, and remove it on reset.
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        return Path("/var/tmp/dbaas-stack") / digest / "postgres"

    def archive_dir(self, ctx: Context) -> Path:
        """The archiving script and the spool, next to (never inside) the data folder."""
        return self.data_dir(ctx).parent / "postgres-archive"

    def wal_spool(self, ctx: Context) -> Path:
        """Where ``archive_command`` puts each finished WAL segment (and timeline history file)."""
        return self.archive_dir(ctx) / "wal"

    def _prepare_archive(self, ctx: Context) -> None:
        base, spool, user = self.archive_dir(ctx), self.wal_spool(ctx), self.user(ctx)
        spool.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(spool, entry.pw_uid, entry.pw_gid)
        os.chmod(spool, 0o750)  # PostgreSQL's user writes it; the launcher's (the agent's) reads it
        script = base / "archive-wal.sh"
        text = archive_script(spool)
        if not script.exists() or script.read_text() != text:
            tmp = script.with_name(script.name + ".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, script)

    def prepare(self, ctx: Context) -> None:
        bindir = self._bindir(ctx)
        data = self.data_dir(ctx)
        if (data / "PG_VERSION").exists():
            self._prepare_archive(ctx)
            return
        user = self.user(ctx)
        data.mkdir(parents=True, exist_ok=True)
        pwfile = data.parent / ".pgpass-init"
        pwfile.write_text(ctx.secrets()["postgres_superuser_password"] + "\n")
        if user:
            entry = pwd.getpwnam(user)
            for path in (data, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(data.parent, 0o755)
        ctx.say("postgres: initialising a new cluster…")
        proc = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale"],
            capture_output=True, text=True, user=user, group=user)
        pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise StackError(f"initdb failed:\n{proc.stderr[-2000:]}")
        port = ctx.config.port("postgres")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"""
# --- dbaas local platform ---
listen_addresses = '{HOST}'
port = {port}
unix_socket_directories = '{data}'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_connections = 200
shared_buffers = 128MB
""")
        (data / "pg_hba.conf").write_text(
            "local all all scram-sha-256\n"
            f"host all all {HOST}/32 scram-sha-256\n"
            f"host replication all {HOST}/32 scram-sha-256\n")
        self._prepare_archive(ctx)

    def argv(self, ctx: Context) -> list[str]:
        script = self.archive_dir(ctx) / "archive-wal.sh"
        return [str(self._bindir(ctx) / "postgres"), "-D", str(self.data_dir(ctx)),
                "-c", "archive_mode=on",
                "-c", f"archive_command={shlex.quote(str(script))} \"%p\" \"%f\"",
                "-c", f"archive_timeout={self.ARCHIVE_TIMEOUT}"]

    def settings_fingerprint(self, ctx: Context) -> str:
        """Its command line (the archive settings): a cluster started without them is restarted."""
        return hashlib.sha256(json.dumps(self.argv(ctx)).encode()).hexdigest()

    def _connect(self, ctx: Context, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(host=HOST, port=ctx.config.port("postgres"), user="postgres",
                               password=ctx.secrets()["postgres_superuser_password"],
                               dbname=dbname, connect_timeout=2, autocommit=True)

    def healthy(self, ctx: Context) -> bool:
        try:
            with self._connect(ctx) as conn:
                conn.execute("select 1")
            return True
        except Exception:
            return False

    def after_healthy(self, ctx: Context) -> None:
        password = ctx.secrets()["dbaas_password"]
        with self._connect(ctx) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = 'dbaas'").fetchone()
            verb = "alter" if exists else "create"
            conn.execute(f"{verb} role dbaas login replication createdb createrole password "
                         f"'{password}'")
            for db in ("dbaas", "registry"):
                if not conn.execute("select 1 from pg_database where datname = %s", (db,)).fetchone():
                    conn.execute(f'create database "{db}" owner dbaas')
            # The local PoP gives tenants roles on this server: each tenant opens its own database
            # only (the provisioner closes it to PUBLIC). The platform's databases and the server's
            # own are closed to PUBLIC too; dbaas keeps what it needs explicitly (superusers need
            # no grant).
            conn.execute("revoke connect, temporary on database dbaas, registry, postgres, template1 "
                         "from public")
            conn.execute("grant connect on database postgres, template1 to dbaas")
            # DROP DATABASE ... WITH (FORCE) (a deleted service's database in the local PoP) ends
            # every session in it, autovacuum's workers included; those run as no role, so only a
            # member of pg_signal_backend may end them: without it the drop fails whenever
            # autovacuum happens to be visiting that database.
            conn.execute("grant pg_signal_backend to dbaas")
        # Backups (operators.backup.postgres) end the current WAL segment so that the archive
        # covers "now"; the platform role does it without being a superuser, from either of the
        # databases it connects to (a function's grants are kept per database).
        for db in ("postgres", "dbaas"):
            with self._connect(ctx, db) as conn:
                conn.execute("grant execute on function pg_switch_wal() to dbaas")

    def endpoint(self, ctx: Context) -> str:
        return (f"postgresql://dbaas:{ctx.secrets()['dbaas_password']}@{HOST}:"
                f"{ctx.config.port('postgres')}/dbaas")

    def reset_paths(self, ctx: Context) -> list[Path]:
        return [self.data_dir(ctx).parent] if self.data_dir(ctx).parent != ctx.config.home else []




def archive_script(spool: Path) -> str:
    """``archive_command``'s script: ``archive-wal.sh <path> <file name>`` (run by the archiver in
    the data folder). Exit 0 only when the spool holds exactly this file under that name."""
    return f"""#!/bin/sh
# generated by the dbaas launcher on every start; edit deploy/stack/components.py instead
# PostgreSQL's archive_command: copy a finished WAL segment into the spool, atomically.
set -u
src="$1"
dest={shlex.quote(str(spool))}/"$2"
if [ -e "$dest" ]; then
    # archived before (a retry after a crash): fine when identical, never overwritten otherwise
    if cmp -s "$src" "$dest"; then exit 0; fi
    echo "archive-wal: $dest exists and differs from $src" >&2
    exit 1
fi
tmp="$dest.tmp"
cp "$src" "$tmp" && sync "$tmp" && mv "$tmp" "$dest" && sync {shlex.quote(str(spool))}
"""


# --------------------------------------------------------------------------------------------
def kafka_access(ctx: Context, process: str = "admin") -> KafkaAccess:
    """How platform process `process` (or the launcher, "admin") reaches the broker, as itself."""
    return KafkaAccess(f"{HOST}:{ctx.config.port('kafka')}", kafka_security.principal(process),
                       ctx.secrets()[kafka_security.secret_name(process)])


def kafka_env(process: str) -> Callable[[Context], dict[str, str]]:
    """The principal `process` authenticates as on the broker (`runtime.kafka.access_from_env`)."""

    def env(ctx: Context) -> dict[str, str]:
        access = kafka_access(ctx, process)
        return {"DBAAS_KAFKA_USERNAME": access.username or "", "DBAAS_KAFKA_PASSWORD": access.password or ""}

    return env


class Kafka(Component):
    """A single-node KRaft broker (broker + controller in one process), secured: clients
    authenticate with SASL/SCRAM-SHA-512 on the client listener and the `StandardAuthorizer`
    allows each principal what `kafka_security.PLATFORM_ACLS` says; the controller listener
    (loopback) takes SASL/PLAIN from the broker itself only. No listener is unauthenticated."""

    name = "kafka"
    port_name = "kafka"

    def _dir(self, ctx: Context) -> Path:
        return ctx.config.home / "kafka"

    def _properties(self, ctx: Context, secured: bool = True) -> str:
        port, cport = ctx.config.port("kafka"), ctx.config.port("controller")
        data = self._dir(ctx) / "data"
        values = ctx.secrets()
        if secured:
            listeners = f"""\
listeners=CLIENT://{HOST}:{port},CONTROLLER://{HOST}:{cport}
advertised.listeners=CLIENT://{HOST}:{port},CONTROLLER://{HOST}:{cport}
inter.broker.listener.name=CLIENT
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT
""" + kafka_security.server_properties(values[kafka_security.secret_name("admin")],
                                       values["kafka_controller_password"])
        else:  # only to give a broker formatted before SASL its first credential (`_add_admin_credential`)
            listeners = f"""\
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}
advertised.listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""
        return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={HOST}:{cport}
controller.listener.names=CONTROLLER
{listeners}log.dirs={data}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.check.interval.ms=300000
"""

    def prepare(self, ctx: Context) -> None:
        base = self._dir(ctx)
        data = base / "data"
        base.mkdir(parents=True, exist_ok=True)
        (base / "log4j2.properties").write_text(LOG4J2)
        properties = base / "server.properties"
        # it holds the broker's own passwords: readable by the launcher's user only
        fd = os.open(properties.with_name("server.properties.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self._properties(ctx))
        os.replace(properties.with_name("server.properties.tmp"), properties)
        marker = base / "scram-admin"  # the admin's SCRAM credential is in the metadata log
        if (data / "meta.properties").exists():
            if not marker.exists():
                self._add_admin_credential(ctx)
                marker.touch()
            return
        ctx.say("kafka: formatting KRaft storage…")
        cp = ctx.artifacts.kafka_classpath
        cluster_id = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                                    capture_output=True, text=True, check=True).stdout.strip()
        admin = kafka_access(ctx)
        proc = subprocess.run(
            ["java", "-cp", cp, f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
             "kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
             "-t", cluster_id, "-c", str(properties),
             # the broker's own principal must exist before it starts (its inter-broker listener);
             # every other principal is created through the Admin API once it runs
             "--add-scram", f"{kafka_security.MECHANISM}=[name={admin.username},password={admin.password},"
                            f"iterations={kafka_security.SCRAM_ITERATIONS}]"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        marker.touch()

    def _add_admin_credential(self, ctx: Context) -> None:
        """A broker formatted before the platform secured it has no credential for its own
        principal: start it once as it was (PLAINTEXT, no authorizer), add the credential through
        the Admin API, stop it. Its topics and data stay."""
        from confluent_kafka.admin import AdminClient

        base = self._dir(ctx)
        ctx.say("kafka: adding the broker's SCRAM credential to storage formatted without it…")
        plain = base / "server-plaintext.properties"
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self._properties(ctx, secured=False))
        log = open(ctx.config.log_dir / "kafka-migration.log", "ab") if ctx.config.log_dir.exists() else subprocess.DEVNULL
        proc = subprocess.Popen(_java(ctx.config.kafka_heap, "-cp", ctx.artifacts.kafka_classpath,
                                      f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
                                      "kafka.Kafka", str(plain)), stdout=log, stderr=subprocess.STDOUT)
        try:
            admin = AdminClient({"bootstrap.servers": f"{HOST}:{ctx.config.port('kafka')}", "log_level": 0,
                                 "logger": _SilentLogger()})
            deadline = time.monotonic() + 120
            while True:
                try:
                    admin.list_topics(timeout=3)
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise StackError("kafka did not start to receive its SCRAM credential; see "
                                         f"{ctx.config.log_dir / 'kafka-migration.log'}") from None
                    time.sleep(0.5)
            kafka_security.apply(admin, {kafka_security.ADMIN: ctx.secrets()[kafka_security.secret_name("admin")]},
                                 acls=False)
        finally:
            proc.terminate()
            proc.wait(120)
            plain.unlink(missing_ok=True)

    def argv(self, ctx: Context) -> list[str]:
        base = self._dir(ctx)
        return _java(ctx.config.kafka_heap, "-cp", ctx.artifacts.kafka_classpath,
                     f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
                     f"-Dkafka.logs.dir={ctx.config.log_dir}",
                     "kafka.Kafka", str(base / "server.properties"))

    def healthy(self, ctx: Context) -> bool:
        if not port_open(ctx.config.port("kafka")):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(kafka_access(ctx).client(log_level=0, logger=_SilentLogger()))
        try:
            admin.list_topics(timeout=3)
            return True
        except Exception:
            return False

    def after_healthy(self, ctx: Context) -> None:
        from confluent_kafka.admin import AdminClient

        from runtime import topics

        values = ctx.secrets()
        passwords = {kafka_security.principal(p): values[kafka_security.secret_name(p)]
                     for p in ("admin", *kafka_security.PLATFORM_ACLS)}
        created, _ = kafka_security.apply(AdminClient(kafka_access(ctx).client(log_level=3)), passwords)
        if created:
            ctx.say(f"        kafka     SCRAM credentials created: {', '.join(created)}")
        ctx.topic_report = topics.apply_spec(kafka_access(ctx))

    def endpoint(self, ctx: Context) -> str:
        return f"{HOST}:{ctx.config.port('kafka')}"


class _SilentLogger:
    """librdkafka logs every refused connection while the broker starts; probes stay quiet."""

    def log(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, name):
        return lambda *a, **k: None


# --------------------------------------------------------------------------------------------
class Connect(Component):
    """A Kafka Connect distributed worker with the Debezium PostgreSQL and MySQL plugins."""

    name = "connect"
    port_name = "connect"
    needs = ("kafka",)

    def _dir(self, ctx: Context) -> Path:
        return ctx.config.home / "connect"

    def prepare(self, ctx: Context) -> None:
        base = self._dir(ctx)
        base.mkdir(parents=True, exist_ok=True)
        port = ctx.config.port("connect")
        (base / "log4j2.properties").write_text(LOG4J2)
        access = kafka_access(ctx, "connect")
        # the worker's own clients, and those it gives its connectors' tasks (producer., consumer.,
        # admin.: topic creation), all as Connect's principal
        clients = "".join(access.java(prefix) for prefix in ("", "producer.", "consumer.", "admin."))
        worker = base / "worker.properties"
        fd = os.open(worker.with_name("worker.properties.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(clients + f"""\
group.id=dbaas-connect
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
config.storage.topic=dbaas.connect.configs
offset.storage.topic=dbaas.connect.offsets
status.storage.topic=dbaas.connect.status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.flush.interval.ms=5000
listeners=http://{HOST}:{port}
rest.advertised.host.name={HOST}
rest.advertised.port={port}
plugin.path={ctx.artifacts.plugin_path}
plugin.discovery=service_load
topic.creation.enable=true
""")
        os.replace(worker.with_name("worker.properties.tmp"), worker)

    def argv(self, ctx: Context) -> list[str]:
        base = self._dir(ctx)
        return _java(ctx.config.connect_heap, "-cp", ctx.artifacts.kafka_classpath,
                     f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
                     "org.apache.kafka.connect.cli.ConnectDistributed", str(base / "worker.properties"))

    def healthy(self, ctx: Context) -> bool:
        try:
            plugins = httpx.get(f"{self.endpoint(ctx)}/connector-plugins", timeout=2).json()
        except Exception:
            return False
        return any(p.get("class") == "io.debezium.connector.postgresql.PostgresConnector" for p in plugins)

    def endpoint(self, ctx: Context) -> str:
        return f"http://{HOST}:{ctx.config.port('connect')}"


# --------------------------------------------------------------------------------------------
class Registry(Component):
    """Apicurio Registry 3 with its Confluent-compatible API, storing schemas in PostgreSQL
    so that schema ids outlive restarts (events carry them forever)."""

    name = "registry"
    port_name = "registry"
    needs = ("postgres",)
    MIN_JAVA = 21  # Apicurio Registry 3.3 is compiled for Java 21

    def prepare(self, ctx: Context) -> None:
        if find_java(self.MIN_JAVA) is None:
            raise StackError(f"the schema registry needs Java {self.MIN_JAVA} or newer and none was found "
                             f"on PATH or under /usr/lib/jvm: install one and/or set "
                             f"DBAAS_JAVA{self.MIN_JAVA}_HOME to its folder")

    def argv(self, ctx: Context) -> list[str]:
        pg = ctx.config.port("postgres")
        return _java(ctx.config.registry_heap,
                     f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={ctx.config.port('registry')}",
                     # its management interface (health, metrics) would otherwise bind *:9000
                     f"-Dquarkus.management.host={HOST}",
                     f"-Dquarkus.management.port={ctx.config.port('registry_management')}",
                     "-Dapicurio.storage.kind=sql", "-Dapicurio.storage.sql.kind=postgresql",
                     f"-Dapicurio.datasource.url=jdbc:postgresql://{HOST}:{pg}/registry",
                     "-Dapicurio.datasource.username=dbaas",
                     "-Dapicurio.datasource.jdbc.initial-size=2", "-Dapicurio.datasource.jdbc.min-size=2",
                     "-Dapicurio.datasource.jdbc.max-size=10",
                     "-Dquarkus.log.level=WARN", "-Dquarkus.log.category.\"io.apicurio\".level=INFO",
                     "-jar", str(ctx.artifacts.registry_jar), java=find_java(self.MIN_JAVA))

    def env(self, ctx: Context) -> dict[str, str]:
        # The password travels in the environment, not on the command line `ps` shows.
        return {"APICURIO_DATASOURCE_PASSWORD": ctx.secrets()["dbaas_password"]}

    def healthy(self, ctx: Context) -> bool:
        try:
            return httpx.get(f"{self.endpoint(ctx)}/subjects", timeout=2).status_code == 200
        except Exception:
            return False

    def endpoint(self, ctx: Context) -> str:
        return f"http://{HOST}:{ctx.config.port('registry')}/apis/ccompat/v7"

    def metrics_url(self, ctx: Context) -> str:
        """Its management interface serves Prometheus metrics (JVM, requests, storage calls)."""
        return f"http://{HOST}:{ctx.config.port('registry_management')}/metrics"


# --------------------------------------------------------------------------------------------
class GitRemote(Component):
    """The bare repository that plays the GitOps remote."""

    name = "gitops"
    has_process = False

    def prepare(self, ctx: Context) -> None:
        remote = ctx.config.gitops_remote
        if (remote / "HEAD").exists():
            return
        proc = subprocess.run(["git", "init", "--bare", "--initial-branch=main", str(remote)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(f"could not create the GitOps remote: {proc.stderr}")

    def healthy(self, ctx: Context) -> bool:
        return (ctx.config.gitops_remote / "HEAD").exists()

    def endpoint(self, ctx: Context) -> str:
        return ctx.config.gitops_remote.as_uri()


# Imported here, not at the top: the engines build on the classes above.

INFRASTRUCTURE: tuple[Component, ...] = (Postgres(), Kafka(), GitRemote(), Registry(), Connect(), MariaDB(),
                                         Redis(), ObjectStorage())


# --------------------------------------------------------------------------------------------
# The platform's own code: what its control-plane processes import (and the schemas they register).
CONTROL_PLANE_CODE = ("commands", "events", "schemas", "processors", "projections", "gateway", "operators",
                      "runtime", "gitops")


def code_stamp() -> list[tuple[str, int, int]]:
    """Path, size and modification time of every source file of the control plane: a stat each,
    no reading; any edit, checkout or pull changes it."""
    root = REPO_ROOT
    return sorted((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                  for package in CONTROL_PLANE_CODE for f in (root / package).rglob("*")
                  if f.suffix in (".py", ".avsc", ".yaml") and "__pycache__" not in f.parts)


class ControlPlaneProcess(Component):
    """One of the control plane's own Python processes, kept alive by `runtime.supervise` and
    configured through the environment with the stack's endpoints."""

    needs = ("kafka", "registry", "postgres")

    def __init__(self, name: str, module: str, metrics_slot: int | None = None, port_name: str | None = None,
                 extra_env: Callable[[Context], dict[str, str]] | None = None, needs: tuple[str, ...] = (),
                 principal: str | None = "", instance_of: str | None = None):
        self.name = name
        # another instance of that component (`up --replicas`): left out with it
        self.instance_of = instance_of
        # the Kafka principal it authenticates as ("": its own name; None: it uses no Kafka)
        self.principal = name if principal == "" else principal
        self.module = module
        self.metrics_slot = metrics_slot
        self.port_name = port_name
        # Settings only this process may see (admin passwords, keys): not every process gets them.
        self.extra_env = extra_env
        self.needs = ControlPlaneProcess.needs + needs

    def metrics_port(self, ctx: Context) -> int:
        return ctx.config.port("metrics") + (self.metrics_slot or 0)

    def argv(self, ctx: Context) -> list[str]:
        import sys

        return [sys.executable, "-m", "runtime.supervise", "--name", self.name,
                "--child-pidfile", str(ctx.config.run_dir / f"{self.name}.child.pid"),
                "--", sys.executable, "-m", self.module]

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "DBAAS_KAFKA_BOOTSTRAP": f"{HOST}:{ctx.config.port('kafka')}",
            **(kafka_env(self.principal)(ctx) if self.principal else {}),
            "DBAAS_REGISTRY_URL": Registry().endpoint(ctx),
            "DBAAS_DATABASE_URL": Postgres().endpoint(ctx),
            "DBAAS_CONNECT_URL": Connect().endpoint(ctx),
            "DBAAS_GITOPS_REMOTE": GitRemote().endpoint(ctx),
            "DBAAS_API_PORT": str(ctx.config.port("api")),
            "DBAAS_STATE_DIR": str(ctx.config.home / "state" / self.name),
            "DBAAS_METRICS_PORT": str(self.metrics_port(ctx)) if self.metrics_slot is not None else "0",
            "PYTHONUNBUFFERED": "1",
        } | tracing_env(ctx) | (self.extra_env(ctx) if self.extra_env else {})

    def settings_fingerprint(self, ctx: Context) -> str:
        """Its whole environment (issuers, keys, endpoints) and the code it runs: a process reads
        both only at start, so `up` after either changed starts it anew."""
        return hashlib.sha256(json.dumps([self.env(ctx), code_stamp()], sort_keys=True).encode()).hexdigest()

    def probe_url(self, ctx: Context) -> str:
        if self.port_name:
            return f"http://{HOST}:{ctx.config.port(self.port_name)}/healthz"
        return f"http://{HOST}:{self.metrics_port(ctx)}/metrics"

    def healthy(self, ctx: Context) -> bool:
        try:
            return httpx.get(self.probe_url(ctx), timeout=2).status_code == 200
        except Exception:
            return False

    def endpoint(self, ctx: Context) -> str:
        if self.port_name:
            return f"http://{HOST}:{ctx.config.port(self.port_name)}"
        return self.probe_url(ctx)

    def metrics_url(self, ctx: Context) -> str | None:
        """Its metrics port's /metrics; a process with a port of its own (the API) serves them there
        (at /metrics/, where the API mounts them)."""
        if self.metrics_slot is not None:
            return f"http://{HOST}:{self.metrics_port(ctx)}/metrics"
        if self.port_name:
            return f"http://{HOST}:{ctx.config.port(self.port_name)}/metrics/"
        return None


def credentials_key_env(ctx: Context) -> dict[str, str]:
    """The Fernet key of PoP credentials: for the agent that encrypts them and the process that
    decrypts them for their tenant — no other."""
    return {"DBAAS_CREDENTIALS_KEY": ctx.secrets()["credentials_key"]}


def signing_env(holder: str) -> Callable[[Context], dict[str, str]]:
    """The key `holder` signs what it publishes with, and the keyring it checks others against.
    The keyring is (re)written with the instance's own keys; entries added by `dbaas keys` stay."""

    def env(ctx: Context) -> dict[str, str]:
        write_own_keys(ctx)
        return {"DBAAS_SIGNING_KEY_ID": holder, "DBAAS_SIGNING_KEY": ctx.secrets()[f"signing_key_{holder}"],
                "DBAAS_KEYRING": str(ctx.config.keyring_file)}

    return env


def keyring_env(ctx: Context) -> dict[str, str]:
    write_own_keys(ctx)
    return {"DBAAS_KEYRING": str(ctx.config.keyring_file)}


def write_own_keys(ctx: Context) -> None:
    """The instance's own public keys in its keyring (the gateway, the sagas, PoP local's agent)."""
    values = ctx.secrets()
    path = ctx.config.keyring_file
    keyring = signing.Keyring(path)
    own = [signing.TrustedKey.from_dict({
        "key_id": holder, "kind": kind, "name": holder, "pop": pop,
        "public_key": signing.Signer.from_text(holder, values[f"signing_key_{holder}"]).public_text()})
        for holder, (kind, pop) in SIGNING_KEYS.items()]
    if all(keyring.get(k.key_id) == k for k in own):
        return
    others = [k for k in keyring.keys() if k.key_id not in SIGNING_KEYS]
    signing.write_keyring(path, [*others, *own])


def api_env(ctx: Context) -> dict[str, str]:
    """The API decrypts credentials for allowed callers, and trusts the issuers of the instance's
    sign-in settings (``StackConfig.sign_in``): the configured ones, and the instance's development
    token issuer only in development mode or when explicitly enabled. Both variables are always
    set, so a stray one in the launcher's environment never reaches the API unrecorded."""
    sign_in = ctx.config.sign_in
    issuers = list(sign_in.oidc_issuers)
    if sign_in.development:
        issuers.append(devissuer.issuer_config(ctx.secrets()[devissuer.SECRET_NAME]))
    return credentials_key_env(ctx) | signing_env("gateway")(ctx) | {
        "DBAAS_OIDC_ISSUERS": json.dumps(issuers), "DBAAS_DEFAULT_ISSUER": sign_in.default_issuer or "",
        # tenant subscriptions' passwords are sealed to the subscription saga's key
        "DBAAS_SUBSCRIPTION_SEAL_PUBLIC_KEY": sealing.public_key(ctx.secrets()["subscription_seal_key"])} | (
        # per-tenant rate limits given to this `up` (gateway.ratelimit's format): part of the API's
        # settings, so a changed value restarts it; absent, the gateway's defaults
        {"DBAAS_RATE_LIMITS": limits} if (limits := os.environ.get("DBAAS_RATE_LIMITS", "").strip()) else {})


def projector_env(ctx: Context) -> dict[str, str]:
    """The platform's projector also projects the services' metrics and the alerts (it checks the
    samples' PoP signatures against the keyring)."""
    return keyring_env(ctx) | {"DBAAS_PROJECTIONS_TELEMETRY": "1"}


def localpop_agent_env(ctx: Context) -> dict[str, str]:
    """The local PoP agent's admin access to the engine servers, its keys, and where backups go
    (object storage and the backups' key-encryption key)."""
    from urllib.parse import quote

    values = ctx.secrets()
    mariadb = f"{quote(MariaDB.ADMIN_USER)}:{quote(values[MariaDB.SECRET], safe='')}"
    redis = f"{quote(Redis.ADMIN_USER)}:{quote(values[Redis.SECRET], safe='')}"
    return credentials_key_env(ctx) | signing_env("pop-local")(ctx) | backup_env(ctx) | {
        "DBAAS_LOCALPOP_MARIADB_URL": f"mysql://{mariadb}@{HOST}:{ctx.config.port('mariadb')}",
        "DBAAS_LOCALPOP_REDIS_URL": f"redis://{redis}@{HOST}:{ctx.config.port('redis')}",
        "DBAAS_LOCALPOP_PASSWORD_KEY": values["localpop_password_key"],
        # PostgreSQL's archived WAL, for point-in-time recovery (operators.backup.postgres)
        "DBAAS_LOCALPOP_PG_WAL_SPOOL": str(Postgres().wal_spool(ctx)),
    }


CONTROL_PLANE: tuple[Component, ...] = (
    ControlPlaneProcess("command-processor", "processors.command_processor", metrics_slot=0,
                        extra_env=keyring_env),
    ControlPlaneProcess("projector", "projections.runner", metrics_slot=1, extra_env=projector_env),
    ControlPlaneProcess("saga", "processors.saga", metrics_slot=2, extra_env=signing_env("platform")),
    ControlPlaneProcess("audit", "processors.audit", metrics_slot=4),
    ControlPlaneProcess("api", "gateway.app", port_name="api", extra_env=api_env),
    ControlPlaneProcess("localpop-agent", "operators.localpop.agent", metrics_slot=3,
                        extra_env=localpop_agent_env, needs=("gitops", "mariadb", "redis", "s3")),
    # Scheduled backups and retention: signs its commands with the platform's key.
    ControlPlaneProcess("scheduler", "processors.scheduler", metrics_slot=5, extra_env=signing_env("platform")),
    ControlPlaneProcess("alerts", "processors.alerts", metrics_slot=6, extra_env=keyring_env),  # Faust: alert rules
    # Tenant subscriptions: credentials and ACLs on the broker; signs with the platform's key
    ControlPlaneProcess("subscriptions", "processors.subscription_saga", metrics_slot=7,
                        extra_env=lambda ctx: signing_env("platform")(ctx) | {
                            "DBAAS_SUBSCRIPTION_SEAL_KEY": ctx.secrets()["subscription_seal_key"]}),
)


# --------------------------------------------------------------------------------------------
# More instances of the components that share partitions through their consumer groups
# (`dbaas stack up --replicas N`): instance i of each (1 … N-1; the one above is instance 0) runs
# as its component's principal with `DBAAS_INSTANCE=i` (its own transactional id, state folder and
# metrics port). At most as many as the event log has partitions: another one would sit idle.
SCALED_OUT = ("command-processor", "projector", "saga")
REPLICA_SLOT_BASE = 40  # metrics + 40 + len(SCALED_OUT) * (i - 1) + the component's place in SCALED_OUT
MAX_REPLICAS = 12  # dbaas.commands' and dbaas.events' partitions (deploy/topics.yaml)


def replica_components(replicas: int) -> tuple[Component, ...]:
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"--replicas {replicas}: choose between 1 and {MAX_REPLICAS} (the event log's partitions)")
    bases = {c.name: c for c in CONTROL_PLANE if isinstance(c, ControlPlaneProcess)}
    made: list[Component] = []
    for instance in range(1, replicas):
        for place, name in enumerate(SCALED_OUT):
            made.append(_replica(bases[name], instance,
                                 REPLICA_SLOT_BASE + len(SCALED_OUT) * (instance - 1) + place))
    return tuple(made)


def _replica(base: ControlPlaneProcess, instance: int, slot: int) -> ControlPlaneProcess:
    extra = base.extra_env

    def env(ctx: Context) -> dict[str, str]:
        return (extra(ctx) if extra else {}) | {"DBAAS_INSTANCE": str(instance)}

    return ControlPlaneProcess(f"{base.name}-{instance}", base.module, metrics_slot=slot, extra_env=env,
                               principal=base.principal, instance_of=base.name)


# --------------------------------------------------------------------------------------------
# Kubernetes PoPs run locally (`dbaas stack up --kube-pop NAME`): etcd and the API server
# (deploy.stack.kube), the GitOps sync standing in for Argo CD, and the PoP operator.
def kube_sync_env(pop: str) -> Callable[[Context], dict[str, str]]:
    def env(ctx: Context) -> dict[str, str]:
        p = kube.KubePop(ctx, pop)
        return {"DBAAS_POP": pop, "DBAAS_KUBECONFIG": str(p.kubeconfig("sync"))}
    return env


def kube_operator_env(pop: str) -> Callable[[Context], dict[str, str]]:
    def env(ctx: Context) -> dict[str, str]:
        p = kube.KubePop(ctx, pop)
        return credentials_key_env(ctx) | signing_env(f"pop-{pop}")(ctx) | {
            "DBAAS_POP": pop, "DBAAS_KUBECONFIG": str(p.kubeconfig("operator"))}
    return env


def kube_pop_components(pops) -> tuple[Component, ...]:
    made: list[Component] = []
    for pop in pops:
        slot = kube.METRICS_SLOT_BASE + 2 * kube.KUBERNETES_POPS.index(pop)
        made += [kube.Etcd(pop), kube.ApiServer(pop),
                 ControlPlaneProcess(f"kube-sync-{pop}", "operators.kubepop.sync", metrics_slot=slot,
                                     extra_env=kube_sync_env(pop), needs=("gitops", f"kube-apiserver-{pop}"),
                                     principal=None),
                 ControlPlaneProcess(f"pop-operator-{pop}", "operators.kubepop.operator", metrics_slot=slot + 1,
                                     extra_env=kube_operator_env(pop), needs=(f"kube-apiserver-{pop}",),
                                     principal=f"pop-{pop}")]
    return tuple(made)
