"""The GitOps repository layout: where every file of the platform lives, as pure functions.

Role: owns the path scheme of the GitOps repository (ARCHITECTURE.md section 3) and its initial
skeleton::

    base/{crds,operators,observability,kafka,infrastructure}/kustomization.yaml
    overlays/{pop}/kustomization.yaml                pop in POPS
    tenants/{tenant}/{pop}/{service}.yaml            rendered ServiceClaim + engine CR
    tenants/{tenant}/{pop}/backups/{backup}.yaml     rendered DatabaseBackup (+ engine backup)
    argocd/applications/{name}.yaml                  Argo CD Applications (children)
    argocd/app-of-apps.yaml                          the root Application

:func:`parse_tenant_path` tells which of the two a path under ``tenants/`` is.

Every helper validates what it is given (DNS-1123 labels, known PoPs, safe relative paths) and
raises :class:`gitops.errors.InvalidPath` with a message saying how to fix it. No I/O, no clock;
the same arguments always give the same bytes, so committing them twice changes nothing.

Imports: standard library, PyYAML and ``gitops.errors`` only; nothing of the domain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from gitops.errors import InvalidPath
from schemas.catalog import KUBERNETES_POPS, POPS

# PoPs synced by Argo CD (KUBERNETES_POPS); `local` is synced by the local PoP agent reading
# overlays/local itself.
BASE_COMPONENTS: tuple[str, ...] = ("crds", "operators", "observability", "kafka", "infrastructure")

BASE_DIR = "base"
OVERLAYS_DIR = "overlays"
TENANTS_DIR = "tenants"
BACKUPS_DIRNAME = "backups"
CDC_DIRNAME = "cdc"
APPLICATIONS_DIR = "argocd/applications"
APP_OF_APPS_PATH = "argocd/app-of-apps.yaml"
KUSTOMIZATION = "kustomization.yaml"

ARGOCD_API_VERSION = "argoproj.io/v1alpha1"
KUSTOMIZE_API_VERSION = "kustomize.config.k8s.io/v1beta1"
IN_CLUSTER_SERVER = "https://kubernetes.default.svc"
PART_OF_LABEL = {"app.kubernetes.io/part-of": "dbaas"}

MAX_PATH_LENGTH = 1024
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_MAX = 63
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- validation ------------------------------------------------------------------------------


def validate_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a DNS-1123 label (what Kubernetes accepts as an object name and
    what is safe as one path segment); raise InvalidPath naming ``what`` otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidPath(f"{what} is empty: give a DNS-1123 label such as 'acme-prod'")
    if len(value) > _DNS1123_MAX or not _DNS1123_LABEL.match(value):
        raise InvalidPath(
            f"{what} {value!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            f"start and end with a letter or digit, at most {_DNS1123_MAX} characters"
        )
    return value


def validate_pop(pop: object) -> str:
    """Return ``pop`` if it is one of :data:`POPS`."""
    if pop not in POPS:
        raise InvalidPath(f"pop {pop!r} is not offered; choose one of: {', '.join(POPS)}")
    return str(pop)


def validate_repo_path(path: object) -> str:
    """Return ``path`` if it is a safe file path relative to the repository root.

    Rejected: non-strings, empty paths, absolute paths, backslashes, control characters,
    empty, ``.`` or ``..`` segments (so also trailing and doubled slashes), any ``.git`` segment,
    and paths longer than :data:`MAX_PATH_LENGTH`.
    """
    if not isinstance(path, str) or not path:
        raise InvalidPath("repository path is empty: give a relative path such as 'tenants/acme/db.yaml'")
    problem = _path_problem(path)
    if problem:
        raise InvalidPath(f"repository path {path!r} is not allowed: {problem}")
    return path


def _path_problem(path: str) -> str | None:
    if len(path) > MAX_PATH_LENGTH:
        return f"longer than {MAX_PATH_LENGTH} characters"
    if path.startswith("/"):
        return "it is absolute; give it relative to the repository root"
    if "\\" in path:
        return "it contains a backslash; separate folders with '/'"
    if _CONTROL.search(path):
        return "it contains a control character"
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            return "it has an empty, '.' or '..' segment"
        if segment.lower() == ".git":
            return "it reaches into '.git'"
    return None


# -- paths -----------------------------------------------------------------------------------


def base_dir(component: str) -> str:
    """``base/{component}`` for one of :data:`BASE_COMPONENTS`."""
    if component not in BASE_COMPONENTS:
        raise InvalidPath(
            f"base component {component!r} is unknown; choose one of: {', '.join(BASE_COMPONENTS)}"
        )
    return f"{BASE_DIR}/{component}"


def base_kustomization_path(component: str) -> str:
    return f"{base_dir(component)}/{KUSTOMIZATION}"


def overlay_dir(pop: str) -> str:
    """``overlays/{pop}``."""
    return f"{OVERLAYS_DIR}/{validate_pop(pop)}"


def overlay_kustomization_path(pop: str) -> str:
    return f"{overlay_dir(pop)}/{KUSTOMIZATION}"


def tenant_dir(tenant: str) -> str:
    """``tenants/{tenant}``: everything a tenant owns (delete it to remove the tenant)."""
    return f"{TENANTS_DIR}/{validate_name(tenant, 'tenant')}"


def service_path(tenant: str, service: str) -> str:
    """``tenants/{tenant}/{service}.yaml``: the rendered ServiceClaim of one service."""
    return f"{tenant_dir(tenant)}/{validate_name(service, 'service')}.yaml"


def pop_service_path(tenant: str, pop: str, service: str) -> str:
    """``tenants/{tenant}/{pop}/{service}.yaml``: where the platform commits a service's manifests.

    The PoP folder lets each PoP's Argo CD Application (path ``tenants/{tenant}/{pop}``) apply only
    the services placed in that PoP."""
    return f"{tenant_dir(tenant)}/{validate_pop(pop)}/{validate_name(service, 'service')}.yaml"


def deletion_record_path(tenant: str, pop: str, service: str) -> str:
    """``tenants/{tenant}/{pop}/deletions/{service}.yaml``: in a Kubernetes PoP, the record of the
    operation deleting a service (a ConfigMap applied before the claim is pruned), so the PoP
    operator reports the deletion on the right operation."""
    return f"{tenant_dir(tenant)}/{validate_pop(pop)}/deletions/{validate_name(service, 'service')}.yaml"


def backup_deletion_record_path(tenant: str, pop: str, backup_id: str) -> str:
    """``tenants/{tenant}/{pop}/deletions/backups/{backup_id}.yaml``: in a Kubernetes PoP, the record
    of the operation deleting a backup (a ConfigMap applied before the DatabaseBackup is pruned), so
    the PoP operator reports the deletion on the right operation."""
    return f"{tenant_dir(tenant)}/{validate_pop(pop)}/deletions/backups/{validate_name(backup_id, 'backup id')}.yaml"


def backups_dir(tenant: str, pop: str) -> str:
    """``tenants/{tenant}/{pop}/backups``: the backups of a tenant's services in one PoP.

    Inside the PoP folder, so the PoP's Argo CD Application (path ``tenants/{tenant}/{pop}``,
    recursive) applies them in the PoP that holds the data."""
    return f"{tenant_dir(tenant)}/{validate_pop(pop)}/{BACKUPS_DIRNAME}"


def backup_path(tenant: str, pop: str, backup_id: str) -> str:
    """``tenants/{tenant}/{pop}/backups/{backup_id}.yaml``: one rendered backup (DatabaseBackup,
    plus the engine's own backup resource where it has one). Kept while the backup is retained."""
    return f"{backups_dir(tenant, pop)}/{validate_name(backup_id, 'backup id')}.yaml"


def cdc_path(tenant: str, pop: str, service_id: str) -> str:
    """``tenants/{tenant}/{pop}/cdc/{service_id}.yaml``: a service's change-data-capture connector
    (a Strimzi KafkaConnector), in the PoP folder so that the PoP's Application applies it there."""
    return f"{tenant_dir(tenant)}/{validate_pop(pop)}/{CDC_DIRNAME}/{validate_name(service_id, 'service id')}.yaml"


@dataclass(frozen=True)
class TenantPath:
    """What a file under ``tenants/`` holds: ``kind`` "service" (``name`` is the service's name)
    or "backup" (``name`` is the backup id), of ``tenant`` in ``pop``."""

    kind: Literal["service", "backup", "cdc"]
    tenant: str
    pop: str
    name: str


def parse_tenant_path(path: str) -> TenantPath | None:
    """The service or backup file ``path`` is, as :func:`pop_service_path` and :func:`backup_path`
    build them; None for any other path (READMEs, other folders, names that are not DNS-1123
    labels, unknown PoPs). ``tenants/acme/lagos/backups.yaml`` is the service named "backups"."""
    if not isinstance(path, str) or not path.endswith(".yaml"):
        return None
    parts = path[: -len(".yaml")].split("/")
    if parts[0] != TENANTS_DIR or len(parts) not in (4, 5):
        return None
    if len(parts) == 4:
        kind: Literal["service", "backup", "cdc"] = "service"
        _, tenant, pop, name = parts
    elif parts[3] == BACKUPS_DIRNAME:
        kind = "backup"
        _, tenant, pop, _, name = parts
    elif parts[3] == CDC_DIRNAME:
        kind = "cdc"
        _, tenant, pop, _, name = parts
    else:
        return None
    if pop not in POPS or not all(_is_label(v) for v in (tenant, name)):
        return None
    return TenantPath(kind, tenant, pop, name)


def _is_label(value: str) -> bool:
    return len(value) <= _DNS1123_MAX and bool(_DNS1123_LABEL.match(value))


def application_path(name: str) -> str:
    """``argocd/applications/{name}.yaml``: one child Application of the app-of-apps."""
    return f"{APPLICATIONS_DIR}/{validate_name(name, 'application name')}.yaml"


# -- manifests -------------------------------------------------------------------------------


def to_yaml(obj: Mapping[str, Any]) -> str:
    """Deterministic YAML (key order kept, block style): equal objects give equal bytes."""
    return yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False, allow_unicode=True)


def application_manifest(
    name: str,
    *,
    repo_url: str,
    path: str,
    revision: str = "main",
    destination_name: str | None = None,
    destination_namespace: str = "argocd",
    namespace: str = "argocd",
    project: str = "default",
    recurse: bool = False,
) -> dict[str, Any]:
    """An Argo CD ``Application`` syncing ``path`` of ``repo_url`` with prune and self-heal.

    ``destination_name`` names a cluster registered in Argo CD (a PoP); without it the
    Application targets the cluster Argo CD runs in.
    """
    validate_name(name, "application name")
    validate_name(namespace, "namespace")
    validate_name(destination_namespace, "destination namespace")
    validate_repo_path(path)
    destination: dict[str, str] = (
        {"name": destination_name} if destination_name else {"server": IN_CLUSTER_SERVER}
    )
    destination["namespace"] = destination_namespace
    return {
        "apiVersion": ARGOCD_API_VERSION,
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(PART_OF_LABEL)},
        "spec": {
            "project": project,
            "source": {
                "repoURL": _validate_repo_url(repo_url),
                "targetRevision": revision,
                "path": path,
                "directory": {"recurse": recurse},
            },
            "destination": destination,
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }


def kustomization(resources: list[str]) -> dict[str, Any]:
    """A Kustomize ``Kustomization`` listing ``resources``."""
    return {"apiVersion": KUSTOMIZE_API_VERSION, "kind": "Kustomization", "resources": list(resources)}


def bootstrap_files(
    repo_url: str,
    *,
    revision: str = "main",
    argocd_namespace: str = "argocd",
    project: str = "default",
) -> dict[str, str]:
    """The initial skeleton of the GitOps repository: ``{path: text}``, ready for
    ``GitOpsCommitter.apply``. Applying it again is a no-op (same bytes)."""
    files: dict[str, str] = {"README.md": _README}
    files[f"{BASE_DIR}/{KUSTOMIZATION}"] = to_yaml(kustomization(list(BASE_COMPONENTS)))
    for component in BASE_COMPONENTS:
        header = f"# base/{component}: shared by every PoP; add resources here.\n"
        files[base_kustomization_path(component)] = header + to_yaml(kustomization([]))
    for pop in POPS:
        files[overlay_kustomization_path(pop)] = to_yaml(kustomization(["../../base"]))
    files[f"{TENANTS_DIR}/README.md"] = _TENANTS_README
    for pop in KUBERNETES_POPS:
        app = application_manifest(
            f"pop-{pop}", repo_url=repo_url, path=overlay_dir(pop), revision=revision,
            destination_name=pop, namespace=argocd_namespace, project=project,
        )
        files[application_path(f"pop-{pop}")] = to_yaml(app)
    root = application_manifest(
        "app-of-apps", repo_url=repo_url, path=APPLICATIONS_DIR, revision=revision,
        destination_namespace=argocd_namespace, namespace=argocd_namespace, project=project,
    )
    files[APP_OF_APPS_PATH] = to_yaml(root)
    return files


def _validate_repo_url(url: object) -> str:
    if not isinstance(url, str) or not url.strip() or any(c.isspace() for c in url):
        raise InvalidPath(f"repository URL {url!r} is empty or contains whitespace")
    return url


_README = """\
# dbaas GitOps repository

Written by the dbaas control plane; do not edit by hand (changes are overwritten).

- `base/` shared by every PoP: crds, operators, observability, kafka, infrastructure
- `overlays/{pop}/` per-PoP customisation (lagos, johannesburg, frankfurt, ashburn, singapore, local)
- `tenants/{tenant}/{pop}/{service}.yaml` one ServiceClaim (and engine resource) per service;
  `tenants/{tenant}/{pop}/backups/{backup}.yaml` one DatabaseBackup per retained backup
- `argocd/app-of-apps.yaml` root Application; children in `argocd/applications/`

Every commit carries `Operation-Id:` and `Correlation-Id:` trailers.
"""

_TENANTS_README = """\
# tenants

`{tenant}/{pop}/{service}.yaml` holds the ServiceClaim of one service in one PoP;
`{tenant}/{pop}/backups/{backup}.yaml` holds one DatabaseBackup of a service in that PoP.
"""
