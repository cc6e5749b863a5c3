"""Settings of the projector and rebuild processes, read from the environment by the composition root.

Owns the variable names (`DBAAS_KAFKA_BOOTSTRAP`, `DBAAS_REGISTRY_URL`, `DBAAS_DATABASE_URL`,
`DBAAS_EVENTS_TOPIC`, `DBAAS_EVENTS_DLQ_TOPIC`, `DBAAS_METRICS_PORT`, `DBAAS_PROJECTIONS_BATCH_SIZE`,
`DBAAS_PROJECTIONS_TELEMETRY`, `DBAAS_PROJECTIONS_SNAPSHOT_EVERY`, `DBAAS_KEYRING`)
and the conversion of a plain `postgresql://` DSN into the SQLAlchemy URL of the psycopg 3 driver.
Imports `projections.errors` only.
"""

from __future__ import annotations

import hashlib

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from projections.errors import ConfigurationError
from runtime.kafka import KafkaAccess, access_from_env
from runtime.settings import SettingsError, env, read

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


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("is not an integer") from None
    if value < 0:
        raise ValueError("must not be negative")
    return value


def default_group(topic: str, database_url: str) -> str:
    """`dbaas-projections-` and a digest of the topic and the database (host, port, name)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    where = f"{topic}|{url.host or ''}:{url.port or ''}/{url.database or ''}"
    return f"dbaas-projections-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    database_url: str = env("DBAAS_DATABASE_URL", repr=False)  # any postgresql:// DSN; see `sqlalchemy_url`
    events_topic: str = env("DBAAS_EVENTS_TOPIC", DEFAULT_TOPIC)
    dlq_topic: str | None = env("DBAAS_EVENTS_DLQ_TOPIC", None, parse=str)  # None: `<events_topic>.dlq`
    metrics_port: int = env("DBAAS_METRICS_PORT", 0, parse=_count)  # 0: no metrics endpoint
    batch_size: int = env("DBAAS_PROJECTIONS_BATCH_SIZE", 500, parse=_count)  # messages per transaction at most
    # the telemetry read models (service metrics, alerts: `projections.telemetry`) from the
    # per-organization topics; the launcher turns it on for the platform's projector
    telemetry: bool = env("DBAAS_PROJECTIONS_TELEMETRY", False)
    # events of an organization between two snapshots of its rows (time travel replays from the
    # latest: `projections.snapshots`); 0: none
    snapshot_every: int = env("DBAAS_PROJECTIONS_SNAPSHOT_EVERY", 1000, parse=_count)
    keyring: Path | None = env("DBAAS_KEYRING", None, parse=Path)  # PoP keys: samples count when signed
    batch_timeout: float = 0.05  # seconds to wait for a batch to fill
    # The consumer group the projectors of one read model share the topic's partitions in (never
    # committed: positions live in PostgreSQL). Unset: named after the topic and the database, so
    # that every instance writing the same read model joins the same group, and a projector of
    # another database (a reference, a test's) never takes partitions from them.
    consumer_group: str = env("DBAAS_PROJECTIONS_GROUP", "")

    def __post_init__(self) -> None:
        if not self.consumer_group:
            object.__setattr__(self, "consumer_group", default_group(self.events_topic, self.sqlalchemy_url))

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.events_topic}.dlq"

    @property
    def sqlalchemy_url(self) -> str:
        return sqlalchemy_url(self.database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        try:
            return read(cls, environ)
        except SettingsError as exc:
            raise ConfigurationError(str(exc)) from None
