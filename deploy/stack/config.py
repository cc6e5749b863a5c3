"""Where a stack instance lives and which loopback ports it binds.

An instance is a home folder (data, logs, pid files, generated configuration) plus a port
set. The developer's platform uses ``.data/stack`` and the default ports; the test suite runs
its own instance in another folder with a port offset, so tests never touch a developer's data.
The resolved settings are written to ``<home>/stack.json`` on ``up`` so that later ``status``,
``down`` and ``logs`` calls find the same instance.

Sign-in is part of the instance too (``SignIn``, stored in the same file): the OIDC issuers the API
trusts, its default issuer, and whether the instance's development token issuer is trusted. An
``up`` changes them only when asked (``--oidc-issuer``, ``DBAAS_OIDC_ISSUERS``, …) and keeps them
otherwise. The development issuer is on in development mode — no issuer configured, the local
default — and off beside configured issuers unless explicitly enabled (``--dev-issuer``,
``DBAAS_DEV_ISSUER=1``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Chosen away from each component's usual default (9092, 8081, 8083, 5432, 8080, 3306, 6379, 8333, 16686,
# 4317/4318) so that a
# developer's own services keep their ports.
DEFAULT_PORTS: dict[str, int] = {
    "kafka": 19092,
    "controller": 19093,
    "registry": 18081,
    "registry_management": 18082,
    "connect": 18083,
    "postgres": 15432,
    "api": 18080,
    "mariadb": 13306,  # local PoP: Vitess services
    "redis": 16379,  # local PoP: DragonflyDB services
    "metrics": 19400,  # first of a small range: each control-plane process takes the next one
    "s3": 18333,  # object storage (SeaweedFS's S3 gateway)
    "s3_internal": 18334,  # first of seven: SeaweedFS's master, volume server, filer and gRPC ports
    "prometheus": 19090,
    "tracing": 16696,  # Jaeger's query API and UI
    "tracing_grpc": 16697,  # Jaeger's query gRPC API
    "otlp_grpc": 14317,  # OTLP receivers (spans in)
    "otlp_http": 14318,
    "tracing_metrics": 14319,  # Jaeger's own Prometheus metrics (spans received, exported, dropped)
    "kube": 16440,  # first of five per Kubernetes PoP started with --kube-pop (API server, etcd client, peer)
}


class ConfigError(Exception):
    """The stack cannot be configured as asked; the message says what to change."""


# The development token issuer's name (runtime.devissuer.ISSUER): no configured issuer may take it.
DEV_ISSUER_NAME = "https://dev-issuer.dbaas.invalid"


@dataclass(frozen=True)
class SignIn:
    """Who the instance's API trusts. ``dev_issuer`` None: automatic (on when no issuer is
    configured)."""

    oidc_issuers: tuple[dict, ...] = ()
    default_issuer: str | None = None
    dev_issuer: bool | None = None

    @property
    def development(self) -> bool:
        """Whether the development token issuer is trusted."""
        return self.dev_issuer if self.dev_issuer is not None else not self.oidc_issuers

    @property
    def issuer_names(self) -> list[str]:
        return [i["issuer"] for i in self.oidc_issuers]

    def to_json(self) -> dict:
        return {"oidc_issuers": list(self.oidc_issuers), "default_issuer": self.default_issuer,
                "dev_issuer": self.dev_issuer}

    @classmethod
    def from_json(cls, data: dict | None) -> SignIn:
        data = data or {}
        return cls(tuple(check_issuers(data.get("oidc_issuers") or [], "stack.json")),
                   data.get("default_issuer") or None, data.get("dev_issuer"))

    def describe(self) -> str:
        """One line for people: who may sign in."""
        names = [*self.issuer_names, *(["the development issuer"] if self.development else [])]
        if not names:
            return "the API trusts no issuer: nobody can sign in (configure one with --oidc-issuer)"
        default = f"; default issuer {self.default_issuer}" if self.default_issuer else ""
        return f"sign-in: {', '.join(names)}{default}"


def check_issuers(entries: object, source: str) -> list[dict]:
    """Issuer entries as the API reads them (``gateway/auth.py``), refused here with the reason so
    that ``up`` fails instead of an API that restarts forever."""
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: OIDC issuers must be a JSON object or a list of them")
    seen = set()
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("issuer") or not entry.get("audience") or not (
                entry.get("jwks_uri") or entry.get("jwks")):
            raise ConfigError(f"{source}: issuer entry {entry!r} needs issuer, audience and jwks_uri (or jwks), "
                              'e.g. {"issuer": "https://idp.example/realms/dbaas", "audience": "dbaas", '
                              '"jwks_uri": "https://idp.example/realms/dbaas/protocol/openid-connect/certs"}')
        if entry["issuer"] == DEV_ISSUER_NAME or entry.get("development"):
            raise ConfigError(f"{source}: {entry['issuer']} is the development issuer; turn it on with "
                              "--dev-issuer (or DBAAS_DEV_ISSUER=1) instead of configuring it")
        if entry["issuer"] in seen:
            raise ConfigError(f"{source}: issuer {entry['issuer']} is configured twice")
        seen.add(entry["issuer"])
    return entries


def parse_issuers(text: str, source: str) -> list[dict]:
    """``text``: a JSON object or list, or ``@path`` of a file holding one."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).expanduser().read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return check_issuers(json.loads(text), source)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not JSON ({exc.msg} at character {exc.pos})") from None


def _flag(value: str, name: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r}: use 1 or 0")


def change_sign_in(current: SignIn, *, issuers: list[str] | None = None, clear_issuers: bool = False,
                   dev_issuer: bool | None = None, default_issuer: str | None = None,
                   env: dict[str, str] | None = None) -> SignIn:
    """``current`` with what this ``up`` asks for: options first, then the environment
    (``DBAAS_OIDC_ISSUERS``, ``DBAAS_DEV_ISSUER``, ``DBAAS_DEFAULT_ISSUER``); nothing asked, nothing
    changed."""
    env = os.environ if env is None else env
    oidc, default, dev = current.oidc_issuers, current.default_issuer, current.dev_issuer
    if clear_issuers:
        oidc = ()
    if issuers:
        oidc = tuple(entry for text in issuers for entry in parse_issuers(text, "--oidc-issuer"))
        check_issuers(list(oidc), "--oidc-issuer")
    elif not clear_issuers and env.get("DBAAS_OIDC_ISSUERS", "").strip():
        oidc = tuple(parse_issuers(env["DBAAS_OIDC_ISSUERS"].strip(), "DBAAS_OIDC_ISSUERS"))
    if dev_issuer is not None:
        dev = dev_issuer
    elif env.get("DBAAS_DEV_ISSUER", "").strip():
        dev = _flag(env["DBAAS_DEV_ISSUER"], "DBAAS_DEV_ISSUER")
    if default_issuer is not None or env.get("DBAAS_DEFAULT_ISSUER", "").strip():
        default = (default_issuer if default_issuer is not None else env["DBAAS_DEFAULT_ISSUER"]).strip() or None
    changed = SignIn(oidc, default, dev)
    trusted = [*changed.issuer_names, *([DEV_ISSUER_NAME] if changed.development else [])]
    if changed.default_issuer and changed.default_issuer not in trusted:
        raise ConfigError(f"default issuer {changed.default_issuer} is not one the API trusts "
                          f"({', '.join(trusted) or 'none'}); configure it with --oidc-issuer first")
    return changed


@dataclass(frozen=True)
class StackConfig:
    home: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    cache: Path = REPO_ROOT / ".cache" / "stack"
    kafka_heap: str = "768m"
    connect_heap: str = "512m"
    registry_heap: str = "384m"
    sign_in: SignIn = field(default_factory=SignIn)
    # Kubernetes PoPs run locally (an API server and etcd each, the GitOps sync, the PoP operator):
    # none unless asked (`up --kube-pop NAME`, DBAAS_KUBE_POPS); kept for later `up`s.
    kube_pops: tuple[str, ...] = ()
    # instances each of the command processor, projector and saga (`up --replicas N`,
    # DBAAS_STACK_REPLICAS): they share the partitions through their consumer groups; kept.
    replicas: int = 1

    # -- derived locations -------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    @property
    def keyring_file(self) -> Path:
        """The public keys the instance trusts for signed commands and PoP reports."""
        return self.home / "keyring.json"

    @property
    def gitops_remote(self) -> Path:
        return self.home / "gitops.git"

    def port(self, name: str) -> int:
        return self.ports[name]

    def to_json(self) -> dict:
        data = asdict(self)
        data["home"] = str(self.home)
        data["cache"] = str(self.cache)
        data["sign_in"] = self.sign_in.to_json()
        data["kube_pops"] = list(self.kube_pops)
        return data


def default_home() -> Path:
    return Path(os.environ.get("DBAAS_STACK_HOME", REPO_ROOT / ".data" / "stack")).resolve()


def resolve(home: str | os.PathLike | None = None, port_offset: int | None = None) -> StackConfig:
    """Settings for an instance: stored ones when the instance exists, else defaults shifted by
    ``port_offset`` (or ``DBAAS_PORT_OFFSET``) and overridden per port by ``DBAAS_<NAME>_PORT``."""
    home_path = Path(home).resolve() if home else default_home()
    cache = Path(os.environ.get("DBAAS_STACK_CACHE", REPO_ROOT / ".cache" / "stack")).resolve()
    state = home_path / "stack.json"
    stored = json.loads(state.read_text()) if state.exists() else None
    if stored and port_offset is None:
        # Ports added to the platform after this instance was created follow its offset.
        offset = stored["ports"]["kafka"] - DEFAULT_PORTS["kafka"]
        ports = {name: port + offset for name, port in DEFAULT_PORTS.items()} | stored["ports"]
        return StackConfig(home=home_path, ports=ports, cache=cache, sign_in=SignIn.from_json(stored.get("sign_in")),
                           kube_pops=tuple(stored.get("kube_pops") or ()), replicas=int(stored.get("replicas") or 1))
    offset = port_offset if port_offset is not None else int(os.environ.get("DBAAS_PORT_OFFSET", "0"))
    ports = {}
    for name, port in DEFAULT_PORTS.items():
        env = os.environ.get(f"DBAAS_{name.upper()}_PORT")
        ports[name] = int(env) if env else port + offset
        if not 1024 <= ports[name] <= 65535:
            raise ConfigError(f"port for {name} would be {ports[name]}; choose an offset that keeps "
                              "every port between 1024 and 65535")
    sign_in = SignIn.from_json(stored.get("sign_in")) if stored else SignIn()
    kube_pops = tuple(stored.get("kube_pops") or ()) if stored else ()
    replicas = int(stored.get("replicas") or 1) if stored else 1
    return replace(StackConfig(home=home_path, cache=cache, sign_in=sign_in, kube_pops=kube_pops, replicas=replicas),
                   ports=ports)


def save(config: StackConfig) -> None:
    config.home.mkdir(parents=True, exist_ok=True)
    tmp = config.state_file.with_name(config.state_file.name + ".tmp")
    tmp.write_text(json.dumps(config.to_json(), indent=2) + "\n")
    os.replace(tmp, config.state_file)
