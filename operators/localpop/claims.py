"""What the local PoP agent reads out of the GitOps repository, as plain values: which files are a
PoP's ServiceClaims, what a ServiceClaim file asks for, and which commit (with which
``Operation-Id:``/``Correlation-Id:`` trailers, and the ``Trace-Id:`` the PoP continues the
operation's trace from) last touched or deleted each file.

Pure: parses text handed to it (file contents, ``git log`` output); no I/O, no clock.
May import: the standard library, PyYAML and ``gitops`` (layout, manifests) — nothing of the domain.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gitops.errors import GitOpsError
from gitops.manifests import parse_all

CLAIM_API_GROUP = "dbaas.io"
CLAIM_KIND = "ServiceClaim"
OPERATION_TRAILER = "Operation-Id"
CORRELATION_TRAILER = "Correlation-Id"
TRACE_TRAILER = "Trace-Id"  # a W3C traceparent: the span that made the commit
# In a commit of several operations (the saga commits a batch together): `<operation id> <path>`
# per file, after that operation's own Operation-Id/Correlation-Id/Trace-Id trailers.
FILE_TRAILER = "Operation-File"

# `git log` framing chosen by `history_args`: a record separator before each commit, a unit
# separator between the message and the `--name-status` lines.
COMMIT_START = "\x1e"
MESSAGE_END = "\x1f"
LOG_FORMAT = "--format=%x1e%H%n%B%x1f"

_PATH = re.compile(r"^tenants/(?P<tenant>[^/]+)/(?P<pop>[^/]+)/(?P<name>[^/]+)\.yaml$")
_BACKUP_PATH = re.compile(r"^tenants/(?P<tenant>[^/]+)/(?P<pop>[^/]+)/backups/(?P<name>[^/]+)\.yaml$")
_CDC_PATH = re.compile(r"^tenants/(?P<tenant>[^/]+)/(?P<pop>[^/]+)/cdc/(?P<name>[^/]+)\.yaml$")
BACKUP_KIND = "DatabaseBackup"


class InvalidClaim(ValueError):
    """A file in a PoP's folder that is not a readable ServiceClaim; the message says why."""


@dataclass(frozen=True)
class Restore:
    """A ServiceClaim's ``spec.restore``: load the new service from a backup (``backup_id``) or a
    point in time (``target_time``, RFC 3339) of the source service."""

    source_tenant: str
    source_service_id: str
    source_engine: str
    backup_id: str | None = None
    target_time: str | None = None


@dataclass(frozen=True)
class Claim:
    """The parts of a ServiceClaim the local PoP acts on (``spec`` of kind ServiceClaim)."""

    tenant: str
    service_id: str
    name: str
    engine: str
    pop: str
    restore: Restore | None = None
    storage_bytes: int | None = None  # ``spec.resources.storage``; None when absent or unreadable

    @property
    def key(self) -> str:
        return service_key(self.tenant, self.service_id)


# Kubernetes quantity suffixes of storage sizes.
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_UNITS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def storage_quantity(value: object) -> int | None:
    """Bytes of a Kubernetes storage quantity (``10Gi``, ``500Mi``, ``1T``, ``1073741824``); None
    when it is not one."""
    match = _QUANTITY.match(str(value).strip()) if value is not None else None
    if match is None:
        return None
    return int(float(match["number"]) * _UNITS[match["unit"]])


@dataclass(frozen=True)
class CommitRef:
    """A commit that touched a file: its sha, its trailers (None when absent) and what it did to
    the file (``A``dded, ``M``odified, ``D``eleted, …, from ``git log --name-status``)."""

    sha: str
    operation_id: str | None
    correlation_id: str | None
    status: str = "M"
    trace: str | None = None  # its Trace-Id trailer


@dataclass(frozen=True)
class History:
    """Per path: the newest commit that touched it and the newest commit that deleted it."""

    last: Mapping[str, CommitRef]
    deleted: Mapping[str, CommitRef]

    def then(self, newer: History) -> History:
        """This history followed by ``newer`` (commits after these): newer entries win."""
        return History({**self.last, **newer.last}, {**self.deleted, **newer.deleted})


def service_key(tenant: str, service_id: str) -> str:
    return f"{tenant}/{service_id}"


def pop_claim_path(path: str, pop: str) -> tuple[str, str] | None:
    """``(tenant, name)`` when ``path`` is ``tenants/{tenant}/{pop}/{name}.yaml``, else None."""
    match = _PATH.match(path)
    if match is None or match["pop"] != pop:
        return None
    return match["tenant"], match["name"]


def pop_pathspec(pop: str) -> str:
    """A git pathspec matching exactly the ServiceClaim files of ``pop``."""
    return f":(glob)tenants/*/{pop}/*.yaml"


def parse_claim(text: str, path: str = "manifest") -> Claim:
    """The ServiceClaim in a rendered service file (it also holds the engine's CR)."""
    try:
        docs = parse_all(text, source=path)
    except GitOpsError as exc:
        raise InvalidClaim(str(exc)) from None
    claims = [d for d in docs if d.get("kind") == CLAIM_KIND
              and str(d.get("apiVersion", "")).split("/", 1)[0] == CLAIM_API_GROUP]
    if len(claims) != 1:
        raise InvalidClaim(f"{path} holds {len(claims)} {CLAIM_KIND} objects of group {CLAIM_API_GROUP}; "
                           "expected exactly one")
    spec = claims[0].get("spec")
    if not isinstance(spec, dict):
        raise InvalidClaim(f"{path}: the {CLAIM_KIND} has no spec")
    values = {}
    for field in ("tenant", "serviceId", "name", "engine", "pop"):
        value = spec.get(field)
        values[field] = str(value).strip() if value is not None else ""
    missing = [f for f in ("tenant", "serviceId") if not values[f]]
    if missing:
        raise InvalidClaim(f"{path}: the {CLAIM_KIND} spec has no {', '.join(missing)}")
    restore = spec.get("restore")
    if restore is not None:
        if not isinstance(restore, dict) or not restore.get("sourceServiceId") or \
                (restore.get("backupId") is None) == (restore.get("targetTime") is None):
            raise InvalidClaim(f"{path}: spec.restore needs sourceServiceId and exactly one of backupId or "
                               "targetTime")
        restore = Restore(str(restore.get("sourceTenant") or values["tenant"]), str(restore["sourceServiceId"]),
                          str(restore.get("sourceEngine") or values["engine"]),
                          str(restore["backupId"]) if restore.get("backupId") else None,
                          str(restore["targetTime"]) if restore.get("targetTime") else None)
    resources = spec.get("resources")
    storage = storage_quantity(resources.get("storage")) if isinstance(resources, dict) else None
    return Claim(values["tenant"], values["serviceId"], values["name"], values["engine"], values["pop"], restore,
                 storage)


@dataclass(frozen=True)
class BackupClaim:
    """The parts of a DatabaseBackup the local PoP acts on."""

    tenant: str
    backup_id: str
    service_id: str
    engine: str
    pop: str
    pitr: bool

    @property
    def key(self) -> str:
        return f"{self.tenant}/backup/{self.backup_id}"


def pop_backup_path(path: str, pop: str) -> tuple[str, str] | None:
    """``(tenant, backup id)`` when ``path`` is ``tenants/{tenant}/{pop}/backups/{id}.yaml``, else None."""
    match = _BACKUP_PATH.match(path)
    if match is None or match["pop"] != pop:
        return None
    return match["tenant"], match["name"]


def pop_cdc_path(path: str, pop: str) -> tuple[str, str] | None:
    """``(tenant, service id)`` when ``path`` is ``tenants/{tenant}/{pop}/cdc/{id}.yaml``, else None."""
    match = _CDC_PATH.match(path)
    if match is None or match["pop"] != pop:
        return None
    return match["tenant"], match["name"]


def pop_cdc_pathspec(pop: str) -> str:
    return f":(glob)tenants/*/{pop}/cdc/*.yaml"


def pop_backup_pathspec(pop: str) -> str:
    return f":(glob)tenants/*/{pop}/backups/*.yaml"


def parse_backup_claim(text: str, path: str = "manifest") -> BackupClaim:
    """The DatabaseBackup in a rendered backup file (it may also hold the engine's own resources)."""
    try:
        docs = parse_all(text, source=path)
    except GitOpsError as exc:
        raise InvalidClaim(str(exc)) from None
    found = [d for d in docs if d.get("kind") == BACKUP_KIND
             and str(d.get("apiVersion", "")).split("/", 1)[0] == CLAIM_API_GROUP]
    if len(found) != 1:
        raise InvalidClaim(f"{path} holds {len(found)} {BACKUP_KIND} objects; expected exactly one")
    doc = found[0]
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    labels = (doc.get("metadata") or {}).get("labels") or {}
    values = {"tenant": spec.get("tenant"), "backupId": spec.get("backupId"),
              "serviceId": labels.get("dbaas.io/service-id"), "engine": spec.get("engine") or labels.get("dbaas.io/engine"),
              "pop": labels.get("dbaas.io/pop")}
    missing = [k for k, v in values.items() if not v]
    if missing:
        raise InvalidClaim(f"{path}: the {BACKUP_KIND} has no {', '.join(missing)}")
    return BackupClaim(str(values["tenant"]), str(values["backupId"]), str(values["serviceId"]),
                       str(values["engine"]), str(values["pop"]), bool(spec.get("pitr", False)))


def _trailers(message: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in message.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in (OPERATION_TRAILER, CORRELATION_TRAILER, TRACE_TRAILER) and value.strip():
            found[name.strip()] = value.strip()
    return found


def parse_trailers(message: str) -> tuple[str | None, str | None]:
    """``(operation_id, correlation_id)`` from a commit message; the last occurrence wins."""
    found = _trailers(message)
    return found.get(OPERATION_TRAILER), found.get(CORRELATION_TRAILER)


def parse_trace(message: str) -> str | None:
    """The ``Trace-Id`` trailer of a commit message (the last one), or None."""
    return _trailers(message).get(TRACE_TRAILER)


def operations_by_file(message: str) -> dict[str, dict[str, str]]:
    """For a commit of several operations: each file's own trailers (its ``Operation-File``
    trailer names the operation; that operation's ``Correlation-Id``/``Trace-Id`` follow its
    ``Operation-Id``). Empty for a commit of one operation."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    files: dict[str, dict[str, str]] = {}
    for line in message.splitlines():
        name, sep, value = (part.strip() for part in line.partition(":"))
        if not sep or not value:
            continue
        if name == OPERATION_TRAILER:
            current = blocks.setdefault(value, {OPERATION_TRAILER: value})
        elif name in (CORRELATION_TRAILER, TRACE_TRAILER) and current is not None:
            current[name] = value
        elif name == FILE_TRAILER:
            operation_id, _, path = value.partition(" ")
            if path.strip():
                files[path.strip()] = blocks.setdefault(operation_id, {OPERATION_TRAILER: operation_id})
    return files


def parse_history(output: str) -> History:
    """Read ``git log --no-renames --name-status`` + :data:`LOG_FORMAT` output (newest commit
    first) into the newest touching and the newest deleting commit of every path; in a commit of
    several operations, each path with its own operation's trailers."""
    last: dict[str, CommitRef] = {}
    deleted: dict[str, CommitRef] = {}
    for chunk in output.split(COMMIT_START)[1:]:
        head, _, files = chunk.partition(MESSAGE_END)
        sha, _, message = head.partition("\n")
        found = _trailers(message)
        owners = operations_by_file(message)
        for line in files.splitlines():
            status, sep, path = line.partition("\t")
            if not sep or not status:
                continue
            mine = owners.get(path, found)
            ref = CommitRef(sha.strip(), mine.get(OPERATION_TRAILER), mine.get(CORRELATION_TRAILER), status[0],
                            mine.get(TRACE_TRAILER))
            last.setdefault(path, ref)
            if ref.status == "D":
                deleted.setdefault(path, ref)
    return History(last, deleted)
