"""The CDC connector as the saga commits it: a Strimzi KafkaConnector valid against the upstream
CRD (`../shared/crds/strimzi/`), for every engine with a Debezium source, with the platform's
topic names, Avro values through the registry, and nothing the PoP alone knows written in it."""

from __future__ import annotations

from typing import Any

import pytest
from crdschema import CrdIndex, SchemaViolation

from gitops import cdc, layout, manifests

TOPIC = cdc.TopicSettings(3, 3, {"retention.ms": "604800000", "min.insync.replicas": "2"})
SERVICE_ID = "0d9b8a4e-5f7c-4c1e-9d2a-1b3c5d7e9f01"
CONNECTOR = "cdc-0123456789abcdef0123"


def render(engine: str, *, kubernetes: bool = True, tables: tuple[str, ...] = ("orders",),
           pop: str = "frankfurt") -> dict[str, Any]:
    text = cdc.render_connector(tenant="acme", pop=pop, engine=engine, service_id=SERVICE_ID,
                                service_name="shop", connector=CONNECTOR, tables=tables, topic=TOPIC,
                                kubernetes=kubernetes)
    [doc] = manifests.parse_all(text)
    return doc


@pytest.mark.parametrize("engine", ["yugabyte", "vitess", "mongodb", "scylla"])
@pytest.mark.parametrize("kubernetes", [True, False], ids=["kubernetes", "local"])
def test_the_connector_is_a_valid_kafkaconnector(crd_index: CrdIndex, engine: str, kubernetes: bool) -> None:
    doc = render(engine, kubernetes=kubernetes)

    crd_index.validate(doc)
    assert (doc["apiVersion"], doc["kind"]) == ("kafka.strimzi.io/v1", "KafkaConnector")
    assert doc["metadata"]["labels"]["strimzi.io/cluster"] == cdc.CONNECT_CLUSTER
    assert doc["spec"]["autoRestart"]["enabled"] is True
    assert all(isinstance(v, str) for v in doc["spec"]["config"].values())


def test_a_misspelled_field_is_caught_by_the_crd(crd_index: CrdIndex) -> None:
    doc = render("yugabyte")
    doc["spec"]["taskMax"] = 1

    with pytest.raises(SchemaViolation, match="taskMax"):
        crd_index.validate(doc)


def test_yugabyte_topics_are_the_platforms_names() -> None:
    config = render("yugabyte", kubernetes=False)["spec"]["config"]

    assert config["topic.prefix"] == "dbaas.cdc.yugabyte.acme"
    assert config["transforms.route.replacement"] == "dbaas.cdc.yugabyte.acme.$1"
    assert config["table.include.list"] == "public.orders"
    assert config["slot.name"] == config["publication.name"] == "cdc_0123456789abcdef0123"
    assert config["topic.creation.default.retention.ms"] == "604800000"
    assert config["topic.creation.default.partitions"] == "3"


def test_vitess_topics_name_the_keyspace_after_the_service() -> None:
    config = render("vitess", kubernetes=False)["spec"]["config"]

    assert config["transforms.route.replacement"] == "dbaas.cdc.vitess.acme.shop.$1"


def test_values_are_avro_in_the_confluent_wire_format() -> None:
    config = render("yugabyte")["spec"]["config"]

    assert config["value.converter"] == config["key.converter"] == cdc.AVRO_CONVERTER
    assert config["value.converter.apicurio.registry.as-confluent"] == "true"
    assert config["value.converter.apicurio.registry.headers.enabled"] == "false"


def test_the_pops_secrets_stay_references() -> None:
    config = render("yugabyte")["spec"]["config"]

    assert config["database.password"] == "${secrets:tenant-acme/" + CONNECTOR + ":password}"
    assert config["value.converter.apicurio.registry.url"] == cdc.REGISTRY_REF


def test_every_table_when_none_is_named() -> None:
    assert "table.include.list" not in render("yugabyte", tables=())["spec"]["config"]


def test_scylla_needs_its_tables_named() -> None:
    with pytest.raises(cdc.CdcRenderError, match="name them"):
        render("scylla", tables=())


@pytest.mark.parametrize("engine", ["dragonfly", "aerospike"])
def test_an_engine_without_a_source_is_refused(engine: str) -> None:
    with pytest.raises(cdc.CdcRenderError):
        render(engine)


def test_renders_are_deterministic() -> None:
    args = {"tenant": "acme", "pop": "local", "engine": "yugabyte", "service_id": SERVICE_ID, "service_name": "shop",
                "connector": CONNECTOR, "tables": ("orders",), "topic": TOPIC, "kubernetes": False}
    assert cdc.render_connector(**args) == cdc.render_connector(**args)


def test_the_file_goes_to_the_pops_cdc_folder() -> None:
    path = layout.cdc_path("acme", "local", SERVICE_ID)

    assert path == f"tenants/acme/local/cdc/{SERVICE_ID}.yaml"
    assert layout.parse_tenant_path(path) == layout.TenantPath("cdc", "acme", "local", SERVICE_ID)
