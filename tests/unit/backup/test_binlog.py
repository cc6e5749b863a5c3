"""MariaDB's binlogs read directly (names, order, events of a file built here byte by byte) and
the pure parts of the replay: which statements it leaves out, how it filters mariadb-binlog's
output, the command it runs, and the coordinates it reads from a dump."""
from __future__ import annotations

import struct
import zlib
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pytest

from operators.backup import binlog
from operators.backup.mariadb import MariaDBBackups, _dump_coordinates, filter_binlog_sql, not_replayed
from operators.backup.tools import EngineError
from operators.localpop.provisioners import AdminEndpoint


def test_file_names_order_by_number_and_a_replay_needs_every_file_from_the_first():
    names = ["binlog.000010", "binlog.index", "binlog.000009", "binlog.000011", "other.000001", "notes.txt"]
    assert binlog.binlog_order(names) == ["other.000001", "binlog.000009", "binlog.000010", "binlog.000011"]
    assert binlog.files_from("binlog.000010", names) == ["binlog.000010", "binlog.000011"]
    with pytest.raises(ValueError, match="missing between binlog.000009 and binlog.000011"):
        binlog.files_from("binlog.000009", ["binlog.000009", "binlog.000011"])
    with pytest.raises(ValueError, match="is not among"):
        binlog.files_from("binlog.000008", names)


def test_stop_second_takes_the_whole_second_of_the_target():
    at = datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=timezone.utc)
    assert binlog.stop_second(at) == datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc)
    assert binlog.stop_second(at.replace(microsecond=0)) == datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc)
    elsewhere = at.astimezone(timezone(timedelta(hours=-5)))
    assert binlog.stop_second(elsewhere) == binlog.stop_second(at)
    with pytest.raises(ValueError):
        binlog.stop_second(datetime(2026, 1, 2))


# -- a binlog file, built as MariaDB writes one (v4, CRC32 checksums) ----------------------------
def _event(kind: int, timestamp: int, position: int, body: bytes) -> bytes:
    length = 19 + len(body) + 4
    header = struct.pack("<IBIIIH", timestamp, kind, 1, length, position + length, 0)
    return header + body + struct.pack("<I", zlib.crc32(header + body))


def _query(db: str, query: str) -> bytes:
    status = b"\x00\x00\x00\x00\x00"  # some status variables (flags2)
    post = struct.pack("<IIBHH", 7, 0, len(db), 0, len(status))
    return post + status + db.encode() + b"\x00" + query.encode()


def _binlog(tmp_path: Path, events: list[tuple[int, int, bytes]]) -> Path:
    post_header_lengths = bytes([56, 13, 0, 8, 0, 18, 0, 4, 4, 4, 4, 18, 0, 0, 95, 0, 8, 0, 8, 8, 8, 10])
    fde = (struct.pack("<H", 4) + b"10.11.19-MariaDB".ljust(50, b"\x00") + struct.pack("<I", 0) + bytes([19])
           + post_header_lengths + bytes([1]))
    out, position = bytearray(binlog.MAGIC), 4
    for kind, timestamp, body in [(binlog.FORMAT_DESCRIPTION_EVENT, 1000, fde), *events]:
        event = _event(kind, timestamp, position, body)
        out += event
        position += len(event)
    path = tmp_path / "binlog.000001"
    path.write_bytes(bytes(out))
    return path


def test_events_of_a_file_with_their_times_databases_and_statements(tmp_path):
    path = _binlog(tmp_path, [
        (binlog.QUERY_EVENT, 1700000000, _query("s_abc", "CREATE TABLE t (x int)")),
        (binlog.QUERY_EVENT, 1700000001, _query("", "CREATE USER 's_new'@'localhost'")),
        (binlog.QUERY_EVENT, 1700000001, _query("", "BEGIN")),
        (binlog.ROTATE_EVENT, 1700000002, struct.pack("<Q", 4) + b"binlog.000002"),
    ])
    events = list(binlog.events(path))
    assert [e.type for e in events] == [15, 2, 2, 2, 4]
    assert events[0].position == 4 and all(a.next_position == b.position for a, b in pairwise(events))
    assert (events[1].database, events[1].query) == ("s_abc", b"CREATE TABLE t (x int)")
    assert (events[2].database, events[2].query) == ("", b"CREATE USER 's_new'@'localhost'")
    assert events[3].delimits_transaction and not events[1].delimits_transaction
    assert binlog.last_event_time(path) == datetime.fromtimestamp(1700000002, timezone.utc)
    assert not_replayed(events) == {events[2].position}


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    path = _binlog(tmp_path, [(binlog.QUERY_EVENT, 1700000000, _query("s_abc", "CREATE TABLE t (x int)"))])
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(binlog.BinlogError, match="truncated"):
        list(binlog.events(path))
    path.write_bytes(b"-- not a binlog")
    with pytest.raises(binlog.BinlogError, match="not a binlog"):
        list(binlog.events(path))


@pytest.mark.parametrize("database, query, dropped", [
    ("s_abc", "INSERT INTO t VALUES (1)", False),
    ("s_abc", "CREATE TABLE t2 (x int)", False),
    ("", "CREATE TABLE s_abc.t2 (x int)", True),  # no default database: the filter would pass it
    ("s_abc", "DROP DATABASE IF EXISTS `s_abc`", True),
    ("s_other", "CREATE DATABASE IF NOT EXISTS `s_other`", True),
    ("s_abc", "/* c */ GRANT ALL PRIVILEGES ON `s_abc`.* TO 'x'@'%'", True),
    ("s_abc", "alter user 's_abc'@'localhost' IDENTIFIED BY PASSWORD '*00'", True),
    ("", "COMMIT", False),
    ("", "XA END 'x'", False),
])
def test_which_statements_a_replay_leaves_out(database, query, dropped):
    event = binlog.Event(120, 200, 1700000000, binlog.QUERY_EVENT, 1, database, query.encode())
    assert (not_replayed([event]) == {120}) is dropped


def test_the_replay_filter_drops_whole_events_and_gtid_sequence_numbers():
    output = [b"/*!50530 SET @@SESSION.PSEUDO_SLAVE_MODE=1*/;\n", b"# at 4\n", b"#260101 start\n",
              b"# at 367\n", b"#260101 GTID 0-1-2 ddl\n", b"/*M!100001 SET @@session.gtid_seq_no=2*//*!*/;\n",
              b"# at 409\n", b"#260101 Query\n", b"CREATE USER 'x'@'localhost'\n", b"/*!*/;\n",
              b"# at 500\n", b"#260101 Query\n", b"use `s_new`/*!*/;\n", b"CREATE TABLE t (x int)\n", b"/*!*/;\n"]
    kept = list(filter_binlog_sql(output, {409}))
    assert b"CREATE USER 'x'@'localhost'\n" not in kept and b"CREATE TABLE t (x int)\n" in kept
    assert not any(b"gtid_seq_no" in line for line in kept)
    assert kept[:3] == output[:3] and kept[-3:] == output[-3:]


def test_the_binlog_tool_is_called_with_the_backup_position_the_stop_second_and_the_rewrite():
    backups = MariaDBBackups(AdminEndpoint("127.0.0.1", 3306, "root", "secret"))
    stop = datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc)
    argv = backups.binlog_argv(Path("/b/binlog.000007"), 1234, stop, "s_old", "s_new")
    assert argv == ["/usr/bin/mariadb-binlog", "--no-defaults", "--start-position=1234",
                    "--stop-datetime=2026-01-02 03:04:06", "--database=s_old", "--rewrite-db=s_old->s_new",
                    "/b/binlog.000007"]
    assert "--start-position=4" not in backups.binlog_argv(Path("/b/binlog.000008"), 4, stop, "s_old", "s_new")
    assert "secret" not in " ".join(argv)


def test_the_dump_coordinates_are_read_from_its_header(tmp_path):
    dump = tmp_path / "data.sql"
    dump.write_text("-- MariaDB dump 10.19\n--\n-- Position to start replication or point-in-time recovery from\n"
                    "--\n\n-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=5779;\n\n"
                    "CREATE TABLE `t` (x int);\n")
    assert _dump_coordinates(dump) == ("binlog.000003", 5779)
    dump.write_text("CREATE TABLE `t` (x int);\n")
    with pytest.raises(EngineError, match="no binlog coordinates"):
        _dump_coordinates(dump)
