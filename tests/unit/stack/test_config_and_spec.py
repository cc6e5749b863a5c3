"""Launcher settings, the topic spec and the Docker path agree with each other."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from deploy.stack import config
from deploy.stack.processes import PidFile, spawn, stop
from runtime import topics

REPO = config.REPO_ROOT


def test_port_offset_shifts_every_default_port(tmp_path, monkeypatch):
    monkeypatch.delenv("DBAAS_PORT_OFFSET", raising=False)
    cfg = config.resolve(tmp_path / "a", port_offset=1000)
    assert cfg.ports == {k: v + 1000 for k, v in config.DEFAULT_PORTS.items()}


def test_single_port_override_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DBAAS_KAFKA_PORT", "29999")
    cfg = config.resolve(tmp_path / "a", port_offset=0)
    assert cfg.port("kafka") == 29999 and cfg.port("postgres") == config.DEFAULT_PORTS["postgres"]


def test_out_of_range_offset_is_refused_with_advice(tmp_path):
    with pytest.raises(config.ConfigError, match="between 1024 and 65535"):
        config.resolve(tmp_path / "a", port_offset=60000)


def test_stored_instance_keeps_its_ports_and_gains_new_ones(tmp_path):
    cfg = config.resolve(tmp_path / "a", port_offset=500)
    stored = cfg.to_json()
    del stored["ports"]["registry_management"]  # an instance made before that port existed
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "stack.json").write_text(json.dumps(stored))
    again = config.resolve(tmp_path / "a")
    assert again.ports == cfg.ports


def test_topic_spec_matches_the_architecture_contract():
    fixed, patterns, rf = topics.load("local")
    by_name = {t.name: t for t in fixed}
    assert rf == 1 and topics.load("production")[2] == 3
    assert by_name["dbaas.events"].config["retention.ms"] == "-1"
    assert by_name["dbaas.commands"].config["retention.ms"] == str(7 * 86400_000)
    assert patterns["dbaas.audit.{tenant}"]["config"]["retention.ms"] == str(90 * 86400_000)
    assert topics.load("production")[0][0].config["min.insync.replicas"] == "2"


@pytest.mark.parametrize("parts, error", [
    ({"tenant": "Acme"}, "cannot be part of a topic name"),
    ({"tenant": "a/b"}, "cannot be part of a topic name"),
    ({}, "needs tenant"),
], ids=["uppercase", "slash", "missing-part"])
def test_topic_for_rejects_bad_parts(parts, error):
    with pytest.raises(topics.TopicSpecError, match=error):
        topics.topic_for("dbaas.audit.{tenant}", **parts)


def test_compose_file_mirrors_the_launcher():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    host_ports = {name: int(svc["ports"][0].split(":")[1]) for name, svc in compose["services"].items()
                  if svc.get("ports")}
    assert host_ports == {n: config.DEFAULT_PORTS[n]
                          for n in ("postgres", "kafka", "registry", "connect", "mariadb", "redis")}
    assert all(p.startswith("127.0.0.1:") for svc in compose["services"].values() for p in svc.get("ports", []))
    pom = ET.parse(REPO / "deploy" / "stack" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = {k: pom.find(f"m:properties/m:{k}.version", ns).text for k in ("kafka", "debezium", "apicurio")}
    images = {svc["image"] for svc in compose["services"].values()}
    assert f"apache/kafka:{version['kafka']}" in images
    assert f"quay.io/debezium/connect:{version['debezium']}" in images
    assert f"apicurio/apicurio-registry:{version['apicurio']}" in images
    assert re.match(r"postgres:15", compose["services"]["postgres"]["image"])


def test_pidfile_tracks_and_stops_exactly_its_process(tmp_path):
    pidfile = PidFile(tmp_path / "run" / "sleeper.pid")
    pid = spawn([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "sleeper.log", pidfile)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert pidfile.pid() == pid
        assert stop(pidfile, signal.SIGTERM, timeout=10)
        assert pidfile.pid() is None and not pidfile.path.exists()
        assert bystander.poll() is None
        assert stop(pidfile) is False  # nothing left to stop
    finally:
        bystander.kill()


def test_pidfile_ignores_a_recycled_pid(tmp_path):
    pidfile = PidFile(tmp_path / "x.pid")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        pidfile.path.write_text(f"{proc.pid} 1\n")  # same pid, different start time
        assert pidfile.pid() is None
    finally:
        proc.kill()


def test_a_control_plane_process_is_started_anew_when_its_code_changes(tmp_path, monkeypatch):
    """`up` compares the fingerprint of a running process's settings and code with the recorded one:
    an edit to the code it imports (or a pull) changes it; compiled files do not."""
    from deploy.stack import components

    package = tmp_path / "processors"
    (package / "__pycache__").mkdir(parents=True)
    (package / "saga.py").write_text("A = 1\n")
    monkeypatch.setattr(components, "REPO_ROOT", tmp_path)
    before = components.code_stamp()
    (package / "__pycache__" / "saga.cpython-311.pyc").write_bytes(b"compiled")
    assert components.code_stamp() == before
    (package / "saga.py").write_text("A = 22\n")
    assert components.code_stamp() != before
