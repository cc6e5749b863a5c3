"""Object storage in the launcher: where the weed binary is found (the same order as
deploy/scripts/ensure-seaweedfs.sh), the instance's ports and credentials, loopback only, and what
the local PoP agent is given. No server runs here."""
from __future__ import annotations

import json
import os
import stat

import pytest

from deploy.stack import config, objectstore
from deploy.stack.base import Context
from deploy.stack.components import CONTROL_PLANE, INFRASTRUCTURE, localpop_agent_env
from deploy.stack.objectstore import ObjectStorage, backup_env, find_weed, weed_version
from operators.backup.sealing import Kek
from operators.backup.store import ObjectStore

SCRIPT = (config.REPO_ROOT / "deploy" / "scripts" / "ensure-seaweedfs.sh").read_text()


def _executable(path, text="#!/bin/sh\necho 'version 0.0 test'\n"):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def weed(tmp_path, monkeypatch):
    """A stand-in `weed` (answers `weed version`), named by DBAAS_WEED."""
    path = _executable(tmp_path / "weed")
    monkeypatch.setenv("DBAAS_WEED", str(path))
    return path


@pytest.fixture
def ctx(tmp_path, monkeypatch, weed):
    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    return Context(config.resolve(tmp_path / "home", port_offset=1000), lambda: None, lambda _m: None)


def test_the_pinned_version_is_read_from_the_wrapper_module():
    assert weed_version().startswith("v0.0.0-2026")
    assert "deploy/tools/seaweedfs/go.mod" in SCRIPT


def test_weed_is_found_in_the_scripts_order(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setenv("DBAAS_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DBAAS_WEED", raising=False)
    assert find_weed() is None
    cached = tmp_path / "cache" / f"weed-{weed_version()}"
    cached.parent.mkdir()
    _executable(cached)
    assert find_weed() == str(cached)
    (tmp_path / "empty-path").mkdir()
    on_path = _executable(tmp_path / "empty-path" / "weed")
    assert find_weed() == str(on_path)
    override = _executable(tmp_path / "my-weed")
    monkeypatch.setenv("DBAAS_WEED", str(override))
    assert find_weed() == str(override)
    monkeypatch.setenv("DBAAS_WEED", str(tmp_path / "missing"))
    with pytest.raises(Exception, match="DBAAS_WEED"):
        find_weed()


def test_the_cache_lives_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("DBAAS_TOOLS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert objectstore.tools_cache() == tmp_path / "xdg" / "dbaas" / "tools"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert not objectstore.tools_cache().is_relative_to(config.REPO_ROOT)
    assert '${XDG_CACHE_HOME:-${HOME}/.cache}/dbaas/tools' in SCRIPT and "DBAAS_TOOLS_CACHE" in SCRIPT


def test_started_with_the_other_infrastructure_before_the_agent():
    assert any(isinstance(c, ObjectStorage) for c in INFRASTRUCTURE)
    agent = next(c for c in CONTROL_PLANE if c.name == "localpop-agent")
    assert "s3" in agent.needs


def test_every_listener_is_on_loopback_on_the_instances_ports(ctx):
    comp = ObjectStorage()
    argv = comp.argv(ctx)
    assert ctx.config.port("s3") == 19333 and comp.endpoint(ctx) == "http://127.0.0.1:19333"
    ports = [ctx.config.port("s3"), *comp.extra_ports(ctx)]
    assert len(set(ports)) == 8 and all(19333 <= p <= 19340 for p in ports)
    assert not set(ports) & {p for n, p in ctx.config.ports.items() if n not in ("s3", "s3_internal")}
    for port in ports:
        assert any(arg.endswith(f"={port}") for arg in argv), port
    assert {"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-filer", "-s3"} <= set(argv)
    assert f"-dir={ctx.config.home / 's3' / 'data'}" in argv


def test_credentials_are_the_instances_and_stay_off_the_command_line(ctx):
    comp = ObjectStorage()
    comp.prepare(ctx)
    values = ctx.secrets()
    access, secret = values["s3_access_key"], values["s3_secret_key"]
    assert len(access) == 20 and access.isalnum() and len(secret) == 40 and secret.isalnum()
    assert access not in " ".join(comp.argv(ctx)) and secret not in " ".join(comp.argv(ctx))
    path = comp.identity_file(ctx)
    assert os.stat(path).st_mode & 0o777 == 0o600
    (identity,) = json.loads(path.read_text())["identities"]
    assert identity["credentials"] == [{"accessKey": access, "secretKey": secret}]
    assert comp.settings_fingerprint(ctx) == comp.settings_fingerprint(ctx)


def test_the_agent_gets_object_storage_and_the_backup_kek(ctx):
    env = localpop_agent_env(ctx)
    assert backup_env(ctx).items() <= env.items()
    assert env["DBAAS_S3_ENDPOINT"] == "http://127.0.0.1:19333" and env["DBAAS_S3_BUCKET"] == "dbaas-backups"
    store = ObjectStore.from_env(env)
    assert (store.endpoint, store.bucket) == ("http://127.0.0.1:19333", "dbaas-backups")
    kek = Kek.from_env(env)
    assert len(kek.key) == 32 and env["DBAAS_BACKUP_KEK"] == ctx.secrets()["backup_kek"]
