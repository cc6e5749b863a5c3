"""Render Helm charts to Kubernetes objects with the real ``helm`` binary.

Role: the platform's only caller of Helm. ``render`` runs ``helm template`` on a local chart with
plain values and returns the rendered objects as dicts; ``lint`` runs ``helm lint``; ``find_helm``
locates a Helm v3 binary. Values travel on stdin as JSON (never on the command line, where they
would be visible in the process list and subject to ``--set`` parsing rules).

May import only the standard library, ``gitops.errors`` and ``gitops.manifests``: gitops takes
plain values and knows nothing of commands, events, processors or projections.

Errors are typed: every failure is a ``HelmError`` (a ``gitops.errors.GitOpsError``) with a stable
``reason``; ``transient`` says whether retrying the same call can succeed (a timeout) or not (bad
values, a broken chart, no binary).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from gitops.errors import GitOpsError, PermanentGitOpsError, TransientGitOpsError
from gitops.manifests import ManifestError, parse_all

REPO_ROOT = Path(__file__).resolve().parent.parent
CHARTS_DIR = REPO_ROOT / "deploy" / "charts"
SERVICE_CHART = CHARTS_DIR / "dbaas-service"
ARGOCD_APPS_CHART = CHARTS_DIR / "dbaas-argocd-apps"
BACKUP_CHART = CHARTS_DIR / "dbaas-backup"
POP_OPERATOR_CHART = CHARTS_DIR / "dbaas-pop-operator"  # installed in each PoP cluster, not rendered into GitOps
BUNDLED_HELM = REPO_ROOT / ".tools" / "bin" / "helm"
ENSURE_SCRIPT = "deploy/scripts/ensure-helm.sh"
HELM_ENV = "DBAAS_HELM"
DEFAULT_TIMEOUT_S = 120.0
_RELEASE_NAME = re.compile(r"^(?=.{1,53}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAMESPACE = re.compile(r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class HelmError(GitOpsError):
    """Base of every error raised by this module (a ``GitOpsError``, so callers need one except)."""


class HelmNotFoundError(HelmError, PermanentGitOpsError):
    """No usable Helm v3 binary; the message says how to get one."""

    reason = "HelmNotFound"


class RenderError(HelmError, PermanentGitOpsError):
    """``helm template`` failed (bad values, chart error) or printed something that is not manifests.

    ``stderr`` (also ``detail``) holds Helm's own message, e.g. the values.schema.json violations.
    """

    reason = "RenderFailed"

    def __init__(self, message: str, *, chart: str, stderr: str = "", returncode: int | None = None) -> None:
        super().__init__(message, detail=stderr)
        self.chart = chart
        self.stderr = stderr
        self.returncode = returncode


class LintError(HelmError, PermanentGitOpsError):
    """``helm lint`` reported errors; ``output`` (also ``detail``) holds its full report."""

    reason = "LintFailed"

    def __init__(self, message: str, *, chart: str, output: str) -> None:
        super().__init__(message, detail=output)
        self.chart = chart
        self.output = output


class HelmTimeoutError(HelmError, TransientGitOpsError):
    """Helm did not finish in time (an overloaded host); retrying may succeed."""

    reason = "HelmTimeout"


def find_helm(env: Mapping[str, str] | None = None) -> str:
    """Path of a Helm v3 binary: ``$DBAAS_HELM``, else ``helm`` on PATH, else ``.tools/bin/helm``.

    The same order as deploy/scripts/ensure-helm.sh, which also builds ``.tools/bin/helm``.
    """
    env = os.environ if env is None else env
    configured = env.get(HELM_ENV)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise HelmNotFoundError(f"{HELM_ENV}={configured} is not an executable file; fix it or unset it")
        version = _helm_version(configured, _mtime(configured))
        if not version.startswith("v3."):
            raise HelmNotFoundError(f"{HELM_ENV}={configured} is not Helm v3 (it reports {version!r})")
        return configured
    on_path = shutil.which("helm", path=env.get("PATH"))
    if on_path and _helm_version(on_path, _mtime(on_path)).startswith("v3."):
        return on_path
    if BUNDLED_HELM.is_file() and os.access(BUNDLED_HELM, os.X_OK):
        return str(BUNDLED_HELM)
    raise HelmNotFoundError(
        f"no Helm v3 binary found: {HELM_ENV} is unset, no Helm v3 `helm` is on PATH, and "
        f"{BUNDLED_HELM} does not exist. Run {ENSURE_SCRIPT} (it builds Helm with Go into .tools/bin) "
        f"or set {HELM_ENV}=/path/to/helm."
    )


def version(helm: str | None = None) -> str:
    """The Helm binary's version, e.g. ``v3.22.0``."""
    path = helm or find_helm()
    return _helm_version(path, _mtime(path))


def render(
    chart_dir: str | os.PathLike[str],
    values: Mapping[str, Any],
    release_name: str,
    namespace: str,
    *,
    helm: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Run ``helm template`` and return the rendered Kubernetes objects, in Helm's output order.

    ``values`` must be JSON-compatible plain data (it is validated by the chart's
    values.schema.json); raises RenderError carrying Helm's stderr when Helm rejects them.
    """
    chart = str(chart_dir)
    if not _RELEASE_NAME.match(release_name):
        raise RenderError(
            f"release name {release_name!r} is not a DNS-1123 label of at most 53 characters", chart=chart
        )
    if not _NAMESPACE.match(namespace):
        raise RenderError(
            f"namespace {namespace!r} is not a DNS-1123 label of at most 63 characters", chart=chart
        )
    args = [
        helm or find_helm(),
        "template",
        release_name,
        chart,
        "--namespace",
        namespace,
        "--values",
        "-",
    ]
    result = _run(args, _values_json(values, chart), chart=chart, timeout=timeout, what="helm template")
    if result.returncode != 0:
        raise RenderError(
            f"helm template {chart} failed (exit {result.returncode}): {_clean(result.stderr)}",
            chart=chart,
            stderr=result.stderr,
            returncode=result.returncode,
        )
    try:
        return parse_all(result.stdout, source=f"helm template {chart}")
    except ManifestError as exc:
        raise RenderError(str(exc), chart=chart, stderr=result.stderr, returncode=0) from exc


def lint(
    chart_dir: str | os.PathLike[str],
    values: Mapping[str, Any],
    *,
    strict: bool = True,
    helm: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Run ``helm lint`` (``--strict``: warnings fail too) with ``values``; raise LintError on failure."""
    chart = str(chart_dir)
    args = [helm or find_helm(), "lint", chart, "--values", "-"]
    if strict:
        args.append("--strict")
    result = _run(args, _values_json(values, chart), chart=chart, timeout=timeout, what="helm lint")
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        problems = [line for line in output.splitlines() if line.startswith(("[ERROR]", "[WARNING]"))]
        raise LintError(
            f"helm lint {chart} failed: " + ("; ".join(problems) or _clean(output)),
            chart=chart,
            output=output,
        )


def _values_json(values: Mapping[str, Any], chart: str) -> str:
    try:
        return json.dumps(values, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RenderError(f"values for {chart} are not plain JSON data: {exc}", chart=chart) from exc


def _run(
    args: list[str], stdin: str, *, chart: str, timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HelmTimeoutError(f"{what} {chart} did not finish within {timeout:g}s") from exc
    except OSError as exc:  # the binary vanished or is not executable
        raise HelmNotFoundError(f"cannot run {args[0]}: {exc}. Run {ENSURE_SCRIPT}.") from exc


def _clean(stderr: str) -> str:
    """Helm's message without its generic debugging hint."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and "Use --debug flag" not in ln]
    return "\n".join(lines)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@lru_cache(maxsize=16)
def _helm_version(path: str, mtime_ns: int) -> str:
    """``helm version`` of one binary, cached per (path, mtime) so render() does not ask each time."""
    del mtime_ns  # part of the cache key only: a rebuilt binary is asked again
    try:
        result = subprocess.run(
            [path, "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""
