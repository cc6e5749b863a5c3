"""What retention deletes besides a backup's own objects: the archived WAL older than the oldest
base backup kept, and the shipped binlogs before the oldest kept MariaDB backup's position — over
a directory store, with real sealing."""
from __future__ import annotations

from datetime import UTC, datetime

from operators.backup.jobs import LocalBackupJobs, backup_prefix, base_prefix, binlog_prefix, wal_prefix
from operators.backup.manifest import Manifest
from operators.backup.pgwal import BaseInfo
from operators.backup.sealing import PLATFORM_TENANT, Kek
from operators.backup.store import DirectoryStore

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _jobs(tmp_path, engines=("vitess",)) -> LocalBackupJobs:
    return LocalBackupJobs(DirectoryStore(tmp_path / "store"), Kek.generate(), tmp_path / "work",
                           {e: object() for e in engines})


def _maria_backup(jobs: LocalBackupJobs, tenant: str, backup_id: str, binlog_file: str) -> None:
    m = Manifest("mariadb", tenant, "svc", backup_id, T, {"binlog_file": binlog_file, "binlog_pos": 4}, {},
                 {"data": "data.sql"})
    jobs.sealed.put_bytes(tenant, backup_prefix(tenant, backup_id) + "manifest.json", m.to_json().encode())


def test_dropping_a_mariadb_backup_deletes_the_binlogs_only_it_needed(tmp_path):
    jobs = _jobs(tmp_path)
    for n in range(1, 6):
        jobs.sealed.put_bytes(PLATFORM_TENANT, binlog_prefix("local") + f"mariadb-bin.{n:06d}", b"log")
    _maria_backup(jobs, "acme", "b-old", "mariadb-bin.000002")
    _maria_backup(jobs, "globex", "b-new", "mariadb-bin.000004")
    jobs.drop("acme", "b-old")
    left = sorted(o.key.rsplit("/", 1)[1] for o in jobs.store.list(binlog_prefix("local")))
    assert left == ["mariadb-bin.000004", "mariadb-bin.000005"]
    jobs.drop("globex", "b-new")
    assert jobs.store.list(binlog_prefix("local")) == []


def test_dropping_the_oldest_base_backup_deletes_the_wal_before_the_next(tmp_path):
    jobs = _jobs(tmp_path, engines=("yugabyte",))
    segments = [f"00000001000000000000000{n}" for n in range(1, 8)]
    for name in segments:
        jobs.sealed.put_bytes(PLATFORM_TENANT, wal_prefix("local") + name, b"wal")
    for backup_id, start in (("b1", "0/2000028"), ("b2", "0/5000028")):
        base = BaseInfo(start, start, 1, T, T, {"base": "base.tar"})
        jobs.sealed.put_bytes(PLATFORM_TENANT, base_prefix("local", backup_id) + "base.json", base.to_json().encode())
    jobs.drop("acme", "b1")
    left = sorted(o.key.rsplit("/", 1)[1] for o in jobs.store.list(wal_prefix("local")))
    assert left == segments[4:]  # from 000000010000000000000005, b2's start segment
