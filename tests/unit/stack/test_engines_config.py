"""The local PoP's servers in the launcher (ports, arguments, secrets, the Redis ACL file) and
the provisioners' pure parts (names, password forms, what a repr shows). No server runs here."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re

import pytest

from deploy.stack import config
from deploy.stack.base import Context
from deploy.stack.components import INFRASTRUCTURE
from deploy.stack.engines import MariaDB, Redis
from operators.localpop import provisioners as p


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    return Context(config.resolve(tmp_path / "home", port_offset=1000), lambda: None, lambda _m: None)


def test_engine_ports_are_configured_away_from_the_usual_ones():
    assert config.DEFAULT_PORTS["mariadb"] not in (3306, 3307) and config.DEFAULT_PORTS["redis"] != 6379
    by_name = {c.name: c for c in INFRASTRUCTURE}
    assert isinstance(by_name["mariadb"], MariaDB) and isinstance(by_name["redis"], Redis)
    assert all(c.port_name in config.DEFAULT_PORTS for c in INFRASTRUCTURE if c.port_name)


def test_existing_secrets_gain_new_names_and_keep_old_values(ctx):
    path = ctx.config.secrets_file
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"postgres_superuser_password": "old-su", "dbaas_password": "old-dbaas"}))
    values = ctx.secrets()
    assert values["postgres_superuser_password"] == "old-su" and values["dbaas_password"] == "old-dbaas"
    assert len(values["mariadb_root_password"]) >= 24 and len(values["redis_admin_password"]) >= 24
    assert ctx.secrets() == values == json.loads(path.read_text())
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_endpoints_show_host_and_port_only(ctx):
    secrets = ctx.secrets()
    for comp, port in ((MariaDB(), 14306), (Redis(), 17379)):
        assert comp.endpoint(ctx) == f"127.0.0.1:{port}"
        assert secrets[comp.SECRET] not in comp.endpoint(ctx)


def test_mariadb_reads_no_system_option_file_and_binds_loopback(ctx):
    argv = MariaDB().argv(ctx)
    assert argv[1] == "--no-defaults"  # must come first to be honoured
    home = ctx.config.home
    assert {"--bind-address=127.0.0.1", "--port=14306", "--skip-networking=0", "--binlog-format=ROW",
            f"--socket={MariaDB().base(ctx) / 'mysqld.sock'}"} <= set(argv)
    assert str(home) in MariaDB().data_dir(ctx).as_posix() or MariaDB().data_dir(ctx).is_relative_to("/var/tmp")
    assert ctx.secrets()["mariadb_root_password"] not in " ".join(argv)


@pytest.fixture
def redis_ctx(ctx, monkeypatch):
    monkeypatch.setattr(Redis, "user", lambda self, ctx: None)  # no `redis` user needed here
    Redis().base(ctx).mkdir(parents=True)
    return ctx


def _digest(ctx) -> str:
    return hashlib.sha256(ctx.secrets()["redis_admin_password"].encode()).hexdigest()


@pytest.mark.parametrize("reason, existing, rewritten", [
    ("a new instance has no ACL file yet", None, True),
    ("what ACL SAVE wrote back, canonical form and tenant users included",
     ("user admin on #{digest} ~* &* +@all\nuser default off resetchannels -@all\n"
      "user s_abc on sanitize-payload #00 ~s_abc:* resetchannels &s_abc:* +@all -@dangerous\n"), False),
    ("the admin password changed", ("user admin on #0000 ~* &* +@all\nuser default off -@all\n"
                                    "user s_abc on #00 ~s_abc:* +@all\n"), True),
    ("the default user could log in without a password",
     "user admin on #{digest} ~* &* +@all\nuser default on nopass ~* &* +@all\n", True),
])
def test_redis_acl_file_fixes_admin_and_default_and_keeps_tenants(redis_ctx, reason, existing, rewritten):
    path = Redis().acl_file(redis_ctx)
    if existing is not None:
        path.write_text(existing.replace("{digest}", _digest(redis_ctx)))
    before = path.read_text() if path.exists() else None
    Redis()._ensure_acl_file(redis_ctx)
    after = path.read_text()
    assert (after != before) is rewritten, reason
    lines = after.splitlines()
    assert f"user admin on #{_digest(redis_ctx)} ~* &* +@all" in lines or not rewritten, reason
    assert any(line.startswith("user default off") and "nopass" not in line for line in lines), reason
    if existing and "s_abc" in existing:
        assert sum(line.split()[1] == "s_abc" for line in lines) == 1, reason
    assert redis_ctx.secrets()["redis_admin_password"] not in after, reason
    if rewritten:
        assert os.stat(path).st_mode & 0o077 == 0, reason


# -- provisioners' pure parts -------------------------------------------------------------------
def test_service_identifier_is_stable_short_and_valid_everywhere():
    ident = p.service_identifier("acme", "0b5c4c1e-0000-4000-8000-000000000001")
    assert ident == p.service_identifier("acme", "0b5c4c1e-0000-4000-8000-000000000001")
    assert re.fullmatch(r"s_[0-9a-f]{24}", ident) and len(ident) <= 32


@pytest.mark.parametrize("reason, one, other", [
    ("same service id in two tenants", ("acme", "s1"), ("globex", "s1")),
    ("a dash moved between tenant and service id", ("a-b", "c"), ("a", "b-c")),
    ("concatenation would collide", ("ab", "c"), ("a", "bc")),
])
def test_service_identifiers_differ(reason, one, other):
    assert p.service_identifier(*one) != p.service_identifier(*other), reason


@pytest.mark.parametrize("tenant, service_id", [("", "s1"), ("acme", ""), ("  ", "s1")])
def test_empty_tenant_or_service_is_refused(tenant, service_id):
    with pytest.raises(p.ProvisioningFailed, match="non-empty"):
        p.service_identifier(tenant, service_id)


def test_keyed_passwords_are_stable_per_server_and_service_and_unkeyed_ones_are_fresh():
    key = b"k"
    assert p._password(key, "redis", "s_1") == p._password(key, "redis", "s_1")
    assert len({p._password(key, "redis", "s_1"), p._password(key, "mariadb", "s_1"),
                p._password(key, "redis", "s_2"), p._password(b"other", "redis", "s_1")}) == 4
    assert p._password(None, "redis", "s_1") != p._password(None, "redis", "s_1")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", p._password(key, "redis", "s_1"))


def test_mysql_native_hash_matches_the_servers_password_function():
    # SELECT PASSWORD('password') on MySQL 5.7 / MariaDB
    assert p.mysql_native_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


def test_scram_verifier_lets_the_password_prove_itself():
    verifier = p.scram_sha256_verifier("correct horse")
    m = re.fullmatch(r"SCRAM-SHA-256\$4096:([^$]+)\$([^:]+):(.+)", verifier)
    salt, stored = base64.b64decode(m.group(1)), base64.b64decode(m.group(2))
    salted = hashlib.pbkdf2_hmac("sha256", b"correct horse", salt, 4096)
    assert hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest() == stored
    assert p.scram_sha256_verifier("correct horse") != verifier  # a fresh salt each time


def test_reprs_never_show_passwords():
    creds = p.Credentials("u", "pa55word", "127.0.0.1", 1, "redis://u:pa55word@127.0.0.1:1/0", key_prefix="u:")
    admin = p.AdminEndpoint("127.0.0.1", 1, "root", "pa55word")
    assert "pa55word" not in repr(creds) and "pa55word" not in repr(admin)


def test_uri_escapes_what_urls_reserve():
    assert p._uri("mysql", "u", "a/b@c:d", "h", 1, "db") == "mysql://u:a%2Fb%40c%3Ad@h:1/db"


@pytest.mark.parametrize("comp, package", [(MariaDB(), "mariadb-server"), (Redis(), "redis-server")])
def test_a_missing_server_is_named_with_its_package_when_not_root(ctx, monkeypatch, comp, package):
    from deploy.stack import engines
    from deploy.stack.base import StackError

    monkeypatch.setattr(engines.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(type(comp), "SERVER", ctx.config.home / "no-such-server")
    with pytest.raises(StackError, match=f"sudo apt-get install -y {package}"):
        comp.prepare(ctx)


def test_a_home_the_service_user_cannot_enter_moves_the_data_out_and_reset_removes_it(ctx, monkeypatch):
    from deploy.stack import engines

    monkeypatch.setattr(engines.os, "geteuid", lambda: 0)
    monkeypatch.setattr(engines, "traversable_by_others", lambda path: False)
    for comp in (MariaDB(), Redis()):
        base = comp.base(ctx)
        assert base.parent.parent == engines.Path("/var/tmp/dbaas-stack") and base.name == comp.name
        assert comp.reset_paths(ctx) == [base.parent]
    monkeypatch.setattr(engines, "traversable_by_others", lambda path: True)
    assert MariaDB().base(ctx) == ctx.config.home / "mariadb" and MariaDB().reset_paths(ctx) == []
