"""What every part of the local platform shares: the context a component is prepared and started
in, the `Component` base, and helpers for Debian packages, ports and Java. Both the platform's own
services (`components`) and the engines' servers (`engines`) build on it.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from deploy.stack import kafka_security
from deploy.stack.artifacts import Artifacts
from deploy.stack.config import HOST, StackConfig
from runtime import devissuer, sealing, signing
from schemas.catalog import KUBERNETES_POPS

# Who signs what the instance publishes: key id -> (keyring kind, the PoP it speaks for).
SIGNING_KEYS: dict[str, tuple[str, str | None]] = {
    "gateway": ("gateway", None),  # commands of signed-in users
    "platform": ("platform", None),  # the sagas' system commands
    "pop-local": ("pop", "local"),  # PoP local's status reports
    # each Kubernetes PoP's operator signs its own reports (run locally with `up --kube-pop NAME`)
    **{f"pop-{pop}": ("pop", pop) for pop in KUBERNETES_POPS},
}

_UPPER_DIGITS = string.ascii_uppercase + string.digits
_LETTERS_DIGITS = string.ascii_letters + string.digits


class StackError(Exception):
    """A component cannot be set up or started; the message says what to do."""


@dataclass
class Context:
    """What components share while the launcher runs."""

    config: StackConfig
    artifacts_loader: Callable[[], Artifacts]
    say: Callable[[str], None] = print
    topic_report: object = None
    # Every component this launcher runs (what Prometheus scrapes is generated from them).
    components: tuple[Component, ...] = ()
    _artifacts: Artifacts | None = field(default=None, repr=False)

    @property
    def artifacts(self) -> Artifacts:
        if self._artifacts is None:
            self._artifacts = self.artifacts_loader()
        return self._artifacts

    SECRET_NAMES = ("postgres_superuser_password", "dbaas_password", "mariadb_root_password",
                    "redis_admin_password", "credentials_key", "localpop_password_key",
                    devissuer.SECRET_NAME, *(f"signing_key_{holder}" for holder in SIGNING_KEYS),
                    "s3_access_key", "s3_secret_key", "backup_kek", *kafka_security.SECRET_NAMES,
                    "subscription_seal_key")
    # Secrets that are keys rather than passwords: the format their user expects.
    SECRET_FORMATS: ClassVar[dict[str, Callable[[], str]]] = {
        # A Fernet key (32 random bytes, url-safe base64): PoP reports encrypt credentials with it.
        "credentials_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        # The development token issuer's signing key (EC P-256, PEM): `dbaas auth login --dev`.
        devissuer.SECRET_NAME: devissuer.generate_key,
        # Each publishing process's message-signing key (Ed25519, base64 of the raw private bytes).
        **{f"signing_key_{holder}": (lambda h=holder: signing.Signer.generate(h).private_text())
           for holder in SIGNING_KEYS},
        # The object storage's S3 credentials: letters and digits, as S3 tools expect.
        "s3_access_key": lambda: "DBAAS" + "".join(secrets.choice(_UPPER_DIGITS) for _ in range(15)),
        "s3_secret_key": lambda: "".join(secrets.choice(_LETTERS_DIGITS) for _ in range(40)),
        # The backups' key-encryption key: <kek_id>:<base64 of 32 random bytes> (operators.backup.sealing).
        "backup_kek": lambda: f"kek-{secrets.token_hex(4)}:{base64.b64encode(secrets.token_bytes(32)).decode()}",
        # The subscription saga's X25519 key: tenant subscriptions' passwords are sealed to it.
        "subscription_seal_key": sealing.generate,
    }

    def secrets(self) -> dict[str, str]:
        """The instance's generated passwords; names added to the platform later are generated
        into an existing file without touching the others."""
        path = self.config.secrets_file
        if path.exists():
            values = json.loads(path.read_text())
            if all(name in values for name in self.SECRET_NAMES):
                return values
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two launchers must not generate different ones
            values = json.loads(path.read_text()) if path.exists() else {}
            values |= {n: self.SECRET_FORMATS.get(n, lambda: secrets.token_urlsafe(24))()
                       for n in self.SECRET_NAMES if n not in values}
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(values, fh)
            os.replace(tmp, path)
        return values


# Another apt or dpkg (unattended-upgrades on a fresh machine, a second terminal) may hold the
# lock: wait for it, up to ten minutes, instead of failing at once.
APT_LOCK_TIMEOUT = 600
# Every Debian package the launcher may install (the README lists them too).
DEBIAN_PACKAGES = ("postgresql-15", "mariadb-server", "redis-server", "prometheus")


def apt_commands(package: str, recommends: bool = True) -> list[list[str]]:
    """The apt-get calls that install ``package``, each waiting for a held dpkg/apt lock."""
    wait = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}"]
    extra = [] if recommends else ["--no-install-recommends"]
    return [["apt-get", *wait, "update", "-q"], ["apt-get", *wait, "install", "-y", "-q", *extra, package]]


def apt_install(ctx: Context, package: str, what: str, recommends: bool = True) -> None:
    """Install a Debian package as root, or say what to install when not root."""
    if os.geteuid() != 0:
        raise StackError(f"{what} is not installed: run `sudo apt-get install -y {package}` and start again")
    ctx.say(f"installing {what} from Debian (first run only; waits for another apt to finish)…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in apt_commands(package, recommends):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed; is the Debian mirror reachable, and did no other "
                             f"apt hold its lock for more than {APT_LOCK_TIMEOUT // 60} minutes?\n"
                             f"{proc.stderr[-2000:]}")


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def java_major(java: str | None = None) -> int | None:
    java = java or shutil.which("java")
    if java is None or not Path(java).exists():
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    for token in out.split('"')[1:2]:
        head = token.split(".")[0]
        return int(head) if head.isdigit() else None
    return None


class Component:
    name: str = ""
    port_name: str | None = None
    stop_signal: int = signal.SIGTERM
    needs: tuple[str, ...] = ()
    has_process = True

    def prepare(self, ctx: Context) -> None:
        """One-time, idempotent preparation before the first start."""

    def argv(self, ctx: Context) -> list[str]:
        raise NotImplementedError

    def env(self, ctx: Context) -> dict[str, str]:
        return {}

    def user(self, ctx: Context) -> str | None:
        return None

    def healthy(self, ctx: Context) -> bool:
        raise NotImplementedError

    def after_healthy(self, ctx: Context) -> None:
        """Idempotent set-up that needs the running component (databases, roles)."""

    def endpoint(self, ctx: Context) -> str | None:
        return None

    def extra_ports(self, ctx: Context) -> list[int]:
        """Ports it binds besides ``port_name``'s: ``up`` checks they are free before starting it."""
        return []

    def metrics_url(self, ctx: Context) -> str | None:
        """Where it serves Prometheus metrics (scraped by the platform's Prometheus); None: nowhere."""
        return None

    def settings_fingerprint(self, ctx: Context) -> str | None:
        """A digest of the settings the running process was started with; when it differs from
        the recorded one, ``up`` restarts the process. None: never restarted for its settings."""
        return None

    def reset_paths(self, ctx: Context) -> list[Path]:
        return []


def find_java(min_major: int) -> str | None:
    """A ``java`` of at least ``min_major``: $DBAAS_JAVA_<N>_HOME, then PATH, then /usr/lib/jvm."""
    candidates = []
    if os.environ.get(f"DBAAS_JAVA{min_major}_HOME"):
        candidates.append(Path(os.environ[f"DBAAS_JAVA{min_major}_HOME"]) / "bin" / "java")
    if shutil.which("java"):
        candidates.append(Path(shutil.which("java")))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += sorted(jvm.glob("*/bin/java"), reverse=True)
    for java in candidates:
        major = java_major(str(java))
        if major is not None and major >= min_major:
            return str(java)
    return None


def traversable_by_others(path: Path) -> bool:
    for part in [path, *path.parents]:
        if part.exists() and not os.stat(part).st_mode & 0o001:
            return False
    return True
