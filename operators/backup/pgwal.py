"""PostgreSQL's WAL archive as file names: which archived files a base backup needs, which ones
are older than every retained base backup, and what a base backup says about itself.

Archive file names (as ``archive_command`` receives them in ``%f``):

- segments: 24 hex digits, ``TTTTTTTTLLLLLLLLSSSSSSSS`` = timeline, then the 64-bit WAL position
  of the segment's start divided by the segment size (16 MiB), as high and low words;
- ``TTTTTTTT.history``: a timeline's history, tiny, always kept;
- ``<segment>.<offset>.backup``: a base backup's start/stop record; ``<segment>.partial``: the
  last, incomplete segment of a timeline that ended.

Anything else in a spool (``*.tmp`` copies in progress) is not part of the archive.
Segments compare by position first and timeline second, as ``pg_archivecleanup`` does.

A base backup (``pg_basebackup -Ft -X none``) is described by ``BaseInfo``: where its WAL starts
and ends (LSNs and segment names, from the tar's ``backup_label`` and the ``backup_manifest``), the
wall-clock times around it (UTC), and its files. Restoring to a time T needs a base backup whose
``end_time`` is at most T and every segment from its ``start_segment`` on.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

SEGMENT_BYTES = 16 * 1024**2  # initdb's default; what the launcher's clusters use
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
_BACKUP = re.compile(r"^([0-9A-F]{24})\.[0-9A-F]{8}\.backup$")
_PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class Segment(NamedTuple):
    timeline: int
    log: int  # high 32 bits of the position
    seg: int  # segment number within the 4 GiB "log"

    @property
    def name(self) -> str:
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    def position(self, segment_bytes: int = SEGMENT_BYTES) -> int:
        """Ordinal of the segment in the WAL, ignoring the timeline."""
        return self.log * (0x100000000 // segment_bytes) + self.seg


def parse_segment(name: str) -> Segment:
    match = _SEGMENT.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name!r}")
    return Segment(*(int(part, 16) for part in match.groups()))


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def is_archive_file(name: str) -> bool:
    """A name ``archive_command`` may have archived (not a copy in progress)."""
    return bool(_SEGMENT.match(name) or _HISTORY.match(name) or _BACKUP.match(name) or _PARTIAL.match(name))


def parse_lsn(lsn: str) -> int:
    match = _LSN.match(lsn.strip())
    if not match:
        raise ValueError(f"not an LSN: {lsn!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_of(lsn: str | int, timeline: int, segment_bytes: int = SEGMENT_BYTES) -> str:
    """The segment holding WAL position ``lsn`` (``pg_walfile_name``, except at a boundary: this
    gives the segment starting there)."""
    value = parse_lsn(lsn) if isinstance(lsn, str) else lsn
    per_log = 0x100000000 // segment_bytes
    number = value // segment_bytes
    return Segment(timeline, number // per_log, number % per_log).name


def _segment_key(name: str) -> tuple[int, int]:
    segment = parse_segment(name)
    return segment.position(), segment.timeline


def archive_order(names: Iterable[str]) -> list[str]:
    """Archive files in WAL order: by position, then timeline; history files first; names that
    are not archive files are left out."""
    def key(name: str) -> tuple:
        if _HISTORY.match(name):
            return (0, int(name[:8], 16), 0, name)
        base = (_BACKUP.match(name) or _PARTIAL.match(name))
        position, timeline = _segment_key(base.group(1) if base else name)
        return (1, position, timeline, name)
    return sorted((n for n in names if is_archive_file(n)), key=key)


def wal_needed(start_segment: str, archived: Iterable[str], *, timeline: int | None = None) -> list[str]:
    """What recovery from a base backup starting in ``start_segment`` may read from the archive:
    every segment at or after it (on its timeline or a later one), the ``.partial`` ones among
    them, and every timeline history file; in WAL order."""
    start = parse_segment(start_segment)
    timeline = start.timeline if timeline is None else timeline
    keep = []
    for name in archived:
        if _HISTORY.match(name):
            keep.append(name)
            continue
        match = _SEGMENT.match(name) or _PARTIAL.match(name)
        if not match:
            continue
        segment = parse_segment(name[:24])
        if segment.timeline >= timeline and segment.position() >= start.position():
            keep.append(name)
    return archive_order(keep)


def prunable(oldest_start_segment: str, archived: Iterable[str]) -> list[str]:
    """Archive files no retained base backup needs, given the start segment of the oldest one
    kept: segments (and ``.backup``/``.partial`` files) wholly before it, on any timeline, as
    ``pg_archivecleanup`` decides. History files are never pruned."""
    start = parse_segment(oldest_start_segment).position()
    old = []
    for name in archived:
        match = _SEGMENT.match(name) or _BACKUP.match(name) or _PARTIAL.match(name)
        if match and parse_segment(name[:24]).position() < start:
            old.append(name)
    return archive_order(old)


# -- base backups --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseInfo:
    """A cluster base backup: WAL range, times (UTC) and files (logical name -> file name)."""

    start_lsn: str
    end_lsn: str
    timeline: int
    start_time: datetime  # just before pg_basebackup started
    end_time: datetime  # once it had finished: the earliest time it can recover to
    files: Mapping[str, str] = field(default_factory=dict)

    @property
    def start_segment(self) -> str:
        return segment_of(self.start_lsn, self.timeline)

    @property
    def end_segment(self) -> str:
        return segment_of(self.end_lsn, self.timeline)

    def to_dict(self) -> dict[str, Any]:
        return {"start_lsn": self.start_lsn, "end_lsn": self.end_lsn, "timeline": self.timeline,
                "start_time": self.start_time.astimezone(timezone.utc).isoformat(),
                "end_time": self.end_time.astimezone(timezone.utc).isoformat(), "files": dict(sorted(self.files.items()))}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaseInfo:
        try:
            info = cls(str(data["start_lsn"]), str(data["end_lsn"]), int(data["timeline"]),
                       datetime.fromisoformat(data["start_time"]), datetime.fromisoformat(data["end_time"]),
                       dict(data.get("files", {})))
            parse_lsn(info.start_lsn), parse_lsn(info.end_lsn)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a base backup description: {exc}") from None
        return info

    @classmethod
    def from_json(cls, text: str | bytes) -> BaseInfo:
        return cls.from_dict(json.loads(text))


def parse_backup_label(text: str) -> tuple[str, int]:
    """(start LSN, timeline) from a base backup's ``backup_label``."""
    lsn = re.search(r"^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)", text, re.MULTILINE)
    timeline = re.search(r"^START TIMELINE: (\d+)", text, re.MULTILINE)
    if not lsn:
        raise ValueError("backup_label has no START WAL LOCATION")
    return lsn.group(1), int(timeline.group(1)) if timeline else parse_segment(lsn.group(2)).timeline


def parse_wal_ranges(backup_manifest: str) -> tuple[int, str, str]:
    """(timeline, start LSN, end LSN) of the WAL a base backup needs, from its ``backup_manifest``."""
    ranges = json.loads(backup_manifest).get("WAL-Ranges") or []
    if not ranges:
        raise ValueError("backup_manifest has no WAL-Ranges")
    first, last = ranges[0], ranges[-1]
    return int(last["Timeline"]), first["Start-LSN"], last["End-LSN"]
