"""`dbaas stack up --kube-pop NAME`: which PoPs may run locally, how the choice is kept with the
instance, the ports each PoP takes, and that `make up` alone runs none of them."""
from __future__ import annotations

from dataclasses import replace

import pytest

from deploy.stack import config, kube
from deploy.stack.launcher import Launcher


def test_only_kubernetes_pops_are_accepted_in_catalogue_order_without_duplicates():
    assert kube.check_pops(["singapore", "frankfurt", "singapore", " "]) == ("frankfurt", "singapore")
    with pytest.raises(kube.KubeError, match="choose among lagos, johannesburg, frankfurt, ashburn, singapore"):
        kube.check_pops(["local"])


def test_the_choice_is_kept_with_the_instance(tmp_path):
    cfg = replace(config.resolve(tmp_path, 3000), kube_pops=("frankfurt",))
    config.save(cfg)
    again = config.resolve(tmp_path)
    assert again.kube_pops == ("frankfurt",) and again.port("kube") == config.DEFAULT_PORTS["kube"] + 3000


def test_a_plain_platform_runs_no_kube_pop_component(tmp_path):
    names = [c.name for c in Launcher(config.resolve(tmp_path, 3000), say=lambda _m: None).components]
    assert not any(n.startswith(("etcd-", "kube-", "pop-operator-")) for n in names)


def test_each_pop_gets_its_components_and_ports_apart(tmp_path):
    cfg = replace(config.resolve(tmp_path, 3000), kube_pops=("frankfurt", "singapore"))
    launcher = Launcher(cfg, say=lambda _m: None)
    names = [c.name for c in launcher.components]
    for pop in ("frankfurt", "singapore"):
        assert [f"etcd-{pop}", f"kube-apiserver-{pop}", f"kube-sync-{pop}", f"pop-operator-{pop}"] == [
            n for n in names if n.endswith(pop)]
    ports = [kube.KubePop(launcher.ctx, pop).port(which) for pop in ("frankfurt", "singapore")
             for which in ("apiserver", "etcd", "etcd_peer")]
    assert len(set(ports)) == 6 and not set(ports) & set(cfg.ports.values()) - {cfg.port("kube")}
    sync = next(c for c in launcher.components if c.name == "kube-sync-frankfurt")
    operator = next(c for c in launcher.components if c.name == "pop-operator-frankfurt")
    assert sync.metrics_port(launcher.ctx) != operator.metrics_port(launcher.ctx)
    assert "kube-apiserver-frankfurt" in operator.needs and "gitops" in sync.needs
