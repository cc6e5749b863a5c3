"""Settings of the projector and rebuild processes, read from the environment by the composition root.

Owns the variable names (`DBAAS_KAFKA_BOOTSTRAP`, `DBAAS_REGISTRY_URL`, `DBAAS_DATABASE_URL`,
`DBAAS_EVENTS_TOPIC`, `DBAAS_EVENTS_DLQ_TOPIC`, `DBAAS_METRICS_PORT`, `DBAAS_PROJECTIONS_BATCH_SIZE`)
and the conversion of a plain `postgresql://` DSN into the SQLAlchemy URL of the psycopg 3 driver.
Imports `projections.errors` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from projections.errors import ConfigurationError

DEFAULT_TOPIC = "dbaas.events"


def sqlalchemy_url(dsn: str) -> str:
    """`postgresql://u:p@h/db` (or `postgres://`) -> `postgresql+psycopg://u:p@h/db`; a URL naming a
    driver already is returned unchanged."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise ConfigurationError(f"database URL {dsn!r} is not a URL; expected postgresql://user:pw@host/db")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if scheme.startswith("postgresql+"):
        return dsn
    raise ConfigurationError(f"database URL scheme {scheme!r} is not PostgreSQL; expected postgresql://")


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    registry_url: str
    database_url: str  # any postgresql:// DSN; see `sqlalchemy_url`
    events_topic: str = DEFAULT_TOPIC
    dlq_topic: str | None = None  # None: `<events_topic>.dlq`
    metrics_port: int = 0  # 0: no metrics endpoint
    batch_size: int = 500  # messages per transaction at most
    batch_timeout: float = 0.05  # seconds to wait for a batch to fill
    consumer_group: str = "dbaas-projections"  # never joined nor committed: positions live in PostgreSQL

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.events_topic}.dlq"

    @property
    def sqlalchemy_url(self) -> str:
        return sqlalchemy_url(self.database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        missing = [n for n in ("DBAAS_KAFKA_BOOTSTRAP", "DBAAS_REGISTRY_URL", "DBAAS_DATABASE_URL")
                   if not env.get(n)]
        if missing:
            raise ConfigurationError(f"set {', '.join(missing)}: the projector needs Kafka, the schema "
                                     "registry and PostgreSQL (see `dbaas stack status --json`)")
        return cls(
            kafka_bootstrap=env["DBAAS_KAFKA_BOOTSTRAP"],
            registry_url=env["DBAAS_REGISTRY_URL"],
            database_url=env["DBAAS_DATABASE_URL"],
            events_topic=env.get("DBAAS_EVENTS_TOPIC") or DEFAULT_TOPIC,
            dlq_topic=env.get("DBAAS_EVENTS_DLQ_TOPIC") or None,
            metrics_port=_int(env, "DBAAS_METRICS_PORT", 0),
            batch_size=_int(env, "DBAAS_PROJECTIONS_BATCH_SIZE", 500),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
    if value < 0:
        raise ConfigurationError(f"{name}={raw!r} must not be negative")
    return value
