"""Render Helm charts to Kubernetes objects with Helm itself.

Role: the platform's only caller of Helm. ``render`` runs ``helm template`` on a local chart with
plain values and returns the rendered objects as dicts; ``lint`` runs ``helm lint``; ``find_helm``
locates a Helm v3 binary. Values travel on stdin as JSON (never on the command line, where they
would be visible in the process list and subject to ``--set`` parsing rules).

``Renderer`` renders the same way without a process per render: it keeps one long-lived chart
renderer (``deploy/tools/renderer``: Helm's own chart loader, values.schema.json validation and
template engine, in the order of ``helm template``, built by ``deploy/scripts/ensure-renderer.sh``
with the Helm version ensure-helm.sh pins) and sends it one JSON request per render. Its output is
byte for byte what ``helm template`` prints (tests/gitops/test_renderer.py compares them). The saga
renders with it; there is no fallback to ``helm template``: a renderer that cannot be found or
started is the platform's fault (``HelmNotFoundError``), as a missing helm binary is.

May import only the standard library, ``gitops.errors`` and ``gitops.manifests``: gitops takes
plain values and knows nothing of commands, events, processors or projections.

Errors are typed: every failure is a ``HelmError`` (a ``gitops.errors.GitOpsError``) with a stable
``reason``; ``transient`` says whether retrying the same call can succeed (a timeout) or not (bad
values, a broken chart, no binary).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

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
RENDERER_ENV = "DBAAS_RENDERER"
RENDERER_MODULE = REPO_ROOT / "deploy" / "tools" / "renderer"
ENSURE_RENDERER = "deploy/scripts/ensure-renderer.sh"
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


class RendererUnavailable(HelmError, TransientGitOpsError):
    """The renderer process died or answered nonsense during a render; the next render starts a
    new one, so retrying may succeed."""

    reason = "RendererUnavailable"


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
    _check_names(chart, release_name, namespace)
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


def tools_cache(env: Mapping[str, str] | None = None) -> Path:
    """The per-user tool cache (deploy/scripts/ensure-*.sh build into it)."""
    env = os.environ if env is None else env
    if env.get("DBAAS_TOOLS_CACHE"):
        return Path(env["DBAAS_TOOLS_CACHE"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dbaas" / "tools"


def renderer_build_name() -> str:
    """``renderer-<helm version>-<hash of the wrapper's sources>``: the cached build's name, as
    deploy/scripts/ensure-renderer.sh computes it."""
    sources = [RENDERER_MODULE / name for name in ("go.mod", "go.sum", "main.go")]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:12]
    version = next((line.split()[-1] for line in (RENDERER_MODULE / "go.mod").read_text().splitlines()
                    if line.split()[-2:-1] == ["helm.sh/helm/v3"]), "unknown")
    return f"renderer-{version}-{digest}"


def find_renderer(env: Mapping[str, str] | None = None, *, build: bool = True) -> str:
    """Path of the chart renderer: ``$DBAAS_RENDERER``, else the cached build of this checkout's
    ``deploy/tools/renderer``, else (``build``) what deploy/scripts/ensure-renderer.sh builds."""
    env = os.environ if env is None else env
    configured = env.get(RENDERER_ENV)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise HelmNotFoundError(f"{RENDERER_ENV}={configured} is not an executable file; fix it or unset it")
        return configured
    try:
        cached = tools_cache(env) / renderer_build_name()
    except OSError as exc:
        raise HelmNotFoundError(f"cannot read the renderer's sources in {RENDERER_MODULE}: {exc}") from exc
    if os.access(cached, os.X_OK):
        return str(cached)
    if build:
        try:
            result = subprocess.run([str(REPO_ROOT / ENSURE_RENDERER)], capture_output=True, text=True,
                                    timeout=1800, check=False, env={**os.environ, **env})
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HelmNotFoundError(f"{ENSURE_RENDERER} could not run: {exc}") from exc
        built = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
        if built and os.access(built[0], os.X_OK):
            return built[0]
        raise HelmNotFoundError(f"no chart renderer: {ENSURE_RENDERER} failed (exit {result.returncode}): "
                                f"{_clean(result.stderr)[-2000:]}")
    raise HelmNotFoundError(f"no chart renderer at {cached}: run {ENSURE_RENDERER} (it builds "
                            f"deploy/tools/renderer with Go) or set {RENDERER_ENV}=/path/to/renderer")


class Renderer:
    """One long-lived chart renderer process, rendering like ``helm template`` (module docstring).

    ``render`` has the signature and the errors of :func:`render`: ``RenderError`` when Helm
    refuses the chart or the values, ``HelmTimeoutError`` when an answer does not come within
    ``timeout`` (the process is then stopped), ``RendererUnavailable`` when the process died during
    the render; the next render starts a new process. ``HelmNotFoundError`` when no renderer can be
    found or started. Thread-safe (renders are serialized); ``close`` stops the process.

    ``prefetch`` asks for a render ahead: the renderer works on it while the caller does something
    else, and the ``render`` with the same arguments takes its answer (the same bytes, the same
    errors). At most :attr:`WINDOW` requests are written ahead of their answers, so neither pipe
    ever fills while the other side waits on it.
    """

    WINDOW = 16

    def __init__(self, path: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._ids = 0
        self._sent: deque[str] = deque()  # ids written, in order, whose answers are not read yet
        self._queued: deque[dict[str, str]] = deque()  # requests not written yet (the window is full)
        self._answers: dict[str, dict[str, Any]] = {}  # answers read, not taken yet
        self._ahead: dict[tuple[str, ...], str] = {}  # a prefetched request's arguments -> its id
        self._unwanted: set[str] = set()  # ids whose answers nobody takes: dropped when read
        self.starts = 0  # processes started so far (restarts are starts after the first)

    def render(
        self,
        chart_dir: str | os.PathLike[str],
        values: Mapping[str, Any],
        release_name: str,
        namespace: str,
        *,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """The rendered Kubernetes objects, in Helm's output order (see :func:`render`)."""
        chart = str(chart_dir)
        text = self.template(chart, values, release_name, namespace, timeout=timeout)
        try:
            return parse_all(text, source=f"helm template {chart}")
        except ManifestError as exc:
            raise RenderError(str(exc), chart=chart, returncode=0) from exc

    def template(
        self,
        chart_dir: str | os.PathLike[str],
        values: Mapping[str, Any],
        release_name: str,
        namespace: str,
        *,
        timeout: float | None = None,
    ) -> str:
        """What ``helm template <release_name> <chart_dir> --namespace <namespace> --values -``
        prints, values given as JSON."""
        chart = str(chart_dir)
        _check_names(chart, release_name, namespace)
        request = self._request(chart, values, release_name, namespace)
        with self._lock:
            self._running()
            ahead = self._ahead.pop(_key(request), None)
            if ahead is None:
                self._queued.appendleft(request)
            answer = self._await(ahead or request["id"], chart, self.timeout if timeout is None else timeout)
        if answer.get("error"):
            stderr = str(answer["error"])
            raise RenderError(f"helm template {chart} failed: {_clean(stderr)}", chart=chart, stderr=stderr,
                              returncode=1)
        return str(answer.get("manifest", ""))

    def prefetch(
        self,
        chart_dir: str | os.PathLike[str],
        values: Mapping[str, Any],
        release_name: str,
        namespace: str,
    ) -> None:
        """Ask for this render now; the ``render``/``template`` call with the same arguments takes
        the answer. Raises nothing: what goes wrong shows at that call."""
        chart = str(chart_dir)
        try:
            _check_names(chart, release_name, namespace)
            request = self._request(chart, values, release_name, namespace)
        except RenderError:
            return
        with self._lock:
            key = _key(request)
            if key in self._ahead:
                return
            try:
                self._running()
                self._ahead[key] = request["id"]
                self._queued.append(request)
                self._pump()
            except (HelmError, OSError, ValueError):
                self._stop(kill=True)

    def forget(self) -> None:
        """Drop the prefetched renders nobody took (their answers are discarded when they come)."""
        with self._lock:
            ahead = set(self._ahead.values())
            self._ahead.clear()
            self._queued = deque(r for r in self._queued if r["id"] not in ahead)
            self._unwanted |= ahead & set(self._sent)
            for id_ in ahead & set(self._answers):
                del self._answers[id_]

    def version(self) -> str:
        """The Helm version the renderer is built with, e.g. ``v3.22.0``."""
        with self._lock:
            self._running()
            self._ids += 1
            request = {"id": f"v{self._ids}", "op": "version"}
            self._queued.appendleft(request)
            return str(self._await(request["id"], "renderer", self.timeout)["version"])

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the process -----------------------------------------------------------------------------

    def _request(self, chart: str, values: Mapping[str, Any], release_name: str, namespace: str
                 ) -> dict[str, str]:
        with self._lock:
            self._ids += 1
            id_ = str(self._ids)
        return {"id": id_, "chart": os.path.abspath(chart), "release": release_name, "namespace": namespace,
                "values": _values_json(values, chart)}

    def _await(self, id_: str, chart: str, timeout: float) -> dict[str, Any]:
        """The answer to request ``id_`` (written or queued), reading (and keeping) the answers
        before it; the process is stopped when it fails to answer."""
        deadline = time.monotonic() + timeout
        try:
            self._pump()
            while id_ not in self._answers:
                proc = self._proc
                if proc is None or not self._sent:
                    raise RendererUnavailable(f"the renderer lost the request for {chart}")
                line = self._read_line(proc, deadline)
                if line is None:
                    code = self._stop()
                    raise RendererUnavailable(f"the renderer stopped while rendering {chart} (exit {code})")
                expected = self._sent.popleft()
                try:
                    answer = json.loads(line)
                except ValueError:
                    answer = None
                if not isinstance(answer, dict) or answer.get("id") != expected:
                    self._stop(kill=True)
                    raise RendererUnavailable(
                        f"the renderer answered out of turn while rendering {chart}: {line[:200]!r}")
                if expected in self._unwanted:
                    self._unwanted.discard(expected)
                else:
                    self._answers[expected] = answer
                self._pump()
        except HelmTimeoutError:
            self._stop(kill=True)
            raise HelmTimeoutError(f"the renderer did not render {chart} within {timeout:g}s") from None
        except (OSError, ValueError) as exc:  # a broken pipe: it died
            self._stop()
            raise RendererUnavailable(f"the renderer stopped while rendering {chart}: {exc}") from exc
        return self._answers.pop(id_)

    def _pump(self) -> None:
        """Write queued requests while fewer than WINDOW answers are awaited."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        while self._queued and len(self._sent) < self.WINDOW:
            request = self._queued.popleft()
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._sent.append(request["id"])
        proc.stdin.flush()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        path = self._path or find_renderer()
        # A render allocates much short-lived memory (Helm compiles the values schema and parses the
        # templates each time) while the live heap stays a few MiB: collect less often.
        env = {**os.environ, "GOGC": os.environ.get("GOGC", "400")}
        try:
            # stderr is inherited: Helm's warnings go to the process's log.
            self._proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                          env=env)
        except OSError as exc:
            raise HelmNotFoundError(f"cannot run the renderer {path}: {exc}. Run {ENSURE_RENDERER}.") from exc
        self.starts += 1
        return self._proc

    def _read_line(self, proc: subprocess.Popen[bytes], deadline: float) -> str | None:
        """The next line of the renderer's output; None at its end; HelmTimeoutError after ``deadline``."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HelmTimeoutError("no answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8")

    def _stop(self, *, kill: bool = False) -> int | None:
        """Stop the process (at the end of its input it exits; ``kill`` when it cannot be trusted)
        and forget every request in flight: later renders ask the next process again."""
        proc, self._proc = self._proc, None
        self._buffer = b""
        self._sent.clear()
        self._queued.clear()
        self._answers.clear()
        self._ahead.clear()
        self._unwanted.clear()
        if proc is None:
            return None
        if kill:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _key(request: Mapping[str, str]) -> tuple[str, ...]:
    return request["chart"], request["release"], request["namespace"], request["values"]


def _check_names(chart: str, release_name: str, namespace: str) -> None:
    if not _RELEASE_NAME.match(release_name):
        raise RenderError(
            f"release name {release_name!r} is not a DNS-1123 label of at most 53 characters", chart=chart
        )
    if not _NAMESPACE.match(namespace):
        raise RenderError(
            f"namespace {namespace!r} is not a DNS-1123 label of at most 63 characters", chart=chart
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
