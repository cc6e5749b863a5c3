"""Render a service's change-data-capture connector for the GitOps repository: one Strimzi
``KafkaConnector`` per service, the same for every PoP.

Role: the saga's entry point for CDC. :func:`render_connector` returns the text the committer
writes to ``layout.cdc_path(tenant, pop, service_id)``; :func:`connector_config` is the Debezium
configuration inside it. In a Kubernetes PoP Strimzi's Connect operator registers it with the
PoP's Kafka Connect (``strimzi.io/cluster: dbaas-cdc``, namespace ``dbaas-cdc``); in PoP local the
local PoP agent does (`operators.localpop.cdc`).

What only the PoP knows stays a Kafka config-provider reference, resolved where the connector
runs: the database's address and the connector's login are ``${secrets:<namespace>/<connector>:<key>}``
(Strimzi's ``KubernetesSecretConfigProvider``: the Secret the PoP creates for the connector, keys
``host``, ``port``, ``username``, ``password``, ``database``, ``connection``), the schema
registry's address ``${env:DBAAS_CONVERTER_REGISTRY_URL}`` (the Connect workers' environment).

Topics follow the platform's names (``dbaas.cdc.{engine}.{tenant}.…``): Debezium's own names
are rewritten by a ``RegexRouter`` where they differ, and Connect creates each topic with the
partitions and configs of its pattern in ``deploy/topics.yaml`` (passed in as ``topic``). Values
and keys are Avro through the schema registry (Apicurio's converter writing the Confluent wire
format: 0, the 4-byte schema id, the body), so a plain Confluent deserializer reads them.

Equal arguments give equal bytes (:func:`gitops.manifests.dump_all`), so committing twice
changes nothing. May import only the standard library and ``gitops``: plain values in, text out.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gitops import manifests

API_VERSION = "kafka.strimzi.io/v1"
KIND = "KafkaConnector"
CONNECT_NAMESPACE = "dbaas-cdc"
CONNECT_CLUSTER = "dbaas-cdc"
# the registry as Apicurio's converter speaks to it (its v2 API), from the Connect workers' environment
REGISTRY_REF = "${env:DBAAS_CONVERTER_REGISTRY_URL}"
AVRO_CONVERTER = "io.apicurio.registry.utils.converter.AvroConverter"
# how often a connector writes to its database's change stream even when nothing changes, so
# that an idle service's replication slot keeps advancing (a slot that does not retains WAL)
HEARTBEAT_MS = "10000"


class CdcRenderError(ValueError):
    """The connector cannot be rendered for these values (permanent: same values, same refusal)."""


@dataclass(frozen=True)
class TopicSettings:
    """How Connect creates the connector's topics: the CDC pattern's partitions and configs."""

    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


def slot_name(connector: str) -> str:
    """The PostgreSQL replication slot and publication of ``connector`` (identifiers take no `-`)."""
    return connector.replace("-", "_")


def secret_ref(tenant: str, connector: str, key: str) -> str:
    return "${secrets:" + f"tenant-{tenant}/{connector}:{key}" + "}"


def connector_config(*, tenant: str, engine: str, service_name: str, connector: str, tables: Sequence[str],
                     topic: TopicSettings, kubernetes: bool) -> dict[str, str]:
    """Debezium's configuration of ``connector`` for a service of ``engine`` (``kubernetes``: the
    engine itself; otherwise PoP local's stand-in server: PostgreSQL for yugabyte, MariaDB for
    vitess)."""
    ref = lambda key: secret_ref(tenant, connector, key)
    prefix = f"dbaas.cdc.{engine}.{tenant}"
    config: dict[str, str] = {
        "topic.prefix": prefix,
        "heartbeat.interval.ms": HEARTBEAT_MS,
        "key.converter": AVRO_CONVERTER,
        "value.converter": AVRO_CONVERTER,
        **{f"{side}.converter.{k}": v for side in ("key", "value") for k, v in _avro().items()},
        "topic.creation.default.partitions": str(topic.partitions),
        "topic.creation.default.replication.factor": str(topic.replication_factor),
        **{f"topic.creation.default.{k}": str(v) for k, v in sorted(topic.config.items())},
    }
    match engine:
        case "yugabyte":
            config |= {
                "connector.class": ("io.debezium.connector.postgresql.YugabyteDBConnector" if kubernetes
                                    else "io.debezium.connector.postgresql.PostgresConnector"),
                "plugin.name": "yboutput" if kubernetes else "pgoutput",
                "database.hostname": ref("host"), "database.port": ref("port"),
                "database.user": ref("username"), "database.password": ref("password"),
                "database.dbname": ref("database"),
                "slot.name": slot_name(connector), "publication.name": slot_name(connector),
                # the connector creates its publication for the tables it captures (FOR ALL
                # TABLES would need a superuser) and brings it up to date when it starts
                "publication.autocreate.mode": "filtered",
                # Debezium names topics {prefix}.{schema}.{table}; the platform's are {prefix}.{table}
                **_route(rf"{re.escape(prefix)}\.[^.]+\.([^.]+)", f"{prefix}.$1"),
            }
            if tables:
                config["table.include.list"] = ",".join(_qualified(t) for t in tables)
        case "vitess":
            if kubernetes:
                config |= {
                    "connector.class": "io.debezium.connector.vitess.VitessConnector",
                    "vitess.keyspace": service_name,
                    "database.hostname": ref("host"), "database.port": ref("port"),
                    "database.user": ref("username"), "database.password": ref("password"),
                }
            else:
                config |= {
                    "connector.class": "io.debezium.connector.mariadb.MariaDbConnector",
                    "database.hostname": ref("host"), "database.port": ref("port"),
                    "database.user": ref("username"), "database.password": ref("password"),
                    "database.include.list": ref("database"),
                    "database.server.id": str(server_id(connector)),
                    "schema.history.internal.kafka.topic": schema_history_topic(connector),
                    "schema.history.internal.kafka.bootstrap.servers": "${env:DBAAS_KAFKA_BOOTSTRAP}",
                    "include.schema.changes": "false",
                    # MariaDB names topics {prefix}.{database}.{table}; the database is the
                    # service's own (a hashed name): the keyspace in the topic is the service's name
                    **_route(rf"{re.escape(prefix)}\.[^.]+\.([^.]+)", f"{prefix}.{service_name}.$1"),
                }
            if tables:
                config["table.include.list"] = ",".join(rf"[^.]+\.{re.escape(t)}" for t in tables)
        case "mongodb":
            config |= {
                "connector.class": "io.debezium.connector.mongodb.MongoDbConnector",
                "mongodb.connection.string": ref("connection"),
            }
            if tables:
                config["collection.include.list"] = ",".join(tables)
        case "scylla":
            if not tables:
                raise CdcRenderError("ScyllaDB's CDC source reads the tables it is given: name them")
            config |= {
                "connector.class": "com.scylladb.cdc.debezium.connector.ScyllaConnector",
                "scylla.cluster.ip.addresses": ref("connection"),
                "scylla.user": ref("username"), "scylla.password": ref("password"),
                "scylla.name": prefix,
                "scylla.table.names": ",".join(tables),
            }
        case _:
            raise CdcRenderError(f"engine {engine!r} has no change-data-capture source connector")
    return dict(sorted(config.items()))


def render_connector(*, tenant: str, pop: str, engine: str, service_id: str, service_name: str, connector: str,
                     tables: Sequence[str], topic: TopicSettings, kubernetes: bool) -> str:
    """The service's ``KafkaConnector`` as YAML for ``layout.cdc_path(tenant, pop, service_id)``."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", connector):
        raise CdcRenderError(f"connector name {connector!r} is not a DNS-1123 label")
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": connector,
            "namespace": CONNECT_NAMESPACE,
            "labels": {
                "strimzi.io/cluster": CONNECT_CLUSTER,
                "app.kubernetes.io/managed-by": "dbaas",
                "dbaas.io/tenant": tenant,
                "dbaas.io/service-id": service_id,
                "dbaas.io/engine": engine,
                "dbaas.io/pop": pop,
            },
            # Argo CD applies it after the service's own objects and prunes it before them
            "annotations": {"argocd.argoproj.io/sync-wave": "10"},
        },
        "spec": {
            "class": "",  # from the config below
            "tasksMax": 1,
            # Strimzi restarts a failed connector or task with a growing back-off (the local PoP
            # agent does the same); after these it stays failed and the PoP reports it
            "autoRestart": {"enabled": True, "maxRestarts": 7},
            "state": "running",
            "config": {},
        },
    }
    config = connector_config(tenant=tenant, engine=engine, service_name=service_name, connector=connector,
                              tables=tables, topic=topic, kubernetes=kubernetes)
    doc["spec"]["class"] = config.pop("connector.class")
    doc["spec"]["config"] = config
    return manifests.dump_all([doc])


def server_id(connector: str) -> int:
    """The MySQL/MariaDB replica id a connector reads the binlog as: stable per connector, unique
    in practice, clear of the small ids servers themselves use."""
    return 100_000 + int(hashlib.sha256(connector.encode()).hexdigest()[:8], 16) % 4_000_000_000


def schema_history_topic(connector: str) -> str:
    """Where a binlog connector keeps the table definitions it has seen (one partition, kept
    forever; created by the connector)."""
    return f"dbaas.cdc-history.{connector}"


def _qualified(table: str) -> str:
    return table if "." in table else f"public.{table}"


def _avro() -> dict[str, str]:
    return {
        "apicurio.registry.url": REGISTRY_REF,
        "apicurio.registry.auto-register": "true",
        "apicurio.registry.find-latest": "true",
        # the Confluent wire format: the 4-byte id in the value, no Apicurio headers
        "apicurio.registry.as-confluent": "true",
        "apicurio.registry.use-id": "contentId",
        "apicurio.registry.headers.enabled": "false",
    }


def _route(regex: str, replacement: str) -> dict[str, str]:
    return {
        "transforms": "route",
        "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
        "transforms.route.regex": regex,
        "transforms.route.replacement": replacement,
    }
