"""`dbaas stack up --replicas N`: more instances of the components that share partitions, each with
its own instance number (so its own transactional id), state folder and metrics port, as its
component's Kafka principal; kept with the instance; left out with its component."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest

from deploy.stack import config
from deploy.stack.components import MAX_REPLICAS, SCALED_OUT, ControlPlaneProcess, replica_components
from deploy.stack.launcher import Launcher
from processors.audit import AuditSettings
from processors.settings import ProcessorSettings
from projections.settings import Settings, default_group
from runtime.settings import read


def test_a_plain_platform_runs_one_of_each(tmp_path):
    names = [c.name for c in Launcher(config.resolve(tmp_path, 3000), say=lambda _m: None).components]
    assert not [n for n in names if n.rsplit("-", 1)[-1].isdigit()]


def test_each_instance_has_its_number_principal_state_and_metrics_port(tmp_path, monkeypatch):
    cfg = replace(config.resolve(tmp_path, 3000), replicas=3)
    launcher = Launcher(cfg, say=lambda _m: None)
    scaled = [c for c in launcher.components if isinstance(c, ControlPlaneProcess) and c.instance_of]
    assert sorted(c.name for c in scaled) == sorted(f"{n}-{i}" for n in SCALED_OUT for i in (1, 2))
    monkeypatch.setattr("deploy.stack.components.write_own_keys", lambda ctx: None)
    monkeypatch.setattr(launcher.ctx, "secrets", lambda: KEYS)
    ports = {c.metrics_port(launcher.ctx) for c in launcher.components if isinstance(c, ControlPlaneProcess)
             and c.metrics_slot is not None}
    assert len(ports) == len([c for c in launcher.components if isinstance(c, ControlPlaneProcess)
                              and c.metrics_slot is not None]), "two processes share a metrics port"
    for c in scaled:
        base, instance = c.instance_of, c.name.removeprefix(f"{c.instance_of}-")
        env = c.env(launcher.ctx)
        assert env["DBAAS_INSTANCE"] == instance and c.principal == base
        assert env["DBAAS_STATE_DIR"].endswith(f"state/{c.name}")


KEYS = defaultdict(lambda: "secret")  # the instance's secrets: any value will do here


def test_the_count_is_kept_with_the_instance_and_bounded_by_the_partitions(tmp_path):
    config.save(replace(config.resolve(tmp_path, 3000), replicas=2))
    assert config.resolve(tmp_path).replicas == 2
    with pytest.raises(config.ConfigError, match="between 1 and 12"):
        replica_components(MAX_REPLICAS + 1)


def test_a_component_left_out_is_left_out_with_its_instances(tmp_path, monkeypatch):
    monkeypatch.setenv("DBAAS_STACK_WITHOUT", "saga")
    launcher = Launcher(replace(config.resolve(tmp_path, 3000), replicas=2), say=lambda _m: None)
    names = [c.name for c in launcher.components]
    assert "saga" not in names and "saga-1" not in names and "projector-1" in names
    assert {"saga", "saga-1"} <= {c.name for c in launcher.left_out}


def test_transactional_ids_are_one_per_instance_unless_given():
    base = {"DBAAS_KAFKA_BOOTSTRAP": "k:1", "DBAAS_REGISTRY_URL": "http://r", "DBAAS_KEYRING": "/k"}
    assert read(ProcessorSettings, base).transactional_id == "dbaas-command-processor-0"
    assert read(ProcessorSettings, base | {"DBAAS_INSTANCE": "3"}).transactional_id == "dbaas-command-processor-3"
    assert read(ProcessorSettings, base | {"DBAAS_PROCESSOR_TXN_ID": "mine"}).transactional_id == "mine"
    assert read(AuditSettings, base | {"DBAAS_INSTANCE": "1"}).transactional_id == "dbaas-audit-1"
    with pytest.raises(Exception, match="DBAAS_INSTANCE must be an instance number"):
        read(ProcessorSettings, base | {"DBAAS_INSTANCE": "two"})


def test_projectors_of_one_read_model_share_a_group_and_of_another_do_not():
    one = Settings("k:1", "http://r", "postgresql://u:secret@db:5432/dbaas")
    same = Settings("k:1", "http://r", "postgresql://other:pw@db:5432/dbaas")  # another login, same database
    other_db = Settings("k:1", "http://r", "postgresql://u:secret@db:5432/reference")
    other_topic = Settings("k:1", "http://r", "postgresql://u:secret@db:5432/dbaas", events_topic="test.events")
    assert one.consumer_group == same.consumer_group == default_group("dbaas.events", one.sqlalchemy_url)
    assert one.consumer_group.startswith("dbaas-projections-") and "secret" not in one.consumer_group
    assert len({one.consumer_group, other_db.consumer_group, other_topic.consumer_group}) == 3
    assert Settings("k:1", "http://r", "postgresql://db/x", consumer_group="mine").consumer_group == "mine"
