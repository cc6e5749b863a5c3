"""MariaDB (Vitess's MySQL protocol in PoP ``local``): a service's backup, restore and replay of
its binary log to a point in time. The tools are Debian's MariaDB 10.11 clients:
``mariadb-dump``, ``mariadb`` and ``mariadb-binlog``; the admin (``root``) password reaches them
in a private option file (``--defaults-extra-file``, mode 0600), never on a command line.

A service is one database (``service_identifier(tenant, service_id)``) and a user of that name
(``operators.localpop.provisioners``). The server logs every change in ROW format
(``deploy/stack/engines.py``).

Backup (``backup``): ``mariadb-dump --single-transaction --master-data=2 --gtid --routines
--triggers --events --hex-blob <database>``. ``--single-transaction`` reads in one consistent
snapshot (``START TRANSACTION WITH CONSISTENT SNAPSHOT``) without locking; with it,
``--master-data=2`` takes the binlog coordinates of that very snapshot (MariaDB's
``binlog_snapshot_file/pos``, no global read lock) and writes them as a comment: where a replay of
changes made after the dump starts. The stats (row count and checksum per table) are computed by
a second consistent-snapshot transaction at the same instant: the service's tables are held with
``FLUSH TABLES … WITH READ LOCK`` (writes to them wait; reads go on) from before that transaction
starts until the dump's session has started its own snapshot (it has once it selects the
database), typically a fraction of a second. A table's checksum is the sum of the first 60 bits of
``MD5(CONCAT_WS(',', QUOTE(col1), QUOTE(col2), …))`` over its rows (``QUOTE`` tells NULL from
the text 'NULL'); independent of row order and storage engine, unlike ``CHECKSUM TABLE``.

Restore (``restore``): the dump is fed to ``mariadb --database=<target>``, with every ``DEFINER``
naming the old service's user rewritten to the new one's (views, triggers, routines and events
would otherwise run with the old service's rights). ``verify`` recomputes the stats on the copy.

Binlogs (``flush_and_list_closed_binlogs``, ``copy_binlogs``): ``FLUSH BINARY LOGS`` closes the
current file; every file but the newest is closed, and ``mariadb-binlog --read-from-remote-server
--raw`` copies closed ones byte for byte over the replication protocol (no access to the server's
files needed). The caller ships them.

Replay (``replay_to_time``): per binlog file from the backup's, ``mariadb-binlog
[--start-position=<backup's position>] --stop-datetime=<T'> --database=<source>
--rewrite-db='<source>-><target>'``, run with ``TZ=UTC`` (``--stop-datetime`` is read in the
client's local time zone), piped into ``mariadb --binary-mode --database=<target>``:

- ``--database=<source>`` keeps the events of the source database: with ROW logging the filter
  applies to each row event's table map, so rows of other tenants' databases are left out.
  MariaDB's filter compares the *original* database name (before ``--rewrite-db``);
- ``--rewrite-db`` renames the database in the table maps of row events and in the default
  database of statements (DDL), so the changes land in the new service's database;
- ``--stop-datetime``: binlog event times are whole seconds, so T' is the second after the one
  ``target_time`` falls in: every change logged in T's second is included.

Two things ``mariadb-binlog`` would pass on are removed from its output before it reaches the
server: statements with no default database (the filter keeps them) and account or database
statements (``CREATE USER``, ``GRANT``, ``CREATE/DROP DATABASE``, …) — the platform's own
provisioning, never the tenant's data — and the original GTID sequence numbers (replayed
changes are new transactions with GTIDs of their own; reusing old ones would put the binlog out
of order). The replay fails with ``RecoveryTargetNotReached`` when the shipped binlogs end
before T'.

Times are timezone-aware and handled in UTC. Errors: ``tools.EngineError`` and its kinds.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from operators.backup import binlog
from operators.backup.manifest import Manifest, ManifestError, TableStat, diff_tables
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

DUMP_FILE = "data.sql"
_MASTER = re.compile(rb"CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+)")
_GTID_SEQ = re.compile(rb"^/\*M?!\d+ SET @@session\.gtid_seq_no=\d+\*/(/\*!\*/;)?\s*$")
# The platform's account and database statements: never replayed into a tenant's database.
_ADMIN_STATEMENT = re.compile(
    rb"^\s*(/\*.*?\*/\s*)*(CREATE|DROP|ALTER|RENAME)\s+(DATABASE|SCHEMA|USER|ROLE)\b|^\s*(/\*.*?\*/\s*)*"
    rb"(GRANT|REVOKE|SET\s+PASSWORD|SET\s+DEFAULT\s+ROLE|FLUSH|INSTALL|UNINSTALL|CHANGE\s+MASTER)\b",
    re.IGNORECASE | re.DOTALL)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must carry their time zone (UTC)")
    return moment.astimezone(timezone.utc)


class MariaDBBackups:
    """Backups of the services of one MariaDB server. ``admin``: a user with every privilege
    (``root``); ``bindir``: where the MariaDB client programs are."""

    def __init__(self, admin: AdminEndpoint, bindir: Path = Path("/usr/bin"), *, connect_timeout: float = 10.0,
                 lock_timeout: int = 60, tool_timeout: float = 6 * 3600):
        self.admin = admin
        self.bindir = Path(bindir)
        self.connect_timeout = connect_timeout
        self.lock_timeout = lock_timeout
        self.tool_timeout = tool_timeout

    # -- connections and tools -------------------------------------------------------------------
    def _connect(self, database: str | None = None, *, autocommit: bool = True):
        import pymysql

        try:
            return pymysql.connect(host=self.admin.host, port=self.admin.port, user=self.admin.user,
                                   password=self.admin.password, database=database, autocommit=autocommit,
                                   connect_timeout=self.connect_timeout, charset="utf8mb4")
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 1049:
                raise ServiceNotFound(f"MariaDB has no database {database}") from None
            raise EngineError(f"MariaDB at {self.admin.host}:{self.admin.port}: {exc.args[-1]}") from None

    @contextmanager
    def _option_file(self) -> Iterator[str]:
        """The admin's credentials for the client programs, in a file only this user reads."""
        fd, path = tempfile.mkstemp(prefix="dbaas-mariadb-", suffix=".cnf")
        try:
            value = self.admin.password.replace("\\", "\\\\").replace('"', '\\"')
            with os.fdopen(fd, "w") as fh:
                fh.write(f'[client]\nuser="{self.admin.user}"\npassword="{value}"\n'
                         f"host={self.admin.host}\nport={self.admin.port}\nprotocol=TCP\n")
            yield f"--defaults-extra-file={path}"  # must be the programs' first option
        finally:
            os.unlink(path)

    def _tool(self, name: str) -> str:
        return str(self.bindir / name)

    # -- one service -----------------------------------------------------------------------------
    @engine_errors
    def backup(self, tenant: str, service_id: str, backup_id: str, workdir: Path, *,
               pitr_base: str | None = None) -> Manifest:
        """Dump the service's database into ``workdir/data.sql``; its manifest (not written)."""
        database = service_identifier(tenant, service_id)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        dump = workdir / DUMP_FILE
        with self._connect() as locker, self._connect(database, autocommit=False) as snap, self._option_file() as opts:
            lock, cur = locker.cursor(), snap.cursor()
            tables = _base_tables(cur, database)
            lock.execute(f"SET SESSION lock_wait_timeout = {int(self.lock_timeout)}")
            if tables:  # FLUSH TABLES WITH READ LOCK without names would lock the whole server
                lock.execute("FLUSH TABLES " + ", ".join(f"{_q(database)}.{_q(t)}" for t in tables)
                             + " WITH READ LOCK")
            proc: subprocess.Popen | None = None
            try:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                cur.execute("SELECT CONNECTION_ID(), UTC_TIMESTAMP(6)")
                own_id, taken_at = cur.fetchone()
                argv = [self._tool("mariadb-dump"), opts, "--single-transaction", "--master-data=2", "--gtid",
                        "--routines", "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4",
                        "--tz-utc", f"--result-file={dump}", database]
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
                try:
                    poll(lambda: self._dump_started(lock, proc, database, (own_id, locker.thread_id())),
                         timeout=self.lock_timeout, interval=0.02, what="the dump to start its snapshot")
                finally:
                    lock.execute("UNLOCK TABLES")
                stats = {t: _table_stat(cur, database, t) for t in tables}
                snap.rollback()
                _, err = proc.communicate(timeout=self.tool_timeout)
            except BaseException:
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise
        if proc.returncode != 0:
            raise ToolFailed(f"backup of {database}: mariadb-dump exited with {proc.returncode}:\n{tail(err)}")
        binlog_file, binlog_pos = _dump_coordinates(dump)
        with self._connect() as conn, conn.cursor() as c:
            c.execute("SELECT BINLOG_GTID_POS(%s, %s)", (binlog_file, binlog_pos))
            gtid = c.fetchone()[0]
        return Manifest(engine="mariadb", tenant=tenant, service_id=service_id, backup_id=backup_id,
                        taken_at=taken_at.replace(tzinfo=timezone.utc),
                        consistency={"binlog_file": binlog_file, "binlog_pos": binlog_pos, "gtid": gtid or ""},
                        tables=stats, files={"data": DUMP_FILE}, pitr_base=pitr_base)

    def _dump_started(self, cur, proc: subprocess.Popen, database: str, ours: tuple[int, ...]) -> bool | None:
        """The dump's session has its snapshot once it has selected the database (it starts the
        transaction and reads the coordinates first), or it is already done. Its session is the
        admin's other one in that database (the tenant's own sessions use its own user)."""
        if proc.poll() is not None:
            return True
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND USER = %s "
                    "AND ID NOT IN %s", (database, self.admin.user, ours))
        return True if cur.fetchone()[0] else None

    @engine_errors
    def restore(self, manifest: Manifest, files_dir: Path, target_database: str, *,
                target_user: str | None = None) -> None:
        """Load the backup's dump into ``target_database`` (provisioned, empty); definers of the
        old service become ``target_user`` (default: the user named like the database)."""
        dump = _data_file(manifest, files_dir)
        source = service_identifier(manifest.tenant, manifest.service_id)
        user = target_user or target_database
        definer = re.compile(rb"DEFINER=`" + re.escape(source.encode()) + rb"`@`[^`]*`")
        replacement = b"DEFINER=`" + user.encode() + b"`@`localhost`"
        with self._option_file() as opts, open(dump, "rb") as source_file:
            self._feed([self._tool("mariadb"), opts, "--binary-mode", "--default-character-set=utf8mb4",
                        f"--database={target_database}"],
                       (line if line.startswith(b"INSERT INTO ") else definer.sub(replacement, line)
                        for line in source_file),  # rows (one INSERT a line) are data, left alone
                       what=f"restore of backup {manifest.backup_id} into {target_database}")

    @engine_errors
    def verify(self, manifest: Manifest, target_database: str) -> list[str]:
        """What differs between the backup's tables and ``target_database``'s; empty: identical."""
        with self._connect(target_database, autocommit=False) as conn, conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            actual = {t: _table_stat(cur, target_database, t) for t in _base_tables(cur, target_database)}
            conn.rollback()
        return diff_tables(manifest.tables, actual)

    def _feed(self, argv: list[str], chunks, *, what: str) -> None:
        """Run a client with ``chunks`` (bytes) on its standard input."""
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the client stopped reading: its exit status and message say why
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            try:
                code = proc.wait(timeout=self.tool_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ToolFailed(f"{what}: mariadb did not finish within {self.tool_timeout:.0f}s") from None
            if code != 0:
                errors.seek(0)
                raise ToolFailed(f"{what}: mariadb exited with {code}:\n{tail(errors.read())}")

    # -- binary logs -----------------------------------------------------------------------------
    @engine_errors
    def flush_and_list_closed_binlogs(self) -> list[str]:
        """Close the current binlog (``FLUSH BINARY LOGS``); the names of every closed one the
        server still has, oldest first."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW BINARY LOGS")
            names = binlog.binlog_order(row[0] for row in cur.fetchall())
        return names[:-1]  # the newest one is open

    @engine_errors
    def copy_binlogs(self, names: list[str], dest_dir: Path) -> list[Path]:
        """Copy closed binlog files, byte for byte, into ``dest_dir`` (each appears complete or
        not at all). Returns their paths."""
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        if not names:
            return []
        staging = Path(tempfile.mkdtemp(prefix=".binlog-copy-", dir=dest_dir))
        try:
            with self._option_file() as opts:
                run([self._tool("mariadb-binlog"), opts, "--read-from-remote-server", "--raw",
                     f"--result-file={staging}/", *names], what="copy of binlogs", timeout=self.tool_timeout)
            copied = []
            for name in names:
                if not (staging / name).is_file():
                    raise ArchiveError(f"copy of binlogs: {name} was not received")
                os.replace(staging / name, dest_dir / name)
                copied.append(dest_dir / name)
            return copied
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @engine_errors
    def replay_to_time(self, manifest: Manifest, binlog_dir: Path, target_time: datetime,
                       source_database: str | None = None, target_database: str | None = None) -> dict:
        """Apply to ``target_database`` (where the backup was restored) the changes made to
        ``source_database`` (default: the backup's service) from the backup's binlog position up
        to ``target_time``, from the binlog files in ``binlog_dir`` (the backup's file and every
        later one). Returns what was replayed: files, stop time, events events_read.

        ``ArchiveError``: a needed file is missing; ``RecoveryTargetNotReached``: the files end
        before the target's second is over (ship more binlogs, or choose an earlier time)."""
        if manifest.engine != "mariadb":
            raise ManifestError(f"a {manifest.engine} backup has no binlog position")
        if target_database is None:
            raise ValueError("target_database is needed")
        source = source_database or service_identifier(manifest.tenant, manifest.service_id)
        first, start = manifest.consistency["binlog_file"], int(manifest.consistency["binlog_pos"])
        stop = binlog.stop_second(_utc(target_time))
        if _utc(target_time) < manifest.taken_at:
            raise EngineError(f"{_utc(target_time).isoformat()} is before the backup ({manifest.taken_at.isoformat()}): "
                              "replay from an earlier backup")
        binlog_dir = Path(binlog_dir)
        try:
            files = binlog.files_from(first, os.listdir(binlog_dir))
        except ValueError as exc:
            raise ArchiveError(f"replay: {exc} in {binlog_dir}") from None
        last_time = binlog.last_event_time(binlog_dir / files[-1])
        if last_time is None or last_time < stop:
            raise RecoveryTargetNotReached(
                f"the shipped binlogs end at {last_time.isoformat() if last_time else 'nothing'}, before "
                f"{stop.isoformat()}: ship the binlogs closed after it, or choose an earlier time")
        started = time.monotonic()
        replayed: list[str] = []
        events_read = 0

        def chunks() -> Iterator[bytes]:
            nonlocal events_read
            for name in files:
                path = binlog_dir / name
                events = list(binlog.events(path))
                begin = start if name == first else 4
                dropped = not_replayed(events)
                events_read += sum(1 for e in events if e.position >= begin and e.timestamp < stop.timestamp())
                replayed.append(name)
                yield from self._binlog_sql(path, begin, stop, source, target_database, dropped)
                if events and events[-1].timestamp >= stop.timestamp():
                    return  # this file reaches the target: later ones hold nothing before it

        with self._option_file() as opts:
            self._feed([self._tool("mariadb"), opts, "--binary-mode", "--default-character-set=utf8mb4",
                        f"--database={target_database}"], chunks(),
                       what=f"replay of {source}'s binlog into {target_database}")
        return {"files": replayed, "stop_datetime": stop.isoformat(), "events_read": events_read,
                "seconds": round(time.monotonic() - started, 3)}

    def _binlog_sql(self, path: Path, start: int, stop: datetime, source: str, target: str,
                    dropped: set[int]) -> Iterator[bytes]:
        """``mariadb-binlog``'s SQL for one file, without the events at ``dropped`` positions and
        without GTID sequence numbers."""
        argv = self.binlog_argv(path, start, stop, source, target)
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                    env={**os.environ, "TZ": "UTC"})
            try:
                yield from filter_binlog_sql(proc.stdout, dropped)
            finally:
                proc.stdout.close()
                code = proc.wait()
            if code != 0:
                errors.seek(0)
                raise ToolFailed(f"replay: mariadb-binlog {path.name} exited with {code}:\n{tail(errors.read())}")

    def binlog_argv(self, path: Path, start: int, stop: datetime, source: str, target: str) -> list[str]:
        """The ``mariadb-binlog`` call for one file (run with ``TZ=UTC``)."""
        argv = [self._tool("mariadb-binlog"), "--no-defaults"]
        if start > 4:
            argv.append(f"--start-position={start}")
        return [*argv, f"--stop-datetime={_utc(stop).strftime('%Y-%m-%d %H:%M:%S')}", f"--database={source}",
                f"--rewrite-db={source}->{target}", str(path)]


def not_replayed(events: Iterable[binlog.Event]) -> set[int]:
    """Positions of the statements a replay leaves out: those without a default database (the
    ``--database`` filter passes them) and account or database statements, but for transaction
    delimiters."""
    return {e.position for e in events if e.type == binlog.QUERY_EVENT and not e.delimits_transaction
            and (e.database == "" or _ADMIN_STATEMENT.match(e.query or b""))}


def filter_binlog_sql(lines: Iterable[bytes], dropped: set[int]) -> Iterator[bytes]:
    """``mariadb-binlog``'s output without the events at ``dropped`` positions (each event's
    output starts with its ``# at <position>`` line) and without GTID sequence numbers."""
    skipping = False
    for line in lines:
        if line.startswith(b"# at "):
            position = line[5:].strip()
            skipping = position.isdigit() and int(position) in dropped
        if skipping or _GTID_SEQ.match(line):
            continue
        yield line


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _base_tables(cur, database: str) -> list[str]:
    cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (database,))
    return [row[0] for row in cur.fetchall()]


def _table_stat(cur, database: str, table: str) -> TableStat:
    cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                "ORDER BY ORDINAL_POSITION", (database, table))
    row = "CONCAT_WS(',', " + ", ".join(f"QUOTE({_q(c)})" for (c,) in cur.fetchall()) + ")"
    cur.execute(f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(LEFT(MD5({row}), 15), 16, 10) AS UNSIGNED)), 0) "
                f"FROM {_q(database)}.{_q(table)}")
    count, checksum = cur.fetchone()
    return TableStat(int(count), str(checksum))


def _dump_coordinates(dump: Path) -> tuple[str, int]:
    """The binlog file and position ``--master-data=2`` wrote near the dump's top."""
    with open(dump, "rb") as fh:
        for _, line in zip(range(200), fh):
            match = _MASTER.search(line)
            if match:
                return match.group(1).decode(), int(match.group(2))
    raise EngineError(f"{dump.name} has no binlog coordinates: is the server's binary log on?")


def _data_file(manifest: Manifest, files_dir: Path) -> Path:
    if manifest.engine != "mariadb":
        raise ManifestError(f"a {manifest.engine} backup cannot be restored into mariadb")
    name = manifest.files.get("data")
    if not name:
        raise ManifestError("the manifest names no data file")
    path = Path(files_dir) / name
    if not path.is_file():
        raise EngineError(f"the backup's data file {path} is missing")
    return path
