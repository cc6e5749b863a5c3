"""PostgreSQL (YugabyteDB's YSQL in PoP ``local``): a service's backup and restore, and the
cluster-wide WAL archive that point-in-time recovery reads.

A service is one database (``service_identifier(tenant, service_id)``) owned by the role of the
same name (``operators.localpop.provisioners``). The admin is the platform's ``dbaas`` role:
member of every service role (so it reads and writes their objects), REPLICATION (base backups)
and EXECUTE on ``pg_switch_wal()`` (granted by the launcher).

Backup (``backup``): one REPEATABLE READ, READ ONLY transaction exports its snapshot
(``pg_export_snapshot()``); ``pg_dump -Fc --snapshot=<it>`` dumps the database while the same
transaction counts and checksums every table, so the dump and the manifest's stats are one instant.
A table's checksum is the sum of the first 60 bits of ``md5(row::text)`` over its rows: independent
of row order and physical layout, it differs when any row does.

Restore (``restore``): ``pg_restore --single-transaction --exit-on-error --no-owner
--no-privileges --role=<target role>`` into the new service's (provisioned, empty) database:
every object is created by, so owned by, the new service's role; grants and ownership naming the
old service's role are left out (they would hand the new data to the old service). Subscriptions
and publications are not restored (subscriptions need a superuser; publications are the
platform's change-data-capture set-up, made per service). ``verify`` recomputes the stats on the
copy and lists what differs.

Point-in-time recovery. The launcher's cluster archives every finished WAL segment into a spool
folder (``archive_mode=on``, ``archive_timeout``, ``archive_command`` = an atomic copy; see
``deploy/stack/components.py``); the caller ships the spool. ``base_backup`` takes a cluster base
backup (``pg_basebackup -Ft -X none -c fast``: the tar holds no WAL, the archive does; the tool
returns once the server has archived the backup's last segment). ``switch_wal`` writes a
timestamped commit and ends the current segment, then waits until it is archived, so the archive
covers "now". ``recover_database`` unpacks a base backup into a temporary data folder, replays
archived WAL (``restore_command = cp <wal dir>/%f %p``) up to ``recovery_target_time`` in a
temporary postmaster (unix socket in a private folder, no TCP, no archiving, as the cluster's OS
user), dumps the source database from it, computes its stats, and removes everything. When the
archive ends before the target, PostgreSQL 15 stops with "recovery ended before configured
recovery target was reached": that is ``RecoveryTargetNotReached``.

Times are timezone-aware and handled in UTC. Errors: ``tools.EngineError`` and its kinds.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from operators.backup import pgwal
from operators.backup.manifest import Manifest, ManifestError, TableStat, diff_tables
from operators.backup.pgwal import BaseInfo
from operators.backup.tools import (
    ArchiveError,
    EngineError,
    RecoveryTargetNotReached,
    ServiceNotFound,
    ToolFailed,
    engine_errors,
    poll,
    run,
    tail,
)
from operators.localpop.provisioners import AdminEndpoint, service_identifier

DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
DUMP_FILE = "data.dump"
BASE_FILES = {"base": "base.tar", "manifest": "backup_manifest"}

# The tables of a database that hold its data: ordinary tables (partitions included, partitioned
# parents not: they hold no rows of their own) outside the system schemas, not an extension's.
_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
# Per table: rows, and the sum of 60-bit row hashes (numeric: never overflows).
_STAT_SQL = ("SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text "
             "FROM {} AS t")


def default_run_as() -> str | None:
    """PostgreSQL refuses to run as root: the Debian package's ``postgres`` user runs clusters."""
    return "postgres" if os.geteuid() == 0 else None


_DEFAULT = object()


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must carry their time zone (UTC)")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class SwitchedWal:
    """The segment ``switch_wal`` ended (now in the archive) and when."""

    segment: str
    lsn: str
    at: datetime


@dataclass(frozen=True)
class RecoveryResult:
    """A database recovered to ``target_time`` and dumped to ``dump_path``. ``reached``: the
    commit time of the last transaction replayed (None when none was); ``tables``: its stats."""

    target_time: datetime
    reached: datetime | None
    lsn: str
    tables: dict[str, TableStat] = field(default_factory=dict)
    dump_path: Path | None = None
    seconds: float = 0.0

    def manifest(self, tenant: str, service_id: str, backup_id: str) -> Manifest:
        """A manifest of the recovered dump, for ``restore`` and ``verify``."""
        return Manifest(engine="postgres", tenant=tenant, service_id=service_id, backup_id=backup_id,
                        taken_at=self.target_time,
                        consistency={"lsn": self.lsn, "recovery_target_time": self.target_time.isoformat(),
                                     "reached": self.reached.isoformat() if self.reached else None},
                        tables=self.tables, files={"data": self.dump_path.name if self.dump_path else DUMP_FILE})


class PostgresBackups:
    """Backups of the services of one PostgreSQL server (and its cluster's PITR).

    ``admin``: the platform role (see the module's docstring); ``bindir``: PostgreSQL 15's
    programs; ``run_as``: the OS user temporary postmasters run as (default ``postgres`` when
    running as root, else the current user); ``scratch``: where temporary clusters are unpacked
    (default: the system's temporary folder)."""

    def __init__(self, admin: AdminEndpoint, bindir: Path = DEFAULT_BINDIR, *, admin_database: str = "postgres",
                 run_as: str | None | object = _DEFAULT, scratch: Path | None = None,
                 superuser: str = "postgres", connect_timeout: float = 10.0, tool_timeout: float = 6 * 3600):
        self.admin = admin
        self.bindir = Path(bindir)
        self.admin_database = admin_database
        self.run_as: str | None = default_run_as() if run_as is _DEFAULT else run_as  # type: ignore[assignment]
        self.scratch = scratch
        self.superuser = superuser  # the cluster's bootstrap superuser: temporary clusters trust it
        self.connect_timeout = connect_timeout
        self.tool_timeout = tool_timeout

    # -- connections and tools -------------------------------------------------------------------
    def _connect(self, dbname: str, *, autocommit: bool = True):
        import psycopg

        try:
            return psycopg.connect(host=self.admin.host, port=self.admin.port, user=self.admin.user,
                                   password=self.admin.password, dbname=dbname, autocommit=autocommit,
                                   connect_timeout=max(1, round(self.connect_timeout)),
                                   application_name="dbaas-backup")
        except psycopg.OperationalError as exc:
            if 'does not exist' in str(exc) and f'"{dbname}"' in str(exc):
                raise ServiceNotFound(f"PostgreSQL has no database {dbname}") from None
            raise EngineError(f"PostgreSQL at {self.admin.host}:{self.admin.port}: {tail(str(exc), 2)}") from None

    def _tool(self, name: str) -> str:
        return str(self.bindir / name)

    def _conn_args(self) -> list[str]:
        return ["-h", self.admin.host, "-p", str(self.admin.port), "-U", self.admin.user, "--no-password"]

    def _env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.admin.password, "PGCONNECT_TIMEOUT": str(max(1, round(self.connect_timeout))),
                "PGAPPNAME": "dbaas-backup", "PGTZ": "UTC"}

    # -- one service -----------------------------------------------------------------------------
    @engine_errors
    def backup(self, tenant: str, service_id: str, backup_id: str, workdir: Path, *,
               pitr_base: str | None = None) -> Manifest:
        """Dump the service's database into ``workdir/data.dump``; its manifest (not written)."""
        database = service_identifier(tenant, service_id)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        dump = workdir / DUMP_FILE
        with self._connect(database, autocommit=False) as conn:
            import psycopg

            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            snapshot, lsn, at = conn.execute(
                "SELECT pg_export_snapshot(), pg_current_wal_lsn()::text, clock_timestamp()").fetchone()
            argv = [self._tool("pg_dump"), *self._conn_args(), "-d", database, "-Fc", f"--snapshot={snapshot}",
                    "-f", str(dump)]
            # The dump runs while this transaction (which must outlive its start) computes the stats.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env={**os.environ, **self._env()})
            try:
                tables = table_stats(conn)
                _, err = proc.communicate(timeout=self.tool_timeout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            conn.rollback()
        if proc.returncode != 0:
            raise ToolFailed(f"backup of {database}: pg_dump exited with {proc.returncode}:\n{tail(err)}")
        return Manifest(engine="postgres", tenant=tenant, service_id=service_id, backup_id=backup_id,
                        taken_at=utc(at), consistency={"lsn": lsn, "snapshot_time": utc(at).isoformat()},
                        tables=tables, files={"data": DUMP_FILE}, pitr_base=pitr_base)

    @engine_errors
    def restore(self, manifest: Manifest, files_dir: Path, target_database: str, *,
                target_role: str | None = None) -> None:
        """Load the backup's dump into ``target_database`` (provisioned and empty), every object
        owned by ``target_role`` (default: the role named like the database, as provisioned).
        All or nothing: one transaction."""
        dump = _data_file(manifest, "postgres", files_dir)
        role = target_role or target_database
        run([self._tool("pg_restore"), *self._conn_args(), "-d", target_database, "--single-transaction",
             "--exit-on-error", "--no-owner", "--no-privileges", f"--role={role}", "--no-subscriptions",
             "--no-publications", "--no-security-labels", str(dump)],
            what=f"restore of backup {manifest.backup_id} into {target_database}", env=self._env(),
            timeout=self.tool_timeout)

    @engine_errors
    def verify(self, manifest: Manifest, target_database: str) -> list[str]:
        """What differs between the backup's tables and ``target_database``'s; empty: identical."""
        with self._connect(target_database, autocommit=False) as conn:
            import psycopg

            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            actual = table_stats(conn)
            conn.rollback()
        return diff_tables(manifest.tables, actual)

    # -- the cluster's WAL archive ---------------------------------------------------------------
    @engine_errors
    def base_backup(self, dest_dir: Path) -> BaseInfo:
        """A base backup of the whole cluster into ``dest_dir`` (new or empty): ``base.tar`` and
        ``backup_manifest`` (plus one tar per tablespace, if any). Returns once the WAL it needs
        is archived (the server waits for it), so it can be restored from the archive alone."""
        dest_dir = Path(dest_dir)
        if dest_dir.exists() and any(dest_dir.iterdir()):
            raise EngineError(f"base backup: {dest_dir} is not empty")
        start = datetime.now(timezone.utc)
        run([self._tool("pg_basebackup"), *self._conn_args(), "-D", str(dest_dir), "-Ft", "-X", "none",
             "-c", "fast", "-l", f"dbaas base backup {start.isoformat()}"],
            what="cluster base backup", env=self._env(), timeout=self.tool_timeout)
        end = datetime.now(timezone.utc)
        try:
            timeline, start_lsn, end_lsn = pgwal.parse_wal_ranges((dest_dir / "backup_manifest").read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise EngineError(f"base backup: its backup_manifest cannot be read: {exc}") from None
        # base.tar -> "base", backup_manifest -> "manifest", <tablespace oid>.tar -> "<oid>"
        files = {("manifest" if name == BASE_FILES["manifest"] else name.removesuffix(".tar")): name
                 for name in sorted(os.listdir(dest_dir))}
        return BaseInfo(start_lsn, end_lsn, timeline, start, end, files)

    @engine_errors
    def switch_wal(self, *, timeout: float = 120.0) -> SwitchedWal:
        """Make the archive cover "now": commit a transaction (a timestamped WAL record recovery
        can stop after), end the current segment, and wait until the archiver has stored it.
        ``ArchiveError`` when archiving fails or is not on."""
        with self._connect(self.admin_database) as conn:
            mode = conn.execute("SHOW archive_mode").fetchone()[0]
            if mode == "off":
                raise ArchiveError("PostgreSQL runs with archive_mode=off: restart it with WAL archiving on")
            conn.execute("SELECT pg_current_xact_id()")  # autocommit: one committed transaction
            lsn, segment, at = conn.execute(
                "SELECT s::text, pg_walfile_name(s), clock_timestamp() FROM pg_switch_wal() AS s").fetchone()
            target = pgwal.parse_segment(segment)

            def archived() -> bool | None:
                last, failed, failed_at = conn.execute(
                    "SELECT last_archived_wal, last_failed_wal, last_failed_time FROM pg_stat_archiver").fetchone()
                if last and pgwal.is_segment(last[:24]):
                    got = pgwal.parse_segment(last[:24])
                    if (got.timeline, got.position()) >= (target.timeline, target.position()):
                        return True
                if failed and failed[:24] == segment and failed_at and failed_at >= at:
                    raise ArchiveError(f"archiving WAL segment {segment} fails: see the PostgreSQL log "
                                       "(archive_command) and the spool folder")
                return None

            poll(archived, timeout=timeout, interval=0.1, what=f"WAL segment {segment} to be archived")
        return SwitchedWal(segment, lsn, utc(at))

    @engine_errors
    def recover_database(self, base_dir: Path, wal_dir: Path, target_time: datetime, source_database: str,
                         dump_path: Path, *, timeout: float = 3600.0) -> RecoveryResult:
        """``source_database`` as it was at ``target_time``, dumped (``pg_dump -Fc``) to
        ``dump_path``: from the base backup in ``base_dir`` (``base.tar``; its ``end_time`` must
        be at most ``target_time``) and the archived WAL in ``wal_dir`` (every segment from the
        base's start segment on; the folder must be readable by ``run_as``).

        ``RecoveryTargetNotReached`` when the archived WAL ends before ``target_time`` (or the
        target precedes the end of the base backup); ``EngineError`` for everything else."""
        started = time.monotonic()
        target = utc(target_time)
        base_tar = Path(base_dir) / BASE_FILES["base"]
        if not base_tar.is_file():
            raise EngineError(f"recovery: no {BASE_FILES['base']} in {base_dir}")
        wal_dir = Path(wal_dir).resolve()
        self._readable_by_run_as(wal_dir)
        with self._temporary_cluster(base_tar, wal_dir, target, timeout) as (socket_dir, port):
            import psycopg

            def connect(dbname: str):
                return psycopg.connect(host=str(socket_dir), port=port, user=self.superuser, dbname=dbname,
                                       autocommit=True, connect_timeout=5)

            with connect("postgres") as conn:
                reached, lsn = conn.execute(
                    "SELECT pg_last_xact_replay_timestamp(), pg_current_wal_lsn()::text").fetchone()
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (source_database,)).fetchone():
                    raise ServiceNotFound(f"recovery: there was no database {source_database} at {target.isoformat()}")
            with connect(source_database) as conn:
                tables = table_stats(conn)
            dump_path = Path(dump_path)
            dump_path.parent.mkdir(parents=True, exist_ok=True)
            run([self._tool("pg_dump"), "-h", str(socket_dir), "-p", str(port), "-U", self.superuser,
                 "--no-password", "-d", source_database, "-Fc", "-f", str(dump_path)],
                what=f"dump of {source_database} recovered to {target.isoformat()}", env={"PGTZ": "UTC"},
                timeout=self.tool_timeout)
        return RecoveryResult(target, utc(reached) if reached else None, lsn, tables, dump_path,
                              round(time.monotonic() - started, 3))

    # -- the temporary cluster -------------------------------------------------------------------
    def _as_run_as(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(argv, user=self.run_as, group=self.run_as, capture_output=True, check=False, **kw)

    def _readable_by_run_as(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ArchiveError(f"recovery: the WAL folder {folder} does not exist")
        if self._as_run_as(["test", "-r", str(folder), "-a", "-x", str(folder)]).returncode != 0:
            raise EngineError(f"recovery: the WAL folder {folder} must be readable by the OS user "
                              f"{self.run_as or 'running this'} (PostgreSQL's restore_command reads it)")

    @contextmanager
    def _temporary_cluster(self, base_tar: Path, wal_dir: Path, target: datetime,
                           timeout: float) -> Iterator[tuple[Path, int]]:
        """A postmaster recovering the base backup to ``target``, promoted; yields (socket folder,
        port). Stopped and removed afterwards, whatever happened."""
        top = Path(tempfile.mkdtemp(prefix="dbaas-pitr-", dir=self.scratch))
        # The socket's path must stay short (107 bytes): its own folder below /tmp.
        sockets = Path(tempfile.mkdtemp(prefix="dbaas-pitr-"))
        proc: subprocess.Popen | None = None
        try:
            for folder in (top, sockets):
                os.chmod(folder, 0o700)
                if self.run_as:
                    shutil.chown(folder, self.run_as, self.run_as)
            data = top / "data"
            made = self._as_run_as(["mkdir", "-m", "0700", str(data)])
            if made.returncode != 0:
                raise EngineError(f"recovery: cannot create {data}: {tail(made.stderr)}")
            with open(base_tar, "rb") as tar_in:  # opened here: run_as may not reach base_dir
                unpacked = self._as_run_as(["tar", "-x", "-f", "-", "-C", str(data)], stdin=tar_in)
            if unpacked.returncode != 0:
                raise EngineError(f"recovery: unpacking the base backup failed: {tail(unpacked.stderr)}")
            for name, text in (("pg_hba.conf", "local all all trust\n"), ("recovery.signal", "")):
                wrote = self._as_run_as(["sh", "-c", 'cat > "$1"', "sh", str(data / name)], input=text.encode())
                if wrote.returncode != 0:
                    raise EngineError(f"recovery: cannot write {name}: {tail(wrote.stderr)}")
            self._as_run_as(["mkdir", "-p", "-m", "0700", str(data / "pg_wal" / "archive_status")])
            port = 5432  # unix socket only, in a folder of its own: no clash with any server
            options = {
                "listen_addresses": "", "port": str(port), "unix_socket_directories": str(sockets),
                "archive_mode": "off", "hot_standby": "off", "shared_buffers": "32MB",
                # a throw-away copy: nothing of it needs to survive a crash
                "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                "max_wal_senders": "0", "max_replication_slots": "0", "logging_collector": "off",
                "log_destination": "stderr", "cluster_name": "dbaas-pitr", "synchronous_standby_names": "",
                "restore_command": f"cp {shlex.quote(str(wal_dir))}/%f %p",
                "recovery_target_time": target.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
                "recovery_target_action": "promote", "recovery_target_timeline": "latest",
            }
            argv = [self._tool("postgres"), "-D", str(data)]
            for name, value in options.items():
                argv += ["-c", f"{name}={value}"]
            log_path = top / "postgres.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        user=self.run_as, group=self.run_as, start_new_session=True,
                                        cwd=str(top), env={**os.environ, "TZ": "UTC", "PGTZ": "UTC"})
            poll(lambda: self._recovered(proc, sockets, port, log_path, target), timeout=timeout,
                 interval=0.2, what=f"the temporary cluster to recover to {target.isoformat()}")
            yield sockets, port
        finally:
            if proc is not None:
                _stop(proc)
            shutil.rmtree(top, ignore_errors=True)
            shutil.rmtree(sockets, ignore_errors=True)

    def _recovered(self, proc: subprocess.Popen, sockets: Path, port: int, log_path: Path,
                   target: datetime) -> bool | None:
        if proc.poll() is not None:
            log = log_path.read_text(errors="replace")
            if "recovery ended before configured recovery target was reached" in log:
                raise RecoveryTargetNotReached(
                    f"the archived WAL ends before {target.isoformat()}: recovery replayed all of it without "
                    "reaching that time (archive more WAL, e.g. switch_wal(), or choose an earlier time)")
            if "before consistent recovery point" in log:
                raise RecoveryTargetNotReached(
                    f"{target.isoformat()} is before the end of the base backup: choose an earlier base backup")
            raise EngineError(f"recovery: the temporary postmaster exited with {proc.returncode}:\n{tail(log, 15)}")
        import psycopg

        try:
            with psycopg.connect(host=str(sockets), port=port, user=self.superuser, dbname="postgres",
                                 autocommit=True, connect_timeout=2) as conn:
                return True if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] else None
        except psycopg.OperationalError:
            return None  # still starting up / recovering: it accepts no connections until promoted


def _stop(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Immediate shutdown (SIGQUIT: the copy is thrown away), then SIGKILL to the whole group if
    it lingers."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _data_file(manifest: Manifest, engine: str, files_dir: Path) -> Path:
    if manifest.engine != engine:
        raise ManifestError(f"a {manifest.engine} backup cannot be restored into {engine}")
    name = manifest.files.get("data")
    if not name:
        raise ManifestError("the manifest names no data file")
    path = Path(files_dir) / name
    if not path.is_file():
        raise EngineError(f"the backup's data file {path} is missing")
    return path


def table_stats(conn) -> dict[str, TableStat]:
    """Row count and checksum of every table the connection's database holds (in its snapshot)."""
    from psycopg import sql

    stats = {}
    for schema, table in conn.execute(_TABLES_SQL).fetchall():
        rows, checksum = conn.execute(sql.SQL(_STAT_SQL).format(sql.Identifier(schema, table))).fetchone()
        stats[f"{schema}.{table}"] = TableStat(rows, checksum)
    return stats


# -- the archive, as file names ----------------------------------------------------------------
def spool_listing(spool: Path) -> list[str]:
    """The archive files in a spool folder, in WAL order (copies in progress left out)."""
    return pgwal.archive_order(os.listdir(spool))


def wal_needed(base: BaseInfo, archived: Iterable[str]) -> list[str]:
    """The archived files recovery from ``base`` may read: see ``pgwal.wal_needed``."""
    return pgwal.wal_needed(base.start_segment, archived, timeline=base.timeline)


def prunable_wal(oldest_base: BaseInfo, archived: Iterable[str]) -> list[str]:
    """The archived files no base backup at or after ``oldest_base`` needs (retention)."""
    return pgwal.prunable(oldest_base.start_segment, archived)
