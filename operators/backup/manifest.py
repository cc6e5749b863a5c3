"""What a backup holds and how its data is checked: the ``Manifest`` of one service's backup.

A manifest names the engine, the service (tenant and service id) and the backup, the instant the
data was taken at (``taken_at``, UTC) with the engine's own consistency point, the files written
(logical name → file name in the backup's folder) and, per table (PostgreSQL: ``schema.table``,
MariaDB: ``table``, Redis: ``db<N>``, the keys of logical database N), its row count and a
checksum. The same engine code computes the stats at backup time, inside the dump's snapshot, and
on a restored copy, so ``diff_tables`` tells whether the copy holds exactly the backed-up data.

JSON form: UTF-8, keys sorted, no insignificant whitespace, times as ISO 8601 with ``+00:00``,
so the same manifest always serialises to the same bytes (``Manifest.from_json(m.to_json()) ==
m``). ``ManifestError`` (a ``ValueError``) says what is missing or malformed.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

FORMAT = 1
ENGINES = ("postgres", "mariadb", "redis")


class ManifestError(ValueError):
    """A manifest that cannot be read: the message names the field."""


@dataclass(frozen=True)
class TableStat:
    """A table's row count (Redis: key count) and a checksum over its rows, independent of their
    order."""

    rows: int
    checksum: str


@dataclass(frozen=True)
class Manifest:
    engine: str  # postgres | mariadb | redis (the local server that held the data)
    tenant: str
    service_id: str
    backup_id: str
    taken_at: datetime  # UTC: the instant the data is from
    consistency: Mapping[str, Any]  # the engine's own point, e.g. {"lsn": ...} or {"binlog_file": ...}
    tables: Mapping[str, TableStat]
    files: Mapping[str, str]  # logical name ("data") -> file name in the backup's folder
    pitr_base: str | None = None  # the cluster base backup taken with it, when PITR is on
    format: int = FORMAT

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ManifestError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.taken_at.tzinfo is None:
            raise ManifestError("taken_at must carry its time zone (UTC)")
        object.__setattr__(self, "taken_at", self.taken_at.astimezone(timezone.utc))
        # Frozen all the way down: plain dicts sorted by name (equality ignores order anyway).
        object.__setattr__(self, "consistency", dict(sorted(self.consistency.items())))
        object.__setattr__(self, "tables", dict(sorted(self.tables.items())))
        object.__setattr__(self, "files", dict(sorted(self.files.items())))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "engine": self.engine, "tenant": self.tenant, "service_id": self.service_id,
            "backup_id": self.backup_id, "taken_at": self.taken_at.isoformat(),
            "consistency": dict(self.consistency),
            "tables": {name: {"rows": s.rows, "checksum": s.checksum} for name, s in self.tables.items()},
            "files": dict(self.files), "pitr_base": self.pitr_base,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        if not isinstance(data, Mapping):
            raise ManifestError("a manifest is a JSON object")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise ManifestError(f"manifest format {fmt!r} is not known here (this code reads {FORMAT})")
        text = {name: _text(data, name) for name in ("engine", "tenant", "service_id", "backup_id")}
        try:
            taken_at = datetime.fromisoformat(_text(data, "taken_at"))
        except ValueError:
            raise ManifestError(f"taken_at is not an ISO 8601 time: {data.get('taken_at')!r}") from None
        consistency = data.get("consistency", {})
        if not isinstance(consistency, Mapping):
            raise ManifestError("consistency must be an object")
        tables = {}
        for name, stat in _mapping(data, "tables").items():
            if (not isinstance(stat, Mapping) or not isinstance(stat.get("rows"), int)
                    or isinstance(stat.get("rows"), bool) or not isinstance(stat.get("checksum"), str)):
                raise ManifestError(f"tables.{name} must be {{rows: integer, checksum: string}}")
            tables[name] = TableStat(stat["rows"], stat["checksum"])
        files = _mapping(data, "files")
        if not all(isinstance(v, str) and v and "/" not in v and v not in (".", "..") for v in files.values()):
            raise ManifestError("files must map names to plain file names")
        pitr_base = data.get("pitr_base")
        if pitr_base is not None and not isinstance(pitr_base, str):
            raise ManifestError("pitr_base must be a string or null")
        return cls(taken_at=taken_at, consistency=dict(consistency), tables=tables, files=dict(files),
                   pitr_base=pitr_base, **text)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"a manifest is JSON: {exc}") from None
        return cls.from_dict(data)


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{name} must be a non-empty string")
    return value


def _mapping(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ManifestError(f"{name} must be an object")
    return value


def diff_tables(expected: Mapping[str, TableStat], actual: Mapping[str, TableStat]) -> list[str]:
    """What differs between the backed-up tables and a copy's, one line each; empty: identical."""
    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(name), actual.get(name)
        if got is None:
            problems.append(f"{name}: missing from the copy ({want.rows} rows backed up)")
        elif want is None:
            problems.append(f"{name}: in the copy ({got.rows} rows) but not in the backup")
        elif want.rows != got.rows:
            problems.append(f"{name}: {got.rows} rows, {want.rows} backed up")
        elif want.checksum != got.checksum:
            problems.append(f"{name}: same row count ({got.rows}) but different content (checksum "
                            f"{got.checksum}, {want.checksum} backed up)")
    return problems
