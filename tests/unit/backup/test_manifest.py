"""The backup manifest: a stable JSON form that round-trips, refuses what is malformed, and a
comparison of table stats that names every difference."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from operators.backup.manifest import Manifest, ManifestError, TableStat, diff_tables


def _manifest(**changes) -> Manifest:
    fields = {"engine": "postgres", "tenant": "acme", "service_id": "svc-1", "backup_id": "b-1",
              "taken_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
              "consistency": {"snapshot_time": "2026-01-02T03:04:05.678901+00:00", "lsn": "0/3000028"},
              "tables": {"public.z": TableStat(3, "99"), "public.a": TableStat(0, "0")},
              "files": {"data": "data.dump"}, "pitr_base": None}
    return Manifest(**(fields | changes))


def test_json_round_trip_is_exact_and_stable():
    manifest = _manifest(pitr_base="base-7")
    text = manifest.to_json()
    assert Manifest.from_json(text) == manifest
    assert Manifest.from_json(text).to_json() == text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert list(json.loads(text)["tables"]) == ["public.a", "public.z"]
    # the same manifest built in another order serialises to the same bytes
    again = _manifest(pitr_base="base-7", tables={"public.a": TableStat(0, "0"), "public.z": TableStat(3, "99")},
                      consistency={"lsn": "0/3000028", "snapshot_time": "2026-01-02T03:04:05.678901+00:00"})
    assert again.to_json() == text


def test_times_are_kept_in_utc():
    other_zone = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    manifest = _manifest(taken_at=other_zone)
    assert manifest.taken_at.tzinfo == timezone.utc and manifest.taken_at.hour == 3
    assert json.loads(manifest.to_json())["taken_at"] == "2026-01-02T03:04:05+00:00"
    with pytest.raises(ManifestError, match="time zone"):
        _manifest(taken_at=datetime(2026, 1, 2))


@pytest.mark.parametrize("change, message", [
    ({"engine": "oracle"}, "engine must be one of"),
    ({"tenant": ""}, "tenant must be a non-empty string"),
    ({"taken_at": "yesterday"}, "taken_at is not an ISO 8601 time"),
    ({"tables": {"t": {"rows": "3", "checksum": "x"}}}, r"tables.t must be"),
    ({"tables": {"t": {"rows": True, "checksum": "x"}}}, r"tables.t must be"),
    ({"files": {"data": "../../etc/passwd"}}, "plain file names"),
    ({"pitr_base": 7}, "pitr_base"),
    ({"format": 2}, "format 2 is not known"),
    ({"consistency": []}, "consistency must be an object"),
])
def test_malformed_manifests_are_refused_with_the_field_named(change, message):
    data = json.loads(_manifest().to_json()) | change
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data)


def test_not_json_is_refused():
    with pytest.raises(ManifestError, match="JSON"):
        Manifest.from_json("{not json")
    with pytest.raises(ManifestError, match="object"):
        Manifest.from_json("[1, 2]")


def test_diff_tables_names_each_difference():
    backed_up = {"a": TableStat(2, "x"), "b": TableStat(5, "y"), "c": TableStat(1, "z")}
    assert diff_tables(backed_up, dict(backed_up)) == []
    copy = {"a": TableStat(2, "other"), "b": TableStat(4, "y"), "d": TableStat(0, "0")}
    assert diff_tables(backed_up, copy) == [
        "a: same row count (2) but different content (checksum other, x backed up)",
        "b: 4 rows, 5 backed up",
        "c: missing from the copy (1 rows backed up)",
        "d: in the copy (0 rows) but not in the backup",
    ]
