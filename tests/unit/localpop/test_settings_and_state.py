"""The agent's edges that need no server: settings from the environment, the encrypted
credentials, the state file, and how the launcher configures the agent (and only the agent)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from deploy.stack import config
from deploy.stack.base import Context
from deploy.stack.components import CONTROL_PLANE
from operators.localpop import state
from operators.localpop.agent import AgentSettings, SettingsError, encrypt_credentials, parse_admin_url
from operators.localpop.plan import Record
from operators.localpop.provisioners import Credentials
from runtime.signing import Signer

KEY = Fernet.generate_key().decode()
SIGNING_KEY = Signer.generate("pop-local").private_text()
ENV = {
    "DBAAS_SIGNING_KEY_ID": "pop-local", "DBAAS_SIGNING_KEY": SIGNING_KEY,
    "DBAAS_KAFKA_BOOTSTRAP": "127.0.0.1:20092", "DBAAS_REGISTRY_URL": "http://127.0.0.1:19081",
    "DBAAS_GITOPS_REMOTE": "file:///tmp/gitops.git", "DBAAS_STATE_DIR": "/tmp/state/localpop-agent",
    "DBAAS_DATABASE_URL": "postgresql://dbaas:p%40ss@127.0.0.1:16432/dbaas",
    "DBAAS_LOCALPOP_MARIADB_URL": "mysql://root:s3cr%2Ft@127.0.0.1:14306",
    "DBAAS_LOCALPOP_REDIS_URL": "redis://admin:r3d1s@127.0.0.1:17379",
    "DBAAS_CREDENTIALS_KEY": KEY, "DBAAS_LOCALPOP_PASSWORD_KEY": "pw-key", "DBAAS_METRICS_PORT": "20403",
}


def test_settings_come_from_the_environment_and_hide_their_secrets():
    s = AgentSettings.from_env(ENV)
    assert (s.postgres.user, s.postgres.password, s.postgres.port, s.postgres_admin_database) == (
        "dbaas", "p@ss", 16432, "dbaas")
    assert (s.mariadb.user, s.mariadb.password, s.mariadb.port) == ("root", "s3cr/t", 14306)
    assert (s.redis.user, s.redis.password, s.redis.port) == ("admin", "r3d1s", 17379)
    assert s.password_key == b"pw-key" and s.metrics_port == 20403 and s.interval == 1.0
    assert s.state_dir == Path("/tmp/state/localpop-agent") and s.pop_status_topic == "dbaas.pop.status"
    assert s.signer is not None and s.signer.key_id == "pop-local"
    for secret in ("p@ss", "s3cr/t", "r3d1s", KEY, "pw-key", SIGNING_KEY):
        assert secret not in repr(s)


@pytest.mark.parametrize("change, message", [
    ({"DBAAS_CREDENTIALS_KEY": ""}, "set DBAAS_CREDENTIALS_KEY"),
    ({"DBAAS_CREDENTIALS_KEY": "short"}, "not a Fernet key"),
    ({"DBAAS_LOCALPOP_PASSWORD_KEY": ""}, "set DBAAS_LOCALPOP_PASSWORD_KEY"),
    ({"DBAAS_LOCALPOP_REDIS_URL": "redis://127.0.0.1:1"}, "DBAAS_LOCALPOP_REDIS_URL must name a user and a host"),
    ({"DBAAS_LOCALPOP_SYNC_INTERVAL": "soon"}, "DBAAS_LOCALPOP_SYNC_INTERVAL='soon' is not a number"),
    ({"DBAAS_SIGNING_KEY": ""}, r"set DBAAS_SIGNING_KEY \(the PoP signs its reports"),
    ({"DBAAS_SIGNING_KEY": "bm90IGEga2V5"}, "DBAAS_SIGNING_KEY is not an Ed25519 key"),
    ({"DBAAS_LOCALPOP_REDIS_URL": "redis://:hunter2@"}, "DBAAS_LOCALPOP_REDIS_URL must name"),
])
def test_bad_settings_name_the_variable_to_fix(change, message):
    with pytest.raises(SettingsError, match=message) as exc:
        AgentSettings.from_env(ENV | change)
    assert "hunter2" not in str(exc.value) and SIGNING_KEY not in str(exc.value)  # never a secret


def test_servers_left_out_are_simply_not_configured():
    env = {k: v for k, v in ENV.items() if "MARIADB" not in k and "REDIS" not in k}
    s = AgentSettings.from_env(env)
    assert s.mariadb is None and s.redis is None and s.postgres is not None
    assert parse_admin_url("mysql://u:p@h", "X", 3306)[0].port == 3306


def test_credentials_travel_as_a_fernet_token_of_the_connection_json():
    creds = Credentials("s_abc", "pa55word", "127.0.0.1", 15432, "postgresql://s_abc:pa55word@127.0.0.1:15432/s_abc",
                        database="s_abc")
    token = encrypt_credentials(Fernet(KEY), creds)
    assert "pa55word" not in token
    assert json.loads(Fernet(KEY).decrypt(token)) == {
        "username": "s_abc", "password": "pa55word", "host": "127.0.0.1", "port": 15432, "database": "s_abc",
        "uri": "postgresql://s_abc:pa55word@127.0.0.1:15432/s_abc"}
    redis = Credentials("s_abc", "pw", "127.0.0.1", 16379, "redis://s_abc:pw@127.0.0.1:16379/0", key_prefix="s_abc:")
    assert json.loads(Fernet(KEY).decrypt(encrypt_credentials(Fernet(KEY), redis)))["key_prefix"] == "s_abc:"


def test_the_state_file_round_trips_privately_and_refuses_garbage(tmp_path):
    path = tmp_path / "state" / "localpop-agent.json"
    assert state.load(path) == {}
    rec = Record(path="tenants/a/local/x.yaml", tenant="a", service_id="s", name="x", engine="vitess",
                 action="apply", operation_id="op", correlation_id=None, commit="c", phase="Ready",
                 observed_at="2026-11-29T12:00:00+00:00", endpoint="127.0.0.1:1", provisioned=True)
    state.save(path, {rec.key: rec}, pop="local")
    assert state.load(path) == {rec.key: rec}
    assert os.stat(path).st_mode & 0o777 == 0o600 and not path.with_name(path.name + ".tmp").exists()
    path.write_text("{not json")
    with pytest.raises(state.StateError, match="move it away"):
        state.load(path)


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    return Context(config.resolve(tmp_path / "home", port_offset=1000), lambda: None, lambda _m: None)


def test_only_the_agent_gets_the_engine_admin_passwords_and_the_keys(ctx):
    by_name = {c.name: c for c in CONTROL_PLANE}
    agent = by_name["localpop-agent"]
    assert agent.module == "operators.localpop.agent" and agent.metrics_port(ctx) == 20403
    assert {"mariadb", "redis", "gitops"} <= set(agent.needs)
    secrets = ctx.secrets()
    env = agent.env(ctx)
    settings = AgentSettings.from_env(env)  # the launcher's env is a complete configuration
    assert settings.mariadb.password == secrets["mariadb_root_password"] and settings.mariadb.port == 14306
    assert settings.redis.password == secrets["redis_admin_password"] and settings.redis.port == 17379
    assert settings.password_key == secrets["localpop_password_key"].encode()
    Fernet(secrets["credentials_key"])  # a valid key
    for name, comp in by_name.items():
        if name == "localpop-agent":
            continue
        values = " ".join(comp.env(ctx).values())
        for secret in ("mariadb_root_password", "redis_admin_password", "credentials_key", "localpop_password_key"):
            if (name, secret) == ("api", "credentials_key"):  # it decrypts credentials for their tenant
                assert secrets[secret] in values
                continue
            assert secrets[secret] not in values, (name, secret)


def test_existing_secrets_gain_the_keys_and_keep_their_values(ctx):
    path = ctx.config.secrets_file
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"dbaas_password": "old", "credentials_key": "kept"}))
    values = ctx.secrets()
    assert values["dbaas_password"] == "old" and values["credentials_key"] == "kept"
    assert len(values["localpop_password_key"]) >= 24
