"""Where a stack instance lives and which loopback ports it binds.

An instance is a home folder (data, logs, pid files, generated configuration) plus a port
set. The developer's platform uses ``.data/stack`` and the default ports; the test suite runs
its own instance in another folder with a port offset, so tests never touch a developer's data.
The resolved settings are written to ``<home>/stack.json`` on ``up`` so that later ``status``,
``down`` and ``logs`` calls find the same instance.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Chosen away from each component's usual default (9092, 8081, 8083, 5432, 8080, 3306, 6379) so that a
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
}


class ConfigError(Exception):
    """The stack cannot be configured as asked; the message says what to change."""


@dataclass(frozen=True)
class StackConfig:
    home: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    cache: Path = REPO_ROOT / ".cache" / "stack"
    kafka_heap: str = "768m"
    connect_heap: str = "512m"
    registry_heap: str = "384m"

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
        return StackConfig(home=home_path, ports=ports, cache=cache)
    offset = port_offset if port_offset is not None else int(os.environ.get("DBAAS_PORT_OFFSET", "0"))
    ports = {}
    for name, port in DEFAULT_PORTS.items():
        env = os.environ.get(f"DBAAS_{name.upper()}_PORT")
        ports[name] = int(env) if env else port + offset
        if not 1024 <= ports[name] <= 65535:
            raise ConfigError(f"port for {name} would be {ports[name]}; choose an offset that keeps "
                              "every port between 1024 and 65535")
    return replace(StackConfig(home=home_path, cache=cache), ports=ports)


def save(config: StackConfig) -> None:
    config.home.mkdir(parents=True, exist_ok=True)
    config.state_file.write_text(json.dumps(config.to_json(), indent=2) + "\n")
