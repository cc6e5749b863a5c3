"""The local PoP agent's state file: per service, the operation it handled, the outcome, and
whether Kafka acknowledged the report. A restarted agent reads it to neither provision nor report
an acknowledged operation again.

Small JSON, replaced atomically (write, fsync, rename), readable by its owner only. It never holds
a password: credentials travel once, encrypted, in a report, and are re-derived when needed.
May import: the standard library and ``operators.localpop.plan``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from operators.localpop.backupplan import BackupRecord
from operators.localpop.plan import Record

VERSION = 1


class StateError(Exception):
    """The state file cannot be read: permanent until a person repairs or removes it."""


def load(path: Path) -> dict[str, Record]:
    """The records in ``path`` by service key (none when the file does not exist)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"the state file {path} cannot be read ({exc}); move it away to start afresh "
                         "(the agent then provisions every service again, idempotently, and re-reports)"
                         ) from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise StateError(f"the state file {path} is not version {VERSION} of the local PoP agent's state")
    try:
        return {key: Record.from_json(value) for key, value in data.get("services", {}).items()}
    except TypeError as exc:
        raise StateError(f"the state file {path} has a malformed service entry: {exc}") from None


def load_backups(path: Path) -> dict[str, BackupRecord]:
    """The backup records in ``path`` by backup key (none when the file does not exist)."""
    return _load_section(path, "backups", BackupRecord.from_json, "backup",
                         "backups in GitOps are then taken again and re-reported")


def load_connectors(path: Path) -> dict:
    """The CDC connector records in ``path`` by service key (none when the file does not exist)."""
    from operators.localpop.cdc import ConnectorRecord

    return _load_section(path, "connectors", ConnectorRecord.from_json, "CDC",
                         "connectors in GitOps are then registered again and re-reported")


def _load_section(path: Path, section: str, from_json, what: str, afresh: str) -> dict:
    """The records of one of the agent's state files: ``from_json`` of each entry of ``section``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"the {what} state file {path} cannot be read ({exc}); move it away to start afresh "
                         f"({afresh})") from None
    try:
        return {key: from_json(value) for key, value in data.get(section, {}).items()}
    except (TypeError, AttributeError) as exc:
        raise StateError(f"the {what} state file {path} has a malformed entry: {exc}") from None


def save_connectors(path: Path, records: Mapping, **meta: str) -> None:
    _save_section(path, "connectors", records, meta)


def save_backups(path: Path, records: Mapping[str, BackupRecord], **meta: str) -> None:
    _save_section(path, "backups", records, meta)


def save(path: Path, records: Mapping[str, Record], **meta: str) -> None:
    """Replace ``path`` with ``records`` atomically."""
    _save_section(path, "services", records, meta)


def _save_section(path: Path, section: str, records: Mapping, meta: Mapping[str, str]) -> None:
    _write(path, {"version": VERSION, **meta, section: {key: records[key].to_json() for key in sorted(records)}})


def _write(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
