"""The broker's principals and ACL table, and the one place clients take SASL settings from."""
from __future__ import annotations

import pytest

from deploy.stack import kafka_security
from runtime.kafka import KafkaAccess, access_from_env, consumer_config, producer_config
from runtime.settings import SettingsError, read


def writers(topic: str) -> set[str]:
    return {process for process, grants in kafka_security.PLATFORM_ACLS.items()
            for g in grants if g.kind == "topic" and "WRITE" in g.operations
            and (topic.startswith(g.name) if g.prefixed else topic == g.name)}


@pytest.mark.parametrize("topic, allowed, reason", [
    ("dbaas.commands", {"api", "saga", "scheduler", "subscriptions"},
     "the gateway signs users' commands, the others system ones"),
    ("dbaas.events", {"command-processor"}, "the command processor is the only writer of the log"),
    ("dbaas.commands.dlq", {"command-processor"}, "it dead-letters what it cannot judge"),
    ("dbaas.pop.status", {"localpop-agent", "pop-lagos", "pop-johannesburg", "pop-frankfurt", "pop-ashburn",
                          "pop-singapore"}, "each PoP's reports: the local agent, the Kubernetes PoPs' operators"),
    ("dbaas.audit.acme", {"audit"}, "the audit writer fans out"),
    ("dbaas.metrics.acme", {"localpop-agent"}, "the PoP samples its services"),
    ("dbaas.alerts.acme", {"alerts", "scheduler"}, "the alert rules and failed backups"),
    ("dbaas.cdc.yugabyte.acme.orders", {"connect"}, "Debezium through Connect"),
])
def test_who_writes_each_topic(topic, allowed, reason):
    assert writers(topic) == allowed, reason


def test_no_grant_is_wider_than_a_name_or_prefix():
    for process, grants in kafka_security.PLATFORM_ACLS.items():
        for g in grants:
            assert g.name not in ("", "*") and "ALL" not in g.operations, (process, g)
            # only the subscription saga changes credentials and ACLs
            assert g.kind != "cluster" or g.operations == ("DESCRIBE",) or process == "subscriptions", (process, g)


def test_every_process_principal_has_a_generated_password():
    for process in kafka_security.PLATFORM_ACLS:
        assert kafka_security.secret_name(process) in kafka_security.SECRET_NAMES
    assert kafka_security.principal("admin") == kafka_security.ADMIN
    assert kafka_security.principal("saga") == "dbaas-saga"


def test_the_broker_authenticates_and_authorizes_every_listener():
    props = kafka_security.server_properties("admin-pw", "controller-pw")
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "super.users=User:dbaas-admin;User:controller" in props
    assert 'username="dbaas-admin" password="admin-pw"' in props
    assert 'user_controller="controller-pw"' in props


def test_a_principal_reaches_every_preset():
    access = KafkaAccess("127.0.0.1:1", "dbaas-saga", "s3cret")
    for conf in (consumer_config(access, "g"), producer_config(access), access.client()):
        assert conf["security.protocol"] == "SASL_PLAINTEXT" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.username"] == "dbaas-saga" and conf["sasl.password"] == "s3cret"
    assert access.aiokafka()["sasl_plain_password"] == "s3cret"
    assert "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required " \
           'username="dbaas-saga" password="s3cret";' in access.java("producer.")
    assert "s3cret" not in repr(access) and "s3cret" not in str(access)
    assert "security.protocol" not in producer_config("127.0.0.1:1")  # a bare bootstrap: no principal


def test_the_principal_comes_from_the_environment():
    assert access_from_env({}) is None
    access = access_from_env({"DBAAS_KAFKA_BOOTSTRAP": "k:1", "DBAAS_KAFKA_USERNAME": "dbaas-audit",
                              "DBAAS_KAFKA_PASSWORD": "pw"})
    assert (access.bootstrap, access.username, access.password) == ("k:1", "dbaas-audit", "pw")
    with pytest.raises(ValueError, match="go together"):
        access_from_env({"DBAAS_KAFKA_BOOTSTRAP": "k:1", "DBAAS_KAFKA_USERNAME": "dbaas-audit"})


def test_a_missing_username_is_named_without_printing_the_password():
    from processors.settings import ProcessorSettings

    with pytest.raises(SettingsError, match="DBAAS_KAFKA_USERNAME and DBAAS_KAFKA_PASSWORD") as err:
        read(ProcessorSettings, {"DBAAS_KAFKA_BOOTSTRAP": "k:1", "DBAAS_KAFKA_PASSWORD": "hunter2",
                                 "DBAAS_REGISTRY_URL": "http://r", "DBAAS_KEYRING": "/k.json"})
    assert "hunter2" not in str(err.value)
