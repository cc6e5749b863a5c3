"""Sign-in belongs to the platform instance: the issuers an `up` is given are stored with the
instance and kept by later `up`s; the development issuer is trusted only in development mode or
when explicitly enabled; a changed setting restarts the process that reads it; the CLI keeps one
login per instance."""
from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest

from cli import auth, client, tokens
from deploy.stack import config
from deploy.stack.base import Component, Context
from deploy.stack.components import api_env
from deploy.stack.launcher import Launcher
from runtime import devissuer

IDP = {"issuer": "https://idp.example/realms/dbaas", "audience": "dbaas",
       "jwks_uri": "https://idp.example/realms/dbaas/protocol/openid-connect/certs"}
OTHER = {**IDP, "issuer": "https://other.example"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("DBAAS_OIDC_ISSUERS", "DBAAS_DEV_ISSUER", "DBAAS_DEFAULT_ISSUER", "DBAAS_PORT_OFFSET",
                 "DBAAS_API_URL", "DBAAS_TOKEN", "DBAAS_STACK_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("sign_in, development, reason", [
    (config.SignIn(), True, "nothing configured: development mode, the local default"),
    (config.SignIn((IDP,)), False, "an issuer configured: the development issuer is off"),
    (config.SignIn((IDP,), dev_issuer=True), True, "explicitly enabled beside configured issuers"),
    (config.SignIn((), dev_issuer=False), False, "explicitly disabled: nobody signs in"),
])
def test_the_development_issuer_is_trusted_only_in_development_or_when_enabled(sign_in, development, reason):
    assert sign_in.development is development, reason


@pytest.mark.parametrize("kwargs, env, expected, reason", [
    ({}, {}, config.SignIn((IDP,)), "nothing asked: the stored issuers stay"),
    ({}, {"DBAAS_OIDC_ISSUERS": json.dumps([OTHER])}, config.SignIn((OTHER,)), "the environment replaces them"),
    ({"issuers": [json.dumps(OTHER)]}, {"DBAAS_OIDC_ISSUERS": json.dumps([IDP])}, config.SignIn((OTHER,)),
     "an option wins over the environment"),
    ({"clear_issuers": True}, {}, config.SignIn(), "forgotten on request"),
    ({}, {"DBAAS_OIDC_ISSUERS": "[]"}, config.SignIn(), "an empty list clears them too"),
    ({"dev_issuer": True}, {}, config.SignIn((IDP,), dev_issuer=True), "the development issuer enabled"),
    ({}, {"DBAAS_DEV_ISSUER": "1"}, config.SignIn((IDP,), dev_issuer=True), "enabled from the environment"),
    ({"default_issuer": IDP["issuer"]}, {}, config.SignIn((IDP,), IDP["issuer"]), "a default issuer"),
])
def test_an_up_changes_sign_in_only_as_asked(kwargs, env, expected, reason):
    assert config.change_sign_in(config.SignIn((IDP,)), env=env, **kwargs) == expected, reason


@pytest.mark.parametrize("kwargs, error, reason", [
    ({"issuers": ['{"issuer": "https://x"}']}, "needs issuer, audience and jwks_uri", "an incomplete entry"),
    ({"issuers": ["not json"]}, "is not JSON", "not JSON"),
    ({"issuers": [json.dumps({**IDP, "issuer": devissuer.ISSUER})]}, "--dev-issuer", "the dev issuer by hand"),
    ({"issuers": [json.dumps(IDP), json.dumps(IDP)]}, "configured twice", "the same issuer twice"),
    ({"default_issuer": "https://nobody.example"}, "not one the API trusts", "a default nobody trusts"),
    ({"dev_issuer": None}, "DBAAS_DEV_ISSUER='maybe'", "an unreadable flag"),
])
def test_a_bad_sign_in_setting_is_refused_with_what_to_change(kwargs, error, reason):
    env = {"DBAAS_DEV_ISSUER": "maybe"} if reason == "an unreadable flag" else {}
    with pytest.raises(config.ConfigError, match=error):
        config.change_sign_in(config.SignIn(), env=env, **kwargs)


def test_issuers_from_a_file(tmp_path):
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps([IDP, OTHER]))
    assert config.change_sign_in(config.SignIn(), issuers=[f"@{path}"], env={}).issuer_names == [
        IDP["issuer"], OTHER["issuer"]]


def test_sign_in_is_stored_with_the_instance_and_kept(tmp_path):
    cfg = config.resolve(tmp_path / "home", port_offset=100)
    config.save(replace(cfg, sign_in=config.SignIn((IDP,), IDP["issuer"], True)))
    assert config.resolve(tmp_path / "home").sign_in == config.SignIn((IDP,), IDP["issuer"], True)
    # also when the ports are given again, as the test platform's every `up` does
    assert config.resolve(tmp_path / "home", port_offset=100).sign_in.issuer_names == [IDP["issuer"]]


def test_the_api_trusts_exactly_the_instance_sign_in(tmp_path, monkeypatch):
    monkeypatch.setenv("DBAAS_OIDC_ISSUERS", json.dumps([OTHER]))  # a stray variable never reaches it
    monkeypatch.setenv("DBAAS_DEFAULT_ISSUER", OTHER["issuer"])
    cfg = config.resolve(tmp_path / "home", port_offset=0)
    for sign_in, names in [(config.SignIn(), [devissuer.ISSUER]), (config.SignIn((IDP,)), [IDP["issuer"]]),
                           (config.SignIn((IDP,), dev_issuer=True), [IDP["issuer"], devissuer.ISSUER])]:
        env = api_env(Context(replace(cfg, sign_in=sign_in), lambda: None, lambda _m: None))
        assert [i["issuer"] for i in json.loads(env["DBAAS_OIDC_ISSUERS"])] == names
        assert env["DBAAS_DEFAULT_ISSUER"] == ""


class _Sleeper(Component):
    """A long-running process whose settings come from the instance's sign-in."""

    name = "sleeper"

    def argv(self, ctx):
        return [sys.executable, "-c", "import time; time.sleep(60)"]

    def healthy(self, ctx):
        return True

    def settings_fingerprint(self, ctx):
        return json.dumps(ctx.config.sign_in.to_json(), sort_keys=True)


def test_a_running_process_is_restarted_when_its_settings_change_and_only_then(tmp_path):
    cfg = config.resolve(tmp_path / "home", port_offset=0)
    said: list[str] = []

    def launcher(sign_in):
        return Launcher(replace(cfg, sign_in=sign_in), say=said.append, components=[_Sleeper()])

    first = launcher(config.SignIn())
    try:
        first._start(_Sleeper())
        pid = first.pidfile(_Sleeper()).pid()
        launcher(config.SignIn())._start(_Sleeper())
        assert first.pidfile(_Sleeper()).pid() == pid, "same settings: the process is left alone"
        launcher(config.SignIn((IDP,)))._start(_Sleeper())
        assert first.pidfile(_Sleeper()).pid() not in (None, pid)
        assert any("settings changed: restarting" in line for line in said)
    finally:
        first.down()


def test_each_platform_instance_keeps_its_own_login(tmp_path, monkeypatch):
    monkeypatch.setenv("DBAAS_CONFIG_DIR", str(tmp_path / "cfg"))
    a, b = "http://127.0.0.1:18080", "http://127.0.0.1:19080"
    tokens.store(a, "token-a")
    tokens.store(b, "token-b")
    assert (tokens.stored_token(a), tokens.stored_token(b + "/")) == ("token-a", "token-b")
    assert tokens.stored_token("http://127.0.0.1:20080") is None
    assert oct(tokens.token_file(a).stat().st_mode & 0o777) == "0o600"


def test_the_api_of_a_home_is_found_from_its_stored_ports(tmp_path):
    config.save(config.resolve(tmp_path / "b", port_offset=2000))
    assert client.api_url(home=str(tmp_path / "b")) == f"http://127.0.0.1:{config.DEFAULT_PORTS['api'] + 2000}"


def test_login_with_the_development_issuer_is_refused_where_it_is_not_trusted(tmp_path):
    home = tmp_path / "home"
    config.save(replace(config.resolve(home, port_offset=0), sign_in=config.SignIn((IDP,))))
    (home / "secrets.json").write_text(json.dumps({devissuer.SECRET_NAME: devissuer.generate_key()}))
    with pytest.raises(client.ApiError, match="does not trust the development issuer"):
        auth._dev_key(str(home))
