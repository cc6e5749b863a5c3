"""MariaDB's binary logs as files: their names and order, and the events in one file, read
directly from the binlog format (v4) — what point-in-time replay needs to decide before it hands
the files to ``mariadb-binlog``.

A binlog file is ``<basename>.<6+ digits>``; files are numbered without gaps, so a replay from
``binlog.000007`` needs ``binlog.000007``, ``binlog.000008``, … up to the newest shipped.

A file starts with the magic ``\\xfebin``; each event has a 19-byte header (timestamp in whole
seconds since the epoch, type, server id, length, next position, flags), then its body, then a
CRC32 when the format description event says so. ``events`` yields, per event, its position,
timestamp and type, and for Query events (DDL, and statements of non-transactional engines) the
default database and the statement. Times are UTC.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, event length, next position, flags
QUERY_EVENT = 2
ROTATE_EVENT = 4
FORMAT_DESCRIPTION_EVENT = 15
_NAME = re.compile(r"^(?P<base>.+)\.(?P<index>\d{6,})$")
# Statements that only delimit a transaction: harmless whatever their default database.
TRANSACTION_KEYWORDS = (b"BEGIN", b"COMMIT", b"ROLLBACK", b"XA ", b"SAVEPOINT", b"RELEASE SAVEPOINT")


class BinlogError(ValueError):
    """Not a binlog, or a truncated one."""


def index_of(name: str) -> int:
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"not a binlog file name: {name!r}")
    return int(match.group("index"))


def is_binlog_name(name: str) -> bool:
    return bool(_NAME.match(name)) and not name.endswith(".index")


def binlog_order(names: Iterable[str]) -> list[str]:
    """Binlog file names by number (other names left out)."""
    return sorted((n for n in names if is_binlog_name(n)), key=index_of)


def files_from(first: str, available: Iterable[str]) -> list[str]:
    """``first`` and every later file of the same series, in order; ``ValueError`` when
    ``first`` is missing or the numbers have a gap (a replay must not skip a file)."""
    base = _NAME.match(first)
    if not base:
        raise ValueError(f"not a binlog file name: {first!r}")
    series = [n for n in binlog_order(available)
              if _NAME.match(n).group("base") == base.group("base") and index_of(n) >= index_of(first)]
    if not series or series[0] != first:
        raise ValueError(f"{first} is not among the binlog files")
    for before, after in pairwise(series):
        if index_of(after) != index_of(before) + 1:
            raise ValueError(f"binlog files missing between {before} and {after}")
    return series


@dataclass(frozen=True)
class Event:
    position: int
    next_position: int
    timestamp: int  # seconds since the epoch
    type: int
    server_id: int
    database: str | None = None  # Query events: the statement's default database ("" for none)
    query: bytes | None = None  # Query events: the statement

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, timezone.utc)

    @property
    def delimits_transaction(self) -> bool:
        return self.query is not None and self.query.lstrip().upper().startswith(TRANSACTION_KEYWORDS)


def events(path: Path) -> Iterator[Event]:
    """The events of one binlog file, in order."""
    with open(path, "rb") as fh:
        if fh.read(4) != MAGIC:
            raise BinlogError(f"{path} is not a binlog file")
        position, checksum, query_header = 4, 0, 13
        while True:
            header = fh.read(HEADER.size)
            if not header:
                return
            if len(header) < HEADER.size:
                raise BinlogError(f"{path}: truncated event header at {position}")
            timestamp, kind, server_id, length, _next, _flags = HEADER.unpack(header)
            body = fh.read(length - HEADER.size)
            if length < HEADER.size or len(body) != length - HEADER.size:
                raise BinlogError(f"{path}: truncated event at {position}")
            database = query = None
            if kind == FORMAT_DESCRIPTION_EVENT:
                # binlog version (2), server version (50), created (4), header length (1), one
                # post-header length per event type, then the checksum algorithm (1) and a CRC32.
                lengths = body[57:-5]
                checksum = 4 if body[-5] == 1 else 0
                if len(lengths) >= QUERY_EVENT:
                    query_header = lengths[QUERY_EVENT - 1]
            elif kind == QUERY_EVENT:
                payload = body[:len(body) - checksum]
                db_len = payload[8]
                status_len = struct.unpack_from("<H", payload, 11)[0]
                start = query_header + status_len
                database = payload[start:start + db_len].decode(errors="replace")
                query = payload[start + db_len + 1:]
            yield Event(position, position + length, timestamp, kind, server_id, database, query)
            position += length


def last_event_time(path: Path) -> datetime | None:
    """When the file's last event was written (a closed file's last event is its rotation)."""
    last = None
    for event in events(path):
        last = event
    return last.time if last else None


def stop_second(target: datetime) -> datetime:
    """``--stop-datetime`` for "the data as of ``target``": binlog times are whole seconds, so
    the replay takes every event of ``target``'s second and stops at the next one."""
    if target.tzinfo is None:
        raise ValueError("times must carry their time zone (UTC)")
    second = target.astimezone(timezone.utc).replace(microsecond=0)
    return second + timedelta(seconds=1)
