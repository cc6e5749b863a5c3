"""What the launcher's servers are started with for backups: PostgreSQL archives its WAL into a
spool outside its data folder (and is restarted when started without), the local PoP agent is
told where the spool is, MariaDB keeps a row-based binlog in UTC. No server runs here."""
from __future__ import annotations

import pytest

from deploy.stack import config
from deploy.stack.base import Context
from deploy.stack.components import Postgres, localpop_agent_env
from deploy.stack.engines import MariaDB


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    monkeypatch.setattr(Postgres, "data_dir", lambda self, ctx: ctx.config.home / "postgres")
    return Context(config.resolve(tmp_path / "home", port_offset=1000), lambda: None, lambda _m: None)


def test_postgres_archives_its_wal_into_a_spool_beside_its_data_folder(ctx):
    pg = Postgres()
    argv = pg.argv(ctx)
    options = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "-c")
    script = pg.archive_dir(ctx) / "archive-wal.sh"
    assert options["archive_mode"] == "on" and int(options["archive_timeout"]) <= 300
    assert options["archive_command"] == f'{script} "%p" "%f"'
    spool = pg.wal_spool(ctx)
    assert not spool.is_relative_to(pg.data_dir(ctx)), "base backups must not carry the archive"
    assert localpop_agent_env(ctx)["DBAAS_LOCALPOP_PG_WAL_SPOOL"] == str(spool)


def test_postgres_is_restarted_when_its_command_line_changes(ctx, monkeypatch):
    pg = Postgres()
    before = pg.settings_fingerprint(ctx)
    assert before == pg.settings_fingerprint(ctx)
    monkeypatch.setattr(Postgres, "ARCHIVE_TIMEOUT", 30)
    assert pg.settings_fingerprint(ctx) != before


def test_mariadb_logs_rows_in_utc_and_keeps_binlogs_long_after_shipping(ctx):
    argv = set(MariaDB().argv(ctx))
    assert {"--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL", "--default-time-zone=+00:00",
            "--sync-binlog=1", "--log-bin-trust-function-creators=1"} <= argv
    keep = next(int(a.split("=")[1]) for a in argv if a.startswith("--binlog-expire-logs-seconds="))
    assert keep >= 3 * 24 * 3600
