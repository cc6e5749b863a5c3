"""What a newcomer meets first: apt waits for a held lock, the README names every Debian package
the launcher installs, and every listener the platform opens is on loopback."""
from __future__ import annotations

import socket

from deploy.stack import base, config
from projections.metrics import Metrics

README = (config.REPO_ROOT / "README.md").read_text()


def test_every_apt_get_waits_for_a_held_lock():
    for cmd in base.apt_commands("redis-server"):
        assert cmd[:3] == ["apt-get", "-o", f"DPkg::Lock::Timeout={base.APT_LOCK_TIMEOUT}"], cmd
    for path in (config.REPO_ROOT / ".ci" / "run", config.REPO_ROOT / "Makefile"):
        for line in path.read_text().splitlines():
            if "apt-get " in line and not line.lstrip().startswith("#"):
                assert "DPkg::Lock::Timeout=" in line, f"{path.name}: {line.strip()}"


def test_the_readme_lists_every_debian_package_the_launcher_installs():
    for package in base.DEBIAN_PACKAGES:
        assert f"`{package}`" in README, package


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_projectors_metrics_listen_on_loopback_only():
    server = Metrics().serve(_free_port())
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


def test_no_source_binds_every_interface():
    roots = ["cli", "deploy", "gateway", "operators", "processors", "projections", "runtime"]
    offenders = [str(path) for root in roots for path in (config.REPO_ROOT / root).rglob("*.py")
                 if "0.0.0.0" in path.read_text()]
    assert offenders == []
