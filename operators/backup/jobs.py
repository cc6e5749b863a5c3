"""The local PoP's backup jobs: the engine mechanics (``postgres``, ``mariadb``, ``redis``) joined
to sealed object storage (``sealing``, ``store``).

- ``take``: the engine dumps the service (and, with PITR, the cluster's base backup is taken),
  every file is sealed under the tenant's data key (the cluster-wide base backup and log under the
  platform's) and uploaded; the manifest goes last, so a backup whose manifest is missing was
  never completed (a crash mid-upload leaves nothing restorable; taking it again overwrites the
  same keys — no duplicate). Returns the details the PoP reports with ``Completed``.
- ``drop``: deletes a backup's objects (and the base backup taken with it), then the archived log
  older than the oldest base backup still kept.
- ``restore``: loads a new service from a backup (verified against the manifest's row counts and
  checksums) or from a point in time (the newest base backup before it, replayed in a temporary
  cluster to the time, verified against the recovered copy's own stats).
- ``ship``: uploads the archived WAL / closed binlogs from their spool and removes them locally.

Errors: ``JobRetry`` (the store or a server is unavailable: try again), ``JobFailed`` (permanent,
with a reason a person can act on).
May import: ``operators.backup``, ``operators.localpop.claims``/``provisioners`` and the standard library.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from operators.backup.manifest import Manifest, ManifestError
from operators.backup.sealing import PLATFORM_TENANT, DataKeys, Kek, SealedObject, SealedStore, SealError
from operators.backup.store import ObjectMissing, ObjectStore, StoreError, StoreUnavailable
from operators.backup.tools import EngineError, RecoveryTargetNotReached
from operators.localpop.claims import Restore
from operators.localpop.provisioners import service_identifier

log = structlog.get_logger("operators.backup.jobs")

ENGINE_SERVERS = {"yugabyte": "postgres", "vitess": "mariadb", "dragonfly": "redis"}


class JobRetry(Exception):
    """The store or a server is unavailable: the job is tried again later."""


class JobFailed(Exception):
    """The job cannot succeed as asked; the message says why."""


class BackupJobs(Protocol):
    def take(self, tenant: str, service_id: str, backup_id: str, engine: str, pitr: bool) -> str: ...
    def drop(self, tenant: str, backup_id: str) -> None: ...
    def restore(self, tenant: str, service_id: str, engine: str, restore: Restore) -> None: ...
    def ship(self) -> None: ...


def backup_prefix(tenant: str, backup_id: str) -> str:
    return f"tenants/{tenant}/backups/{backup_id}/"


def base_prefix(pop: str, backup_id: str) -> str:
    return f"pops/{pop}/postgres/base/{backup_id}/"


def wal_prefix(pop: str) -> str:
    return f"pops/{pop}/postgres/wal/"


def binlog_prefix(pop: str) -> str:
    return f"pops/{pop}/mariadb/binlog/"


@contextmanager
def _failures(what: str):
    """Sort what goes wrong in a job: unavailable → retry, the rest → failed with the reason."""
    try:
        yield
    except StoreUnavailable as exc:
        raise JobRetry(f"{what}: object storage unavailable: {exc}") from exc
    except RecoveryTargetNotReached as exc:
        raise JobFailed(f"{what}: {exc}") from exc
    except (ObjectMissing, SealError, ManifestError) as exc:
        raise JobFailed(f"{what}: {type(exc).__name__}: {exc}") from exc
    except StoreError as exc:
        raise JobFailed(f"{what}: object storage refused: {exc}") from exc
    except EngineError as exc:
        if type(exc) is EngineError and "connect" in str(exc).lower():
            raise JobRetry(f"{what}: {exc}") from exc
        raise JobFailed(f"{what}: {exc}") from exc
    except (OSError, ValueError) as exc:  # a full disk, a missing tool, a malformed name or time
        raise JobFailed(f"{what}: {exc}") from exc


class LocalBackupJobs:
    """Backup jobs of PoP ``pop`` over its local servers (``engines``: engine name → the engine's
    backups object, e.g. ``{"yugabyte": PostgresBackups(...)}``)."""

    def __init__(self, store: ObjectStore, kek: Kek, workdir: Path, engines: Mapping[str, Any], *,
                 pop: str = "local", wal_spool: Path | None = None, bucket: str = "dbaas-backups",
                 binlog_interval: float = 60.0):
        self.store = store
        self.sealed = SealedStore(store, DataKeys(store, kek))
        self.workdir = Path(workdir)
        self.engines = dict(engines)
        self.pop = pop
        self.wal_spool = wal_spool
        self.binlog_interval = binlog_interval  # seconds between closing and shipping MariaDB's binlog
        self._binlogs_at = float("-inf")
        self.bucket = bucket

    # -- take ------------------------------------------------------------------------------------
    def take(self, tenant: str, service_id: str, backup_id: str, engine: str, pitr: bool) -> str:
        mechanics = self._engine(engine)
        with _failures(f"backup {backup_id}"), self._scratch(backup_id) as tmp:
            pitr_from = None
            pitr_base = None
            if pitr and engine == "yugabyte":
                base = mechanics.base_backup(tmp / "base")
                for name in base.files.values():
                    self.sealed.put_file(PLATFORM_TENANT, base_prefix(self.pop, backup_id) + name, tmp / "base" / name)
                self.sealed.put_bytes(PLATFORM_TENANT, base_prefix(self.pop, backup_id) + "base.json",
                                      base.to_json().encode())
                pitr_from, pitr_base = base.end_time, backup_id
            manifest = mechanics.backup(tenant, service_id, backup_id, tmp / "dump", pitr_base=pitr_base)
            if pitr and engine == "vitess":  # the dump's binlog position starts the window
                pitr_from = manifest.taken_at
            prefix = backup_prefix(tenant, backup_id)
            stored: list[SealedObject] = [
                self.sealed.put_file(tenant, prefix + name, tmp / "dump" / name) for name in manifest.files.values()]
            stored.append(self.sealed.put_bytes(tenant, prefix + "manifest.json", manifest.to_json().encode()))
        return json.dumps({
            "taken_at": manifest.taken_at.isoformat(), "size_bytes": sum(o.size for o in stored),
            "location": f"s3://{self.bucket}/{prefix}", "dek_id": stored[-1].dek_id, "kek_id": stored[-1].kek_id,
            "pitr_from": pitr_from.isoformat() if pitr_from else None, "consistency": dict(manifest.consistency),
            "tables": {name: {"rows": s.rows, "checksum": s.checksum} for name, s in manifest.tables.items()},
        }, sort_keys=True)

    # -- drop ------------------------------------------------------------------------------------
    def drop(self, tenant: str, backup_id: str) -> None:
        with _failures(f"deleting backup {backup_id}"):
            self.store.delete_prefix(backup_prefix(tenant, backup_id))
            self.store.delete_prefix(base_prefix(self.pop, backup_id))
            self._prune_wal()
            if "vitess" in self.engines:
                self._prune_binlogs()

    def _bases(self) -> list[tuple[str, Any]]:
        """The cluster base backups kept, oldest first: (backup id, BaseInfo)."""
        from operators.backup.pgwal import BaseInfo

        found = []
        root = f"pops/{self.pop}/postgres/base/"
        for obj in self.store.list(root):
            if obj.key.endswith("/base.json"):
                backup_id = obj.key[len(root):].split("/", 1)[0]
                found.append((backup_id, BaseInfo.from_json(self.sealed.get_bytes(PLATFORM_TENANT, obj.key))))
        return sorted(found, key=lambda item: item[1].end_time)

    def _prune_wal(self) -> None:
        """Archived WAL older than the oldest base backup kept restores nothing: delete it (all of
        it when no base backup is kept)."""
        from operators.backup import pgwal

        archived = [o.key[len(wal_prefix(self.pop)):] for o in self.store.list(wal_prefix(self.pop))]
        bases = self._bases()
        old = pgwal.prunable(bases[0][1].start_segment, archived) if bases else archived
        for name in old:
            self.store.delete(wal_prefix(self.pop) + name)

    def _prune_binlogs(self) -> None:
        """Shipped binlogs before the oldest kept MariaDB backup's position replay nothing: delete
        them (all of them when no MariaDB backup is kept)."""
        from operators.backup import binlog

        firsts = []
        for obj in self.store.list("tenants/"):
            if obj.key.endswith("/manifest.json"):
                tenant = obj.key.split("/")[1]
                m = Manifest.from_json(self.sealed.get_bytes(tenant, obj.key))
                if m.engine == "mariadb" and m.consistency.get("binlog_file"):
                    firsts.append(str(m.consistency["binlog_file"]))
        shipped = binlog.binlog_order(o.key[len(binlog_prefix(self.pop)):]
                                      for o in self.store.list(binlog_prefix(self.pop)))
        oldest = min((binlog.index_of(f) for f in firsts), default=None)
        for name in shipped:
            if oldest is None or binlog.index_of(name) < oldest:
                self.store.delete(binlog_prefix(self.pop) + name)

    # -- ship ------------------------------------------------------------------------------------
    def ship(self) -> None:
        with _failures("shipping archived logs"):
            if self.wal_spool is not None and self.wal_spool.is_dir():
                for path in sorted(self.wal_spool.iterdir()):
                    if path.name.endswith(".tmp") or not path.is_file():
                        continue
                    self.sealed.put_file(PLATFORM_TENANT, wal_prefix(self.pop) + path.name, path)
                    path.unlink()
            if "vitess" in self.engines and time.monotonic() - self._binlogs_at >= self.binlog_interval:
                self.ship_binlogs()

    def ship_binlogs(self) -> list[str]:
        """Close the current binlog and upload every closed one not in the store yet; their names."""
        maria = self.engines["vitess"]
        self._binlogs_at = time.monotonic()
        shipped = {o.key[len(binlog_prefix(self.pop)):] for o in self.store.list(binlog_prefix(self.pop))}
        missing = [n for n in maria.flush_and_list_closed_binlogs() if n not in shipped]
        with self._scratch("binlogs") as tmp:
            for path in maria.copy_binlogs(missing, tmp):
                self.sealed.put_file(PLATFORM_TENANT, binlog_prefix(self.pop) + path.name, path)
        return missing

    # -- restore ---------------------------------------------------------------------------------
    def restore(self, tenant: str, service_id: str, engine: str, restore: Restore) -> None:
        mechanics = self._engine(engine)
        if restore.source_engine != engine:
            raise JobFailed(f"the source service is a {restore.source_engine} service; it restores into "
                            f"{restore.source_engine} only, not {engine}")
        target = service_identifier(tenant, service_id) + (":" if engine == "dragonfly" else "")
        what = (f"restore of backup {restore.backup_id}" if restore.backup_id
                else f"restore to {restore.target_time}")
        with _failures(what), self._scratch(f"restore-{service_id}") as tmp:
            if restore.backup_id:
                manifest = self._fetch_backup(restore.source_tenant, restore.backup_id, tmp)
                self._load(mechanics, manifest, tmp, target)
                return
            at = datetime.fromisoformat(restore.target_time)  # type: ignore[arg-type]
            source = service_identifier(restore.source_tenant, restore.source_service_id)
            if engine == "yugabyte":
                manifest = self._recover_postgres(mechanics, at, source, restore, tmp)
                self._load(mechanics, manifest, tmp, target)
            elif engine == "vitess":
                from operators.backup import binlog

                base = self._recover_mariadb(mechanics, at, source, restore, tmp)
                self._load(mechanics, base, tmp / "dump", target)
                self.ship_binlogs()
                first = base.consistency["binlog_file"]
                names = [o.key[len(binlog_prefix(self.pop)):] for o in self.store.list(binlog_prefix(self.pop))]
                logs = tmp / "binlog"
                logs.mkdir()
                for name in binlog.files_from(first, names):
                    self.sealed.get_file(PLATFORM_TENANT, binlog_prefix(self.pop) + name, logs / name)
                mechanics.replay_to_time(base, logs, at, source_database=source, target_database=target)
            else:
                raise JobFailed(f"engine {engine} restores backup instants only, not points in time")

    def _load(self, mechanics: Any, manifest: Manifest, folder: Path, target: str) -> None:
        mechanics.restore(manifest, folder, target)
        differences = mechanics.verify(manifest, target)
        if differences:
            raise JobFailed("the restored data does not match the backup: " + "; ".join(differences[:5]))

    def _fetch_backup(self, tenant: str, backup_id: str, folder: Path) -> Manifest:
        prefix = backup_prefix(tenant, backup_id)
        try:
            manifest = Manifest.from_json(self.sealed.get_bytes(tenant, prefix + "manifest.json"))
        except ObjectMissing:
            raise JobFailed(f"backup {backup_id} has no manifest in object storage: it never completed "
                            "or was deleted") from None
        self._fetch_files(tenant, manifest, folder)
        return manifest

    def _recover_postgres(self, pg: Any, at: datetime, source: str, restore: Restore, tmp: Path) -> Manifest:
        pg.switch_wal()  # the archive covers now, so a time up to now is reachable
        self.ship()
        bases = [(bid, base) for bid, base in self._bases() if base.end_time <= at]
        if not bases:
            raise JobFailed(f"no base backup ends before {at.isoformat()}: the recovery window starts later")
        backup_id, base = bases[-1]
        (tmp / "base").mkdir()
        for name in base.files.values():
            self.sealed.get_file(PLATFORM_TENANT, base_prefix(self.pop, backup_id) + name, tmp / "base" / name)
        from operators.backup import pgwal

        archived = [o.key[len(wal_prefix(self.pop)):] for o in self.store.list(wal_prefix(self.pop))]
        wal = tmp / "wal"
        wal.mkdir()
        for name in pgwal.wal_needed(base.start_segment, archived):
            self.sealed.get_file(PLATFORM_TENANT, wal_prefix(self.pop) + name, wal / name)
        if pg.run_as:  # the temporary cluster's user reads the base backup and the WAL
            for path in (tmp, tmp / "base", *(tmp / "base").iterdir(), wal, *wal.iterdir()):
                shutil.chown(path, user=pg.run_as)
        result = pg.recover_database(tmp / "base", wal, at, source, tmp / "recovered.dump")
        log.info("recovered to a point in time", target_time=at.isoformat(),
                 reached=result.reached.isoformat() if result.reached else None, base=backup_id)
        return result.manifest(restore.source_tenant, restore.source_service_id, f"pitr-{backup_id}")

    def _recover_mariadb(self, maria: Any, at: datetime, source: str, restore: Restore, tmp: Path) -> Manifest:
        """The newest backup of the source taken at or before ``at``, fetched into ``tmp/dump``
        (the caller loads and verifies it, then replays the binlog from its position to ``at``)."""
        candidates = []
        root = f"tenants/{restore.source_tenant}/backups/"
        for obj in self.store.list(root):
            if obj.key.endswith("/manifest.json"):
                m = Manifest.from_json(self.sealed.get_bytes(restore.source_tenant, obj.key))
                if m.service_id == restore.source_service_id and m.engine == "mariadb" and m.taken_at <= at:
                    candidates.append(m)
        if not candidates:
            raise JobFailed(f"no backup of the source was taken before {at.isoformat()}: the recovery window "
                            "starts later")
        base = max(candidates, key=lambda m: m.taken_at)
        (tmp / "dump").mkdir()
        self._fetch_files(restore.source_tenant, base, tmp / "dump")
        return base

    def _fetch_files(self, tenant: str, manifest: Manifest, folder: Path) -> None:
        for name in manifest.files.values():
            self.sealed.get_file(tenant, backup_prefix(tenant, manifest.backup_id) + name, folder / name)

    # -- helpers ---------------------------------------------------------------------------------
    def _engine(self, engine: str) -> Any:
        mechanics = self.engines.get(engine)
        if mechanics is None:
            raise JobFailed(f"engine {engine} has no backups in PoP {self.pop} (its server is not configured)")
        return mechanics

    @contextmanager
    def _scratch(self, name: str):
        self.workdir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        folder.chmod(0o755)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def build_jobs(environ: Mapping[str, str], settings: Any, provisioners: Mapping[str, Any]
               ) -> LocalBackupJobs | str:
    """The jobs of the local PoP from its settings and environment, or why there are none."""
    if not environ.get("DBAAS_S3_ENDPOINT"):
        return "object storage is not configured for the local PoP: set DBAAS_S3_ENDPOINT and its credentials"
    try:
        store, kek = ObjectStore.from_env(environ), Kek.from_env(environ)
    except (ValueError, KeyError) as exc:
        return f"object storage or the backup key is misconfigured: {exc}"
    engines: dict[str, Any] = {}
    builders: dict[str, Callable[[], Any]] = {}
    if settings.postgres is not None:
        from operators.backup.postgres import PostgresBackups

        builders["yugabyte"] = lambda: PostgresBackups(settings.postgres,
                                                       admin_database=settings.postgres_admin_database)
    if settings.mariadb is not None:
        from operators.backup.mariadb import MariaDBBackups

        builders["vitess"] = lambda: MariaDBBackups(settings.mariadb)
    if settings.redis is not None:
        from operators.backup.redis import RedisBackups

        builders["dragonfly"] = lambda: RedisBackups(settings.redis)
    for engine, build in builders.items():
        engines[engine] = build()
    spool = environ.get("DBAAS_LOCALPOP_PG_WAL_SPOOL")
    return LocalBackupJobs(store, kek, Path(settings.state_dir) / "backup-work", engines,
                           pop=settings.pop, wal_spool=Path(spool) if spool else None,
                           bucket=environ.get("DBAAS_S3_BUCKET", "dbaas-backups"))
