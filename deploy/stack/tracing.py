"""Tracing for the local platform: Jaeger (the all-in-one binary of Jaeger v2, ``cmd/jaeger``)
receiving the control plane's spans over OTLP and keeping them in memory, with its query API and
UI.

The ``jaeger`` binary is found the way ``deploy/scripts/ensure-jaeger.sh`` finds it —
``$DBAAS_JAEGER``, then the per-user tool cache
(``${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/dbaas/tools}/jaeger-<version>``) — and, when it
is nowhere, that script builds it once from the Go module proxy. The version is the one
``deploy/tools/jaeger/go.mod`` requires.

Its configuration (``<home>/tracing/jaeger.yaml``, written on every ``up``) keeps only what the
platform uses: the OTLP receivers (gRPC and HTTP), in-memory storage bounded to ``MAX_TRACES``
traces (the oldest dropped first; nothing survives a restart), and the query service (HTTP API and
UI on the ``tracing`` port, its gRPC API on ``tracing_grpc``). Every listener binds loopback; its
own metrics are served for Prometheus on ``tracing_metrics``. Healthy means the query API answers and the OTLP/HTTP receiver takes an
(empty) export. Built from the module proxy, the binary has no UI assets (Jaeger's release builds
embed the separately built UI): its UI page is a placeholder unless ``DBAAS_JAEGER_UI_ASSETS`` names
a folder of the built UI; the query API is complete either way.

Every control-plane process of an instance that runs it gets ``DBAAS_OTLP_ENDPOINT`` (the OTLP/HTTP
receiver) and ``DBAAS_TRACING_URL`` (the UI, which the API links operations to), and
``DBAAS_TRACE_ROOT_RATIO`` when the ``up`` is given one (a changed ratio restarts them):
``tracing_env``.
Left out (``DBAAS_STACK_WITHOUT=tracing``), no process gets them and tracing is off.

Owns: how Jaeger is found, configured, started and probed. Imports: ``deploy.stack.base``,
``config``, ``objectstore`` (the tool cache) and ``runtime.files``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import httpx
import yaml

from deploy.stack.base import Component, Context, StackError
from deploy.stack.config import HOST, REPO_ROOT
from deploy.stack.objectstore import tools_cache
from runtime import files

JAEGER_MODULE = "github.com/jaegertracing/jaeger"
WRAPPER_GO_MOD = REPO_ROOT / "deploy" / "tools" / "jaeger" / "go.mod"
ENSURE_SCRIPT = REPO_ROOT / "deploy" / "scripts" / "ensure-jaeger.sh"
NAME = "tracing"
MAX_TRACES = 10_000  # kept in memory, the oldest dropped first
MEMORY_LIMIT = "256MiB"  # Go's soft memory limit for the whole process
STORE = "memstore"
# A folder of the built Jaeger UI (jaeger-ui's `build`): a binary built from the Go module proxy
# carries no UI assets (Jaeger's release builds embed them), so its UI page is a placeholder; the
# query API, which `dbaas operation trace` reads, is complete either way.
UI_ASSETS_VARIABLE = "DBAAS_JAEGER_UI_ASSETS"
ROOT_RATIO_VARIABLE = "DBAAS_TRACE_ROOT_RATIO"  # runtime.tracing's: the share of consumer-started traces kept


def jaeger_version() -> str:
    """The Jaeger version the wrapper module requires."""
    for line in WRAPPER_GO_MOD.read_text().splitlines():
        words = line.split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == JAEGER_MODULE:
            return words[1]
    raise StackError(f"{WRAPPER_GO_MOD} requires no {JAEGER_MODULE}")


def _is_jaeger(path: str) -> bool:
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "gitVersion" in out.stdout + out.stderr


def find_jaeger() -> str | None:
    """``$DBAAS_JAEGER`` or the cached build of the pinned version; None when neither is there
    (``ensure_jaeger`` builds it)."""
    if os.environ.get("DBAAS_JAEGER"):
        path = os.environ["DBAAS_JAEGER"]
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise StackError(f"DBAAS_JAEGER={path} is not an executable file")
        return path
    cached = tools_cache() / f"jaeger-{jaeger_version()}"
    return str(cached) if os.access(cached, os.X_OK) else None


def ensure_jaeger(ctx: Context) -> str:
    found = find_jaeger()
    if found:
        return found
    log = ctx.config.log_dir / "tracing-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ctx.say(f"tracing: building Jaeger {jaeger_version()} from the Go module proxy into {tools_cache()} "
            f"(once per user; progress in {log})…")
    with open(log, "ab") as err:
        proc = subprocess.run([str(ENSURE_SCRIPT)], stdout=subprocess.PIPE, stderr=err, check=False)
    path = proc.stdout.decode().strip().splitlines()[-1:] if proc.returncode == 0 else []
    if not path or not os.access(path[0], os.X_OK):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StackError(f"Jaeger could not be built (deploy/scripts/ensure-jaeger.sh); set DBAAS_JAEGER to a "
                         f"jaeger binary, leave tracing out (DBAAS_STACK_WITHOUT=tracing), or see {log}:\n{tail}")
    return path[0]


def config_text(ctx: Context) -> str:
    """The instance's ``jaeger.yaml`` (an OpenTelemetry Collector configuration)."""
    port = ctx.config.port
    doc = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                     "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {"metrics": {"level": "basic", "readers": [{"pull": {"exporter": {"prometheus": {
                "host": HOST, "port": port("tracing_metrics"), "without_scope_info": True}}}}]},
                "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {STORE: {"memory": {"max_traces": MAX_TRACES}}}},
            "jaeger_query": {"storage": {"traces": STORE}, "enable_tracing": False,
                             "http": {"endpoint": f"{HOST}:{port('tracing')}"},
                             "grpc": {"endpoint": f"{HOST}:{port('tracing_grpc')}"}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"{HOST}:{port('otlp_grpc')}"},
                                             "http": {"endpoint": f"{HOST}:{port('otlp_http')}"}}}},
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
    }
    if os.environ.get(UI_ASSETS_VARIABLE):
        doc["extensions"]["jaeger_query"]["assets_path"] = os.environ[UI_ASSETS_VARIABLE]
    return ("# Generated by `dbaas stack up` (deploy/stack/tracing.py); edits here are replaced on the next `up`.\n"
            + yaml.safe_dump(doc, sort_keys=False))


class Jaeger(Component):
    """Jaeger all-in-one: OTLP in, spans in memory, query API and UI."""

    name = NAME
    port_name = "tracing"

    def base(self, ctx: Context) -> Path:
        return ctx.config.home / "tracing"

    def config_file(self, ctx: Context) -> Path:
        return self.base(ctx) / "jaeger.yaml"

    def extra_ports(self, ctx: Context) -> list[int]:
        return [ctx.config.port(name) for name in ("tracing_grpc", "otlp_grpc", "otlp_http", "tracing_metrics")]

    def prepare(self, ctx: Context) -> None:
        ensure_jaeger(ctx)
        self.base(ctx).mkdir(parents=True, exist_ok=True)
        text, path = config_text(ctx), self.config_file(ctx)
        if not path.exists() or path.read_text() != text:
            files.replace_text(path, text)

    def argv(self, ctx: Context) -> list[str]:
        return [find_jaeger() or ensure_jaeger(ctx), f"--config={self.config_file(ctx)}"]

    def env(self, ctx: Context) -> dict[str, str]:
        return {"GOMEMLIMIT": MEMORY_LIMIT}

    def settings_fingerprint(self, ctx: Context) -> str:
        """Its arguments and configuration: it reads them only at start."""
        return hashlib.sha256(json.dumps([self.argv(ctx), self.env(ctx), config_text(ctx)]).encode()).hexdigest()

    def healthy(self, ctx: Context) -> bool:
        """The query API answers and the OTLP/HTTP receiver takes an empty export."""
        try:
            if httpx.get(f"{self.endpoint(ctx)}/api/services", timeout=2).status_code != 200:
                return False
            return httpx.post(f"{otlp_endpoint(ctx)}/v1/traces", content=b"", timeout=2,
                              headers={"Content-Type": "application/x-protobuf"}).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics_url(self, ctx: Context) -> str:
        """Its own telemetry: spans received, exported and refused, queue sizes."""
        return f"http://{HOST}:{ctx.config.port('tracing_metrics')}/metrics"

    def endpoint(self, ctx: Context) -> str:
        """The UI and its HTTP API (`/api/traces/<id>`, `/api/traces?service=…&tags=…`)."""
        return f"http://{HOST}:{ctx.config.port('tracing')}"


def otlp_endpoint(ctx: Context) -> str:
    """The OTLP/HTTP receiver's base URL (spans go to `<it>/v1/traces`)."""
    return f"http://{HOST}:{ctx.config.port('otlp_http')}"


def tracing_env(ctx: Context) -> dict[str, str]:
    """What a control-plane process needs to trace, when the instance runs Jaeger; else nothing."""
    if not any(c.name == NAME for c in ctx.components):
        return {}
    env = {"DBAAS_OTLP_ENDPOINT": otlp_endpoint(ctx), "DBAAS_TRACING_URL": Jaeger().endpoint(ctx)}
    if os.environ.get(ROOT_RATIO_VARIABLE, "").strip():  # given to this `up`: part of the settings
        env[ROOT_RATIO_VARIABLE] = os.environ[ROOT_RATIO_VARIABLE].strip()
    return env


TRACING: tuple[Component, ...] = (Jaeger(),)
