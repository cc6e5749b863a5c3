"""`python -m bench.backup [--mb 1024]`: backup + restore of a PostgreSQL service's database of
about `--mb` MiB by the local PoP's backup jobs (dump in one snapshot with per-table stats, sealed
with AES-256-GCM, uploaded to the platform's S3 server; then downloaded, opened, restored into a
new database and verified), against raw `pg_dump -Fc | pg_restore` of the same database into
another one, measured in the same run on the benchmark's platform instance."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from bench.common import platform
from operators.backup.jobs import LocalBackupJobs
from operators.backup.postgres import DEFAULT_BINDIR, PostgresBackups
from operators.backup.sealing import Kek
from operators.backup.store import ObjectStore
from operators.localpop.claims import Restore
from operators.localpop.provisioners import AdminEndpoint, PostgresProvisioner, service_identifier

TENANT = "bench-backup"


def _admin(dsn: str) -> AdminEndpoint:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return AdminEndpoint(info["host"], int(info["port"]), info["user"], info["password"])


def _fill(dsn: str, database: str, mb: int) -> int:
    """About `mb` MiB of rows in three tables; returns the database size in bytes."""
    url = psycopg.conninfo.make_conninfo(dsn, dbname=database)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'set role "{database}"')
        conn.execute("create table if not exists orders (id bigint primary key, customer int, note text)")
        conn.execute("create table if not exists items (id bigint primary key, sku text, qty int)")
        conn.execute("create table if not exists events (id bigserial primary key, body text)")
        rows = mb * 1024 * 1024 // 300
        conn.execute("insert into orders select g, g %% 1000, md5(g::text) || repeat('x', 200) "
                     "from generate_series(1, %s) g", (rows // 2,))
        conn.execute("insert into items select g, md5(g::text), g %% 7 from generate_series(1, %s) g", (rows // 4,))
        conn.execute("insert into events (body) select repeat(md5(g::text), 6) from generate_series(1, %s) g",
                     (rows // 4,))
        return conn.execute("select pg_database_size(current_database())").fetchone()[0]


def raw(admin: AdminEndpoint, source: str, target: str) -> float:
    env = {**os.environ, "PGPASSWORD": admin.password}
    conn = ["-h", admin.host, "-p", str(admin.port), "-U", admin.user]
    started = time.perf_counter()
    dump = subprocess.Popen([str(DEFAULT_BINDIR / "pg_dump"), *conn, "-d", source, "-Fc"], stdout=subprocess.PIPE,
                            env=env)
    subprocess.run([str(DEFAULT_BINDIR / "pg_restore"), *conn, "-d", target, "--no-owner", f"--role={target}",
                    "--single-transaction"], stdin=dump.stdout, check=True, env=env)
    dump.stdout.close()  # type: ignore[union-attr]
    if dump.wait():
        raise SystemExit("pg_dump failed")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    args = parser.parse_args()
    ep = platform()
    status = json.loads(subprocess.run([sys.executable, "-m", "cli.main", "stack", "status", "--home", str(ep.home),
                                        "--json", "--show-secrets"], capture_output=True, text=True, check=True).stdout)
    secrets = json.loads((ep.home / "secrets.json").read_text())
    environ = {"DBAAS_S3_ENDPOINT": status["endpoints"]["s3_endpoint"], "DBAAS_S3_ACCESS_KEY": secrets["s3_access_key"],
               "DBAAS_S3_SECRET_KEY": secrets["s3_secret_key"], "DBAAS_BACKUP_KEK": secrets["backup_kek"]}
    dsn = status["endpoints"]["postgres_dsn"]  # with its password (the benchmark connects as the platform)
    admin = _admin(dsn)
    provisioner = PostgresProvisioner(admin, password_key=b"bench")
    run = uuid.uuid4().hex[:6]
    source, raw_copy, copy = (str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{n}")) for n in ("src", "raw", "copy"))
    for sid in (source, raw_copy, copy):
        provisioner.provision(TENANT, sid, sid[:8])
    print(f"filling a PostgreSQL database with ~{args.mb} MiB …", flush=True)
    size = _fill(dsn, service_identifier(TENANT, source), args.mb)
    print(f"  database size {size / 2**20:.0f} MiB", flush=True)

    raw_s = raw(admin, service_identifier(TENANT, source), service_identifier(TENANT, raw_copy))
    print(f"raw pg_dump -Fc | pg_restore: {raw_s:.1f} s ({size / 2**20 / raw_s:.1f} MiB/s)", flush=True)

    jobs = LocalBackupJobs(ObjectStore.from_env(environ), Kek.from_env(environ), Path(ep.home) / "bench-backup-work",
                           {"yugabyte": PostgresBackups(admin)}, pop="local")
    backup_id = str(uuid.uuid4())
    started = time.perf_counter()
    details = json.loads(jobs.take(TENANT, source, backup_id, "yugabyte", False))
    took = time.perf_counter() - started
    print(f"backup (dump + seal + upload): {took:.1f} s, {details['size_bytes'] / 2**20:.0f} MiB stored", flush=True)
    started = time.perf_counter()
    jobs.restore(TENANT, copy, "yugabyte", Restore(TENANT, source, "yugabyte", backup_id, None))
    restored = time.perf_counter() - started
    print(f"restore (download + open + pg_restore + verify): {restored:.1f} s", flush=True)
    total = took + restored
    print(f"backup+restore {total:.1f} s vs raw {raw_s:.1f} s: ratio {raw_s / total:.2f} of raw speed "
          f"({total / raw_s:.2f}x the time)")
    jobs.drop(TENANT, backup_id)
    for sid in (source, raw_copy, copy):
        provisioner.deprovision(TENANT, sid)


if __name__ == "__main__":
    main()
