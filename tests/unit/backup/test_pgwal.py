"""PostgreSQL's WAL archive by file name (order, what a base backup needs, what retention may
prune), base backup descriptions, and the launcher's archive_command script run for real."""
from __future__ import annotations

import subprocess
from datetime import datetime, timezone

import pytest

from deploy.stack.components import archive_script
from operators.backup import pgwal
from operators.backup.pgwal import BaseInfo
from operators.backup.postgres import prunable_wal, spool_listing, wal_needed


def seg(timeline: int, log: int, number: int) -> str:
    return f"{timeline:08X}{log:08X}{number:08X}"


def test_segment_names_parse_and_order_by_position_then_timeline():
    assert pgwal.parse_segment("0000000200000001000000FF") == pgwal.Segment(2, 1, 255)
    names = [seg(1, 1, 0), "00000002.history", seg(2, 0, 0xFF), seg(1, 0, 0xFF), "junk.tmp",
             seg(1, 0, 3) + ".00000028.backup", seg(1, 0, 3), seg(1, 0, 0xFF) + ".tmp", seg(1, 0, 4) + ".partial"]
    assert pgwal.archive_order(names) == [
        "00000002.history", seg(1, 0, 3), seg(1, 0, 3) + ".00000028.backup", seg(1, 0, 4) + ".partial",
        seg(1, 0, 0xFF), seg(2, 0, 0xFF), seg(1, 1, 0)]
    # a position crosses the 4 GiB "log" boundary: segment FF of log 0 comes before 0 of log 1
    assert pgwal.parse_segment(seg(1, 0, 0xFF)).position() + 1 == pgwal.parse_segment(seg(1, 1, 0)).position()
    with pytest.raises(ValueError):
        pgwal.parse_segment("00000001000000000000000G")


@pytest.mark.parametrize("lsn, name", [
    ("0/3000028", seg(1, 0, 3)), ("0/2FFFFFF", seg(1, 0, 2)), ("1/0", seg(1, 1, 0)), ("1/FF000000", seg(1, 1, 0xFF)),
])
def test_the_segment_of_an_lsn(lsn, name):
    assert pgwal.segment_of(lsn, 1) == name
    assert pgwal.format_lsn(pgwal.parse_lsn(lsn)) == lsn


def _base(start="0/3000028", end="0/3000100", timeline=1) -> BaseInfo:
    return BaseInfo(start, end, timeline, datetime(2026, 1, 1, tzinfo=timezone.utc),
                    datetime(2026, 1, 1, 0, 0, 2, tzinfo=timezone.utc), {"base": "base.tar", "manifest": "backup_manifest"})


def test_wal_needed_from_a_base_backup_and_what_retention_may_prune():
    archive = [seg(1, 0, n) for n in range(1, 8)] + [seg(1, 0, 3) + ".00000028.backup", "00000002.history",
                                                      seg(2, 0, 6), seg(1, 0, 2) + ".partial", "x.tmp"]
    base = _base()
    assert base.start_segment == seg(1, 0, 3) and base.end_segment == seg(1, 0, 3)
    assert wal_needed(base, archive) == ["00000002.history", seg(1, 0, 3), seg(1, 0, 4), seg(1, 0, 5),
                                         seg(1, 0, 6), seg(2, 0, 6), seg(1, 0, 7)]
    assert prunable_wal(base, archive) == [seg(1, 0, 1), seg(1, 0, 2), seg(1, 0, 2) + ".partial"]
    # a base backup on timeline 2 needs nothing of timeline 1
    assert wal_needed(_base("0/6000028", "0/6000100", 2), archive) == ["00000002.history", seg(2, 0, 6)]


def test_base_info_round_trips_through_json():
    base = _base()
    assert BaseInfo.from_json(base.to_json()) == base
    with pytest.raises(ValueError, match="not a base backup description"):
        BaseInfo.from_dict({"start_lsn": "nope", "end_lsn": "0/1", "timeline": 1,
                            "start_time": "2026-01-01T00:00:00+00:00", "end_time": "2026-01-01T00:00:00+00:00"})


def test_backup_label_and_manifest_wal_ranges_parse():
    label = ("START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: 0/3000060\n"
             "BACKUP METHOD: streamed\nSTART TIMELINE: 1\n")
    assert pgwal.parse_backup_label(label) == ("0/3000028", 1)
    manifest = '{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [], "WAL-Ranges": [' \
               '{ "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000100" }]}'
    assert pgwal.parse_wal_ranges(manifest) == (1, "0/3000028", "0/3000100")
    with pytest.raises(ValueError):
        pgwal.parse_wal_ranges('{"WAL-Ranges": []}')


# -- the archive_command script the launcher writes --------------------------------------------
@pytest.fixture
def archiver(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    script = tmp_path / "archive-wal.sh"
    script.write_text(archive_script(spool))
    script.chmod(0o755)
    data = tmp_path / "data" / "pg_wal"
    data.mkdir(parents=True)

    def archive(name: str, content: bytes) -> subprocess.CompletedProcess:
        (data / name).write_bytes(content)
        # as PostgreSQL runs it: in the data folder, %p relative to it
        return subprocess.run(["/bin/sh", "-c", f'{script} "pg_wal/{name}" "{name}"'], cwd=data.parent,
                              capture_output=True, text=True, check=False)
    return spool, archive


def test_the_archive_command_copies_once_and_never_overwrites_a_different_file(archiver):
    spool, archive = archiver
    name = seg(1, 0, 3)
    assert archive(name, b"segment three").returncode == 0
    assert (spool / name).read_bytes() == b"segment three"
    assert archive(name, b"segment three").returncode == 0  # a retry after a crash: identical, fine
    refused = archive(name, b"something else")
    assert refused.returncode != 0 and "differs" in refused.stderr
    assert (spool / name).read_bytes() == b"segment three"
    assert archive("00000002.history", b"1\t0/3000000\tno recovery target specified\n").returncode == 0
    assert spool_listing(spool) == ["00000002.history", name]
    assert sorted(p.name for p in spool.iterdir()) == sorted(["00000002.history", name])  # no temporary copy
