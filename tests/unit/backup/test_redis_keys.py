"""Redis key backups without a server: the canonical form of values (independent of order and
encoding), the per-database tally, and the backup file's framing (a cut file is refused)."""
from __future__ import annotations

import pytest

from operators.backup.redis import _END, _RECORD, MAGIC, _Tally, canonical_value, key_digest, read_dump
from operators.backup.tools import EngineError


def test_values_digest_the_same_whatever_the_order_of_fields_and_members():
    assert key_digest(b"h", "hash", {b"a": b"1", b"b": b"2"}) == key_digest(b"h", "hash", {b"b": b"2", b"a": b"1"})
    assert key_digest(b"s", "set", {b"x", b"y"}) == key_digest(b"s", "set", {b"y", b"x"})
    assert key_digest(b"l", "list", [b"x", b"y"]) != key_digest(b"l", "list", [b"y", b"x"])  # lists keep order
    assert key_digest(b"k", "string", b"v") != key_digest(b"k2", "string", b"v")  # the name counts
    assert key_digest(b"k", "string", b"v") != key_digest(b"k", "list", [b"v"])  # and the type
    # length-prefixed: moving a boundary between parts changes the form
    assert canonical_value("list", [b"ab", b"c"]) != canonical_value("list", [b"a", b"bc"])
    assert canonical_value("zset", [(b"a", 1.5)]) != canonical_value("zset", [(b"a", 1.25)])


def test_the_tally_is_per_logical_database_and_independent_of_order():
    first, second = _Tally(), _Tally()
    for db, digest in [(0, 5), (3, 7), (0, 2**255), (0, 2**255)]:
        first.add(db, digest)
    for db, digest in [(0, 2**255), (3, 7), (0, 2**255), (0, 5)]:
        second.add(db, digest)
    assert first.tables() == second.tables()
    assert {name: stat.rows for name, stat in first.tables().items()} == {"db0": 3, "db3": 1}
    assert first.tables()["db0"].checksum == f"{5:064x}"  # sums modulo 2^256


def _file(tmp_path, records, trailer_count=None):
    path = tmp_path / "data.rdbdump"
    body = bytearray(MAGIC)
    for db, name, pttl, payload in records:
        body += _RECORD.pack(db, len(name), pttl, len(payload)) + name + payload
    body += _RECORD.pack(_END, 0, len(records) if trailer_count is None else trailer_count, 0)
    path.write_bytes(bytes(body))
    return path


def test_the_backup_file_reads_back_and_a_cut_one_is_refused(tmp_path):
    records = [(0, b"k1", -1, b"\x00payload"), (3, b"k2", 5000, b"p2")]
    path = _file(tmp_path, records)
    assert list(read_dump(path)) == records
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(EngineError, match="truncated"):
        list(read_dump(path))
    with pytest.raises(EngineError, match="trailer says 3"):
        list(read_dump(_file(tmp_path, records, trailer_count=3)))
    path.write_bytes(b"REDIS0011")
    with pytest.raises(EngineError, match="not a Redis key backup"):
        list(read_dump(path))
