"""What the launcher shows carries no passwords: DSNs and the instance's secrets become ***."""
from __future__ import annotations

import json

import pytest

from deploy.stack import config
from deploy.stack.launcher import Launcher
from deploy.stack.redact import redact_dsn, redact_text


@pytest.mark.parametrize("dsn, shown, reason", [
    ("postgresql://dbaas:s3cr-et_X@127.0.0.1:15432/dbaas", "postgresql://dbaas:***@127.0.0.1:15432/dbaas",
     "the password of a URL"),
    ("mysql://root:a%40b%2Fc@127.0.0.1:13306", "mysql://root:***@127.0.0.1:13306", "URL-encoded characters"),
    ("redis://admin:pw@127.0.0.1:16379/0", "redis://admin:***@127.0.0.1:16379/0", "another scheme"),
    ("host=127.0.0.1 user=dbaas password=s3cret dbname=dbaas", "host=127.0.0.1 user=dbaas password=*** dbname=dbaas",
     "a key=value connection string"),
    ("http://127.0.0.1:18080", "http://127.0.0.1:18080", "no user, nothing to hide"),
    ("postgresql://dbaas@127.0.0.1/dbaas", "postgresql://dbaas@127.0.0.1/dbaas", "a user without a password"),
    ("127.0.0.1:19092", "127.0.0.1:19092", "host:port is not a user:password"),
    (None, None, "no endpoint"),
])
def test_dsn_passwords_are_masked(dsn, shown, reason):
    assert redact_dsn(dsn) == shown, reason


def test_text_loses_every_known_secret_and_every_dsn_password():
    text = ("connecting to postgresql://dbaas:abc@h:1/db\n"
            "STATEMENT: alter role dbaas password 'generated-secret-value-1'\n")
    out = redact_text(text, ["generated-secret-value-1", "short"])
    assert "abc" not in out and "generated-secret-value-1" not in out
    assert out.count("***") == 2


def test_launcher_messages_and_statuses_hide_the_instance_secrets(tmp_path):
    cfg = config.resolve(tmp_path / "home", port_offset=0)
    cfg.home.mkdir()
    cfg.secrets_file.write_text(json.dumps({"dbaas_password": "a-very-long-generated-secret"}))
    said: list[str] = []
    launcher = Launcher(cfg, say=said.append, components=[])
    launcher.say("healthy postgresql://dbaas:a-very-long-generated-secret@127.0.0.1:15432/dbaas")
    launcher.say("the key is a-very-long-generated-secret")
    assert said == ["healthy postgresql://dbaas:***@127.0.0.1:15432/dbaas", "the key is ***"]


class _FakeDatabase:
    """A component whose endpoint carries a password, always healthy, with no process."""

    name, port_name, has_process, needs = "postgres", None, False, ()

    def healthy(self, ctx):
        return True

    def endpoint(self, ctx):
        return "postgresql://dbaas:pw-of-the-instance@127.0.0.1:15432/dbaas"


def test_status_shows_the_password_only_when_asked(tmp_path):
    launcher = Launcher(config.resolve(tmp_path / "home", port_offset=0), say=lambda _m: None,
                        components=[_FakeDatabase()])
    assert launcher.status(show_secrets=False)[0].endpoint == "postgresql://dbaas:***@127.0.0.1:15432/dbaas"
    assert "pw-of-the-instance" in launcher.status(show_secrets=True)[0].endpoint
