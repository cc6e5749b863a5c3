"""Render backups and restores for the GitOps repository with the real Helm charts.

Role: the saga's entry points for backups. :func:`render_backup` renders one backup with
``deploy/charts/dbaas-backup`` — a ``DatabaseBackup`` claim, plus in Kubernetes PoPs the engine
operator's own one-shot backup resource where it has one (YugabyteDB: ``StorageConfig`` +
``Backup``) — and returns the text the committer writes to
``layout.backup_path(tenant, pop, backup_id)``. :func:`restore_values` builds the ``restore``
value of the ``dbaas-service`` chart for a service created from another service's data (the
ServiceClaim's ``spec.restore``, plus YugabyteDB's ``RestoreJob`` where it applies).

Rendering is :func:`gitops.helm.render` (``helm template``, values on stdin, the chart's
values.schema.json deciding what is valid), then a check that the chart rendered what a backup is
(exactly one DatabaseBackup carrying this backup id, every object in the tenant's namespace), then
:func:`gitops.manifests.dump_all`: equal arguments always give equal bytes, so committing a
backup twice changes nothing. Every failure is a :class:`gitops.helm.RenderError` (permanent:
the same arguments fail the same way) or a transient :class:`gitops.helm.HelmTimeoutError`.

May import only the standard library and ``gitops``: plain values in, text out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gitops import helm as _helm
from gitops import manifests

NAMESPACE_PREFIX = "tenant-"
RELEASE_NAME = "backup"
BACKUP_API_VERSION = "dbaas.io/v1alpha1"
BACKUP_KIND = "DatabaseBackup"


def tenant_namespace(tenant: str) -> str:
    """The namespace a tenant's services and backups live in, in every PoP (as the saga renders
    services: ``tenant-{tenant}``)."""
    return f"{NAMESPACE_PREFIX}{tenant}"


def backup_values(
    *,
    tenant: str,
    pop: str,
    engine: str,
    service_id: str,
    service_name: str,
    backup_id: str,
    destination: Mapping[str, str],
    encryption_key_id: str | None,
    kek_id: str | None,
    pitr: bool,
    labels: Mapping[str, str] | None = None,
    object_store: Mapping[str, str] | None = None,
    operation_id: str | None = None,
) -> dict[str, Any]:
    """The dbaas-backup chart's values for one backup (validated by the chart, not here).

    ``destination``: ``{bucket, prefix?, endpoint?, region?}`` (every Kubernetes PoP), or
    ``{path}`` (PoP local only). ``encryption_key_id`` and ``kek_id``: the data key and the
    key-encryption key to seal with, both or neither (None: the PoP's current ones, which it
    reports with the outcome). ``object_store``: how engine operators reach the bucket,
    ``{accessKeyId, secretName}``; absent means their own workload identity (IAM).
    ``operation_id``: the backup's operation, annotated on the DatabaseBackup so a Kubernetes
    PoP's operator reports on it (None: no annotation, as for PoP local).
    """
    values: dict[str, Any] = {
        "tenant": tenant,
        "serviceId": service_id,
        "serviceName": service_name,
        "engine": engine,
        "pop": pop,
        "backupId": backup_id,
        "pitr": bool(pitr),
        "destination": dict(destination),
    }
    if encryption_key_id is not None or kek_id is not None:
        values["encryption"] = {"keyId": encryption_key_id or "", "kekId": kek_id or ""}
    if labels:
        values["labels"] = dict(labels)
    if object_store:
        values["objectStore"] = dict(object_store)
    if operation_id is not None:
        values["operation"] = {"id": operation_id}
    return values


def render_backup(
    helm: str | _helm.Renderer | None,
    *,
    tenant: str,
    pop: str,
    engine: str,
    service_id: str,
    service_name: str,
    backup_id: str,
    destination: Mapping[str, str],
    encryption_key_id: str | None,
    kek_id: str | None,
    pitr: bool,
    labels: Mapping[str, str] | None = None,
    object_store: Mapping[str, str] | None = None,
    operation_id: str | None = None,
    timeout: float = _helm.DEFAULT_TIMEOUT_S,
) -> str:
    """The manifests of one backup as deterministic multi-document YAML, for
    ``layout.backup_path(tenant, pop, backup_id)``.

    ``helm`` is the Helm binary (None: :func:`gitops.helm.find_helm`) or a long-lived
    :class:`gitops.helm.Renderer` (the saga's), which renders the same bytes. ``service_id`` and
    ``service_name`` are the service's, as its own render got them (the objects point at its
    ServiceClaim and engine CR by the name the service chart derives from both). The other
    arguments are :func:`backup_values`'.
    Raises RenderError when the chart refuses the values (Helm's message names the key) or
    renders something that is not this backup.
    """
    values = backup_values(
        tenant=tenant, pop=pop, engine=engine, service_id=service_id, service_name=service_name,
        backup_id=backup_id, destination=destination, encryption_key_id=encryption_key_id,
        kek_id=kek_id, pitr=pitr, labels=labels, object_store=object_store, operation_id=operation_id,
    )
    namespace = tenant_namespace(tenant)
    if isinstance(helm, _helm.Renderer):
        docs = helm.render(_helm.BACKUP_CHART, values, RELEASE_NAME, namespace, timeout=timeout)
    else:
        docs = _helm.render(_helm.BACKUP_CHART, values, RELEASE_NAME, namespace, helm=helm, timeout=timeout)
    _check_backup(docs, backup_id=backup_id, namespace=namespace)
    return manifests.dump_all(docs)


def restore_values(
    *,
    source_tenant: str,
    source_service_id: str,
    source_engine: str,
    backup_id: str | None = None,
    target_time: str | datetime | None = None,
    source_service_name: str | None = None,
    source_pop: str | None = None,
    location: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The dbaas-service chart's ``restore`` value (the ServiceClaim's ``spec.restore``).

    Exactly one of ``backup_id`` or ``target_time`` (RFC 3339 text with a zone, e.g.
    ``2026-01-31T12:00:00Z``, or an aware datetime, written in UTC); the chart refuses anything
    else. ``source_service_name`` and ``source_pop`` let the chart name the source backup's
    engine objects (YugabyteDB's RestoreJob needs both); ``location`` is where the source's
    backups are.
    """
    restore: dict[str, Any] = {
        "sourceTenant": source_tenant,
        "sourceServiceId": source_service_id,
        "sourceEngine": source_engine,
    }
    optional = {
        "sourceServiceName": source_service_name,
        "sourcePop": source_pop,
        "backupId": backup_id,
        "targetTime": rfc3339(target_time) if isinstance(target_time, datetime) else target_time,
        "location": dict(location) if location else None,
    }
    restore.update({key: value for key, value in optional.items() if value is not None})
    return restore


def rfc3339(instant: datetime) -> str:
    """``2026-01-31T12:00:00Z`` (microseconds when it has them), in UTC; a naive datetime is
    refused rather than guessed."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} has no time zone; give an aware datetime")
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _check_backup(docs: list[dict[str, Any]], *, backup_id: str, namespace: str) -> None:
    chart = str(_helm.BACKUP_CHART)
    claims = [d for d in docs if (d["apiVersion"], d["kind"]) == (BACKUP_API_VERSION, BACKUP_KIND)]
    if len(claims) != 1:
        raise _helm.RenderError(
            f"{chart} rendered {len(claims)} {BACKUP_KIND} objects; a backup is exactly one", chart=chart
        )
    rendered_id = (claims[0].get("spec") or {}).get("backupId")
    if rendered_id != backup_id:
        raise _helm.RenderError(
            f"{chart} rendered {manifests.ref(claims[0])} for backup {rendered_id!r}, not {backup_id!r}",
            chart=chart,
        )
    strays = [manifests.ref(d) for d in docs if (d.get("metadata") or {}).get("namespace") != namespace]
    if strays:
        raise _helm.RenderError(
            f"{chart} rendered objects outside namespace {namespace}: {', '.join(strays)}", chart=chart
        )
