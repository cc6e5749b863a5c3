"""The local platform's object storage: SeaweedFS — master, volume server, filer and S3 gateway in
one ``weed server`` process — where backups are kept, in the bucket ``dbaas-backups``.

The ``weed`` binary is found the way ``deploy/scripts/ensure-seaweedfs.sh`` finds it —
``$DBAAS_WEED``, then ``weed`` on PATH, then the per-user tool cache
(``${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/dbaas/tools}/weed-<version>``) — and, when it
is nowhere, that script builds it once from the Go module proxy (about 20 minutes of CPU; every
later clone of the same user reuses it). The version is the one ``deploy/tools/seaweedfs/go.mod``
requires.

The S3 access key and secret are generated per instance (``secrets.json``) and written into the
gateway's identity file (0600, in the instance folder); every listener binds loopback, on the
instance's ports (``s3`` and a small range from ``s3_internal`` for the master, volume server,
filer and their gRPC ports). Healthy means a signed S3 call succeeds.

Owns: how SeaweedFS is found, configured, started and probed, and the settings processes get to
reach it (``object_store_env``, ``backup_env``).
Imports: ``deploy.stack.base`` and, lazily, boto3.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from deploy.stack.base import Component, Context, StackError
from deploy.stack.config import HOST, REPO_ROOT

WEED_MODULE = "github.com/seaweedfs/seaweedfs"
WRAPPER_GO_MOD = REPO_ROOT / "deploy" / "tools" / "seaweedfs" / "go.mod"
ENSURE_SCRIPT = REPO_ROOT / "deploy" / "scripts" / "ensure-seaweedfs.sh"
BUCKET = "dbaas-backups"
# The instance's internal ports, consecutive from ``s3_internal``.
INTERNAL_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
VOLUME_SIZE_LIMIT_MB = 256  # volumes fill up and new ones are added; small ones keep memory low
MEMORY_LIMIT = "384MiB"  # Go's soft memory limit for the whole process


def weed_version() -> str:
    """The SeaweedFS version the wrapper module requires."""
    for line in WRAPPER_GO_MOD.read_text().splitlines():
        words = line.split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == WEED_MODULE:
            return words[1]
    raise StackError(f"{WRAPPER_GO_MOD} requires no {WEED_MODULE}")


def tools_cache() -> Path:
    """Where built tools are kept for every clone of this user (never inside a clone)."""
    if os.environ.get("DBAAS_TOOLS_CACHE"):
        return Path(os.environ["DBAAS_TOOLS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dbaas" / "tools"


def _is_weed(path: str) -> bool:
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "version" in (out.stdout + out.stderr).lower()


def find_weed() -> str | None:
    """``$DBAAS_WEED``, ``weed`` on PATH, or the cached build of the pinned version; None when
    none is there (``ensure_weed`` builds it)."""
    if os.environ.get("DBAAS_WEED"):
        path = os.environ["DBAAS_WEED"]
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise StackError(f"DBAAS_WEED={path} is not an executable file")
        return path
    on_path = shutil.which("weed")
    if on_path and _is_weed(on_path):
        return on_path
    cached = tools_cache() / f"weed-{weed_version()}"
    if os.access(cached, os.X_OK):
        return str(cached)
    return None


def ensure_weed(ctx: Context) -> str:
    found = find_weed()
    if found:
        return found
    log = ctx.config.log_dir / "s3-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ctx.say(f"s3: building SeaweedFS {weed_version()} from the Go module proxy into {tools_cache()} "
            f"(once per user: about 20 minutes of CPU; progress in {log})…")
    with open(log, "ab") as err:
        proc = subprocess.run([str(ENSURE_SCRIPT)], stdout=subprocess.PIPE, stderr=err, check=False)
    path = proc.stdout.decode().strip().splitlines()[-1:] if proc.returncode == 0 else []
    if not path or not os.access(path[0], os.X_OK):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StackError(f"SeaweedFS could not be built (deploy/scripts/ensure-seaweedfs.sh); set DBAAS_WEED "
                         f"to a weed binary, or see {log}:\n{tail}")
    return path[0]


# --------------------------------------------------------------------------------------------
class ObjectStorage(Component):
    """SeaweedFS with its S3 gateway, data in ``<home>/s3``."""

    name = "s3"
    port_name = "s3"

    def _dir(self, ctx: Context) -> Path:
        return ctx.config.home / "s3"

    def identity_file(self, ctx: Context) -> Path:
        return self._dir(ctx) / "identities.json"

    def internal_ports(self, ctx: Context) -> dict[str, int]:
        first = ctx.config.port("s3_internal")
        return {name: first + i for i, name in enumerate(INTERNAL_PORTS)}

    def extra_ports(self, ctx: Context) -> list[int]:
        return list(self.internal_ports(ctx).values())

    def _identities(self, ctx: Context) -> str:
        values = ctx.secrets()
        return json.dumps({"identities": [{
            "name": "dbaas",
            "credentials": [{"accessKey": values["s3_access_key"], "secretKey": values["s3_secret_key"]}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, indent=2) + "\n"

    def prepare(self, ctx: Context) -> None:
        ensure_weed(ctx)
        (self._dir(ctx) / "data").mkdir(parents=True, exist_ok=True)
        path, text = self.identity_file(ctx), self._identities(ctx)
        if not path.exists() or path.read_text() != text:
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)

    def argv(self, ctx: Context) -> list[str]:
        weed = find_weed() or ensure_weed(ctx)
        p = self.internal_ports(ctx)
        return [weed, "-logtostderr=true", "server",
                f"-ip={HOST}", f"-ip.bind={HOST}", f"-dir={self._dir(ctx) / 'data'}",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}", "-master.telemetry=false",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
                "-volume.max=0",  # as many volumes as the disk has room for
                "-volume.preStopSeconds=1",
                "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
                "-s3", f"-s3.port={ctx.config.port('s3')}", f"-s3.port.grpc={p['s3_grpc']}",
                f"-s3.config={self.identity_file(ctx)}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs the platform does not use
                "-s3.autoCreateBucket=false"]

    def env(self, ctx: Context) -> dict[str, str]:
        return {"GOMEMLIMIT": MEMORY_LIMIT}

    def settings_fingerprint(self, ctx: Context) -> str:
        """Its arguments and identities: new credentials or ports need a new process."""
        return hashlib.sha256(json.dumps([self.argv(ctx), self.env(ctx), self._identities(ctx)]).encode()).hexdigest()

    def _client(self, ctx: Context):
        import boto3
        from botocore.config import Config

        values = ctx.secrets()
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint(ctx), region_name="us-east-1",
            aws_access_key_id=values["s3_access_key"], aws_secret_access_key=values["s3_secret_key"],
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}, signature_version="s3v4"))

    def healthy(self, ctx: Context) -> bool:
        try:
            self._client(ctx).list_buckets()
            return True
        except Exception:
            return False

    def after_healthy(self, ctx: Context) -> None:
        """The backups' bucket exists and takes a write (the volume server may register a moment
        after the gateway answers)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client(ctx)
        deadline = time.monotonic() + 60
        while True:
            try:
                names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                if BUCKET not in names:
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key=".probe", Body=b"ok")
                client.delete_object(Bucket=BUCKET, Key=".probe")
                return
            except (BotoCoreError, ClientError) as exc:
                if time.monotonic() > deadline:
                    raise StackError(f"the S3 gateway answers but bucket {BUCKET} cannot be written: {exc}; "
                                     "see `dbaas stack logs s3`") from exc
                time.sleep(1)

    def endpoint(self, ctx: Context) -> str:
        return f"http://{HOST}:{ctx.config.port('s3')}"


def object_store_env(ctx: Context) -> dict[str, str]:
    """How a process reaches the instance's object storage."""
    values = ctx.secrets()
    return {"DBAAS_S3_ENDPOINT": ObjectStorage().endpoint(ctx), "DBAAS_S3_ACCESS_KEY": values["s3_access_key"],
            "DBAAS_S3_SECRET_KEY": values["s3_secret_key"], "DBAAS_S3_BUCKET": BUCKET}


def backup_env(ctx: Context) -> dict[str, str]:
    """Object storage and the platform's backup key-encryption key: for what takes or restores
    backups, no other process."""
    return object_store_env(ctx) | {"DBAAS_BACKUP_KEK": ctx.secrets()["backup_kek"]}
