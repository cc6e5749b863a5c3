"""The local PoP agent for real: it syncs a bare git repository of this test's own, provisions on
the test platform's PostgreSQL, MariaDB and Redis, and reports on a pop-status topic of this
test's own. ServiceClaim files are rendered with the real helm and committed with GitPython
carrying the `Operation-Id:`/`Correlation-Id:` trailers the saga writes.

The agent runs in a thread (`run(settings, stop, agent=...)`); its structlog output goes to a
buffer that, like the state file, must never contain a password."""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import git
import httpx
import psycopg
import pymysql
import pytest
import redis
import structlog
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

from gitops import helm, manifests
from gitops.layout import pop_service_path
from operators.localpop import plan as core
from operators.localpop.agent import Agent, AgentSettings, run
from operators.localpop.provisioners import AdminEndpoint
from runtime import logs
from schemas.registry import POP_STATUS_SUBJECT, Registry, Serde
from tests.conftest import wait_for

VERSIONS = {"yugabyte": "2024.2.0.0-b145", "vitess": "v24.0.0-rc1-mysql80", "dragonfly": "v1.36.0",
            "scylla": "2026.2.4", "aerospike": "8.1.2.0", "mongodb": "6.0.5"}
CLIENT_ERRORS = (psycopg.Error, pymysql.err.MySQLError, redis.RedisError, OSError)


# -- the harness ---------------------------------------------------------------------------------
@dataclass
class Commit:
    path: str
    tenant: str
    service_id: str
    operation_id: str
    correlation_id: str
    sha: str


@dataclass
class Running:
    agent: Agent
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> Running:
        def target():
            try:
                run(self.agent.settings, self.stop, agent=self.agent)
            except BaseException as exc:  # noqa: BLE001 - surfaced by close()
                self.error = exc
        self.thread = threading.Thread(target=target, name="localpop-agent", daemon=True)
        self.thread.start()
        return self

    def wait_syncs(self, n: int) -> None:
        start = self.agent.syncs
        wait_for(lambda: self.agent.syncs >= start + n or self.error, timeout=60, what=f"{n} syncs")
        assert self.error is None, self.error

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the agent did not stop"
        if self.error:
            raise self.error


class Harness:
    def __init__(self, stack, tmp: Path, log: io.StringIO):
        self.stack = stack
        self.log = log
        self.key = Fernet.generate_key().decode()
        self.passwords: set[str] = set()
        self.remote = tmp / "gitops.git"
        git.Repo.init(self.remote, bare=True, initial_branch="main")
        self.work = git.Repo.clone_from(self.remote.as_uri(), tmp / "work")
        with self.work.config_writer() as cfg:
            cfg.set_value("user", "name", "test saga").set_value("user", "email", "saga@test.local")
        self.topic = self.new_topic()
        secrets = json.loads((stack.home / "secrets.json").read_text())
        self.su_password = secrets["postgres_superuser_password"]
        ports = stack.status["ports"]
        pg = psycopg.conninfo.conninfo_to_dict(stack.postgres_dsn)
        self.ports = {"yugabyte": int(pg["port"]), "vitess": ports["mariadb"], "dragonfly": ports["redis"]}
        self.settings = AgentSettings(
            kafka=stack.kafka, registry_url=stack.registry, gitops_remote=self.remote.as_uri(),
            state_dir=tmp / "state", credentials_key=self.key, password_key=uuid.uuid4().bytes,
            postgres=AdminEndpoint(pg["host"], int(pg["port"]), pg["user"], pg["password"]),
            postgres_admin_database=pg["dbname"],
            mariadb=AdminEndpoint("127.0.0.1", ports["mariadb"], "root", secrets["mariadb_root_password"]),
            redis=AdminEndpoint("127.0.0.1", ports["redis"], "admin", secrets["redis_admin_password"]),
            pop_status_topic=self.topic, interval=0.2, metrics_interval=0)  # samples: test_service_metrics
        self.serde = Serde(Registry(stack.registry), POP_STATUS_SUBJECT)
        self.consumers: dict[str, tuple[Consumer, list]] = {}

    def new_topic(self, create: bool = True) -> str:
        name = f"test.pop.status.{uuid.uuid4().hex[:10]}"
        if create:
            self.create_topic(name)
        return name

    def create_topic(self, name: str) -> None:
        admin = AdminClient(self.stack.kafka.client())
        for fut in admin.create_topics([NewTopic(name, 3, 1)]).values():
            fut.result()

    # git: what the saga does
    def commit(self, path: str, content: str | None, message: str) -> tuple[str, str, str]:
        op, corr = str(uuid.uuid4()), str(uuid.uuid4())
        target = Path(self.work.working_tree_dir) / path
        if content is None:
            self.work.index.remove([path], working_tree=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            self.work.index.add([path])
        sha = self.work.index.commit(f"{message}\n\nOperation-Id: {op}\nCorrelation-Id: {corr}\n").hexsha
        self.work.remote("origin").push("HEAD:refs/heads/main").raise_if_error()
        return op, corr, sha

    def claim(self, engine: str, *, tenant: str | None = None, service_id: str | None = None,
              name: str = "orders", cpu: float = 1) -> Commit:
        tenant = tenant or f"t-{uuid.uuid4().hex[:8]}"
        service_id = service_id or str(uuid.uuid4())
        values = {"tenant": tenant, "serviceId": service_id, "name": name, "engine": engine,
                  "engineVersion": VERSIONS[engine], "pop": "local", "cpu": cpu, "memoryGi": 2, "storageGi": 10,
                  "replicas": 1}
        text = manifests.dump_all(helm.render(helm.SERVICE_CHART, values, release_name=name,
                                              namespace=f"tenant-{tenant}"))
        path = pop_service_path(tenant, "local", name)
        op, corr, sha = self.commit(path, text, f"Apply {tenant}/{name} in local")
        return Commit(path, tenant, service_id, op, corr, sha)

    def remove(self, c: Commit) -> Commit:
        op, corr, sha = self.commit(c.path, None, f"Remove {c.tenant}/{c.path}")
        return replace(c, operation_id=op, correlation_id=corr, sha=sha)

    # kafka: what the saga reads
    def reports(self, topic: str | None = None) -> list[tuple[str, dict]]:
        """Every report on ``topic`` so far, as (key, record), in arrival order."""
        topic = topic or self.topic
        if topic not in self.consumers:
            consumer = Consumer({**self.stack.kafka.client(), "group.id": f"g-{uuid.uuid4().hex}",
                                 "auto.offset.reset": "earliest", "enable.auto.commit": False})
            consumer.subscribe([topic])
            self.consumers[topic] = (consumer, [])
        consumer, seen = self.consumers[topic]
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error() is None:
                seen.append((msg.key().decode(), self.serde.decode(msg.value())))
        return seen

    def end_offsets(self, topic: str | None = None) -> int:
        """How many reports ``topic`` holds: the sum of its partitions' high watermarks."""
        consumer = Consumer({**self.stack.kafka.client(), "group.id": "watermarks"})
        try:
            return sum(consumer.get_watermark_offsets(TopicPartition(topic or self.topic, p), timeout=10)[1]
                       for p in range(3))
        finally:
            consumer.close()

    def report(self, operation_id: str, phase: str, topic: str | None = None) -> dict:
        def find():
            for key, r in self.reports(topic):
                if r["operation_id"] == operation_id and r["phase"] == phase:
                    return {**r, "_key": key}
            return None
        return wait_for(find, timeout=90, what=f"a {phase} report for operation {operation_id}")

    def credentials(self, report: dict) -> dict:
        creds = json.loads(Fernet(self.key).decrypt(report["credentials"]))
        self.passwords.add(creds["password"])
        return creds

    def state(self, settings: AgentSettings | None = None) -> dict:
        path = (settings or self.settings).state_dir / "localpop-agent.json"
        return json.loads(path.read_text()) if path.exists() else {"services": {}}

    def close(self) -> None:
        for consumer, _ in self.consumers.values():
            consumer.close()


@pytest.fixture(scope="module")
def log_buffer():
    buffer = io.StringIO()
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("localpop-agent-test", stream=buffer)
    yield buffer
    structlog.configure(**saved)
    root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="module")
def h(stack, tmp_path_factory, log_buffer):
    harness = Harness(stack, tmp_path_factory.mktemp("localpop"), log_buffer)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def agent(h):
    running = Running(Agent.build(h.settings)).start()
    yield running
    if not running.stop.is_set():
        running.close()


# -- how a tenant uses its credentials -----------------------------------------------------------
def pg_roundtrip(c: dict) -> list:
    with psycopg.connect(host=c["host"], port=c["port"], user=c["username"], password=c["password"],
                         dbname=c["database"], connect_timeout=5, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders VALUES (1, 'tea') ON CONFLICT (id) DO NOTHING")
        return conn.execute("SELECT id, item FROM orders").fetchall()


def my_roundtrip(c: dict) -> list:
    with pymysql.connect(host=c["host"], port=c["port"], user=c["username"], password=c["password"],
                         database=c["database"], connect_timeout=5, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, item varchar(20))")
        cur.execute("INSERT IGNORE INTO orders VALUES (1, 'tea')")
        cur.execute("SELECT id, item FROM orders")
        return [tuple(row) for row in cur.fetchall()]


def redis_client(c: dict) -> redis.Redis:
    return redis.Redis(host=c["host"], port=c["port"], username=c["username"], password=c["password"],
                       socket_timeout=5, decode_responses=True, retry=Retry(NoBackoff(), 0))


def rd_roundtrip(c: dict) -> list:
    with redis_client(c) as client:
        client.set(f"{c['key_prefix']}order:1", "tea")
        return [(1, client.get(f"{c['key_prefix']}order:1"))]


ROUNDTRIP = {"yugabyte": pg_roundtrip, "vitess": my_roundtrip, "dragonfly": rd_roundtrip}


def login_fails(engine: str, creds: dict) -> bool:
    try:
        ROUNDTRIP[engine](creds)
    except CLIENT_ERRORS:
        return True
    return False


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine, server_key", [("yugabyte", "database"), ("vitess", "database"),
                                                ("dragonfly", "key_prefix")])
def test_a_claim_becomes_ready_with_credentials_that_work(h, agent, engine, server_key):
    c = h.claim(engine)
    r = h.report(c.operation_id, "Ready")
    assert r["_key"] == c.tenant and (r["tenant_id"], r["service_id"], r["pop"]) == (c.tenant, c.service_id, "local")
    assert r["report_id"] == core.report_id(c.operation_id, "Ready") and r["reason"] is None
    assert r["endpoint"] == f"127.0.0.1:{h.ports[engine]}"
    assert r["observed_at"].tzinfo is not None
    creds = h.credentials(r)
    assert creds["password"] not in r["credentials"] and creds["password"] not in json.dumps(r, default=str)
    assert set(creds) == {"username", "password", "host", "port", "uri", server_key}
    assert f"{creds['host']}:{creds['port']}" == r["endpoint"]
    assert ROUNDTRIP[engine](creds) == [(1, "tea")]
    # the log lines of the work carry the operation and the correlation id of the commit
    applied = [json.loads(line) for line in h.log.getvalue().splitlines() if '"service applied"' in line]
    assert any(line.get("operation_id") == c.operation_id and line.get("correlation_id") == c.correlation_id
               for line in applied)


def test_dragonfly_credentials_reach_only_their_key_prefix(h, agent):
    c = h.claim("dragonfly")
    creds = h.credentials(h.report(c.operation_id, "Ready"))
    with redis_client(creds) as client:
        client.set(f"{creds['key_prefix']}k", "v")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("someone-else:k")


@pytest.mark.parametrize("engine", ["yugabyte", "vitess", "dragonfly"])
def test_deleting_the_file_reports_deleted_and_the_login_stops_working(h, agent, engine):
    c = h.claim(engine)
    creds = h.credentials(h.report(c.operation_id, "Ready"))
    assert ROUNDTRIP[engine](creds)
    gone = h.remove(c)
    r = h.report(gone.operation_id, "Deleted")
    assert (r["service_id"], r["credentials"], r["endpoint"]) == (c.service_id, None, None)
    assert r["report_id"] == core.report_id(gone.operation_id, "Deleted")
    assert login_fails(engine, creds)
    wait_for(lambda: c.tenant + "/" + c.service_id not in h.state()["services"], timeout=30,
             what="the acknowledged removal to leave the state file")


@pytest.mark.parametrize("engine", ["scylla", "aerospike", "mongodb"])
def test_engines_without_a_local_server_are_reported_failed_with_the_reason(h, agent, engine):
    c = h.claim(engine)
    r = h.report(c.operation_id, "Failed")
    assert r["credentials"] is None and r["endpoint"] is None
    assert f'engine "{engine}" has no local server' in r["reason"]
    assert "PoP local offers yugabyte, vitess, dragonfly" in r["reason"]
    gone = h.remove(c)  # deleting a refused service completes too
    assert h.report(gone.operation_id, "Deleted")["service_id"] == c.service_id


def test_a_new_operation_on_a_service_is_reported_with_the_same_credentials(h, agent):
    c = h.claim("yugabyte", name="ledger")
    first = h.credentials(h.report(c.operation_id, "Ready"))
    assert pg_roundtrip(first)
    scaled = h.claim("yugabyte", tenant=c.tenant, service_id=c.service_id, name="ledger", cpu=2)
    assert scaled.operation_id != c.operation_id
    second = h.credentials(h.report(scaled.operation_id, "Ready"))
    assert second == first and pg_roundtrip(first) == [(1, "tea")]  # same login, data kept


def _verifier(h: Harness, role: str) -> str:
    with psycopg.connect(host="127.0.0.1", port=h.ports["yugabyte"], user="postgres", password=h.su_password,
                         dbname="postgres", connect_timeout=5) as conn:
        return conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0]


def test_a_restarted_agent_neither_provisions_nor_reports_again(h, agent):
    c = h.claim("yugabyte", name="restart")
    creds = h.credentials(h.report(c.operation_id, "Ready"))
    key = f"{c.tenant}/{c.service_id}"
    wait_for(lambda: h.state()["services"].get(key, {}).get("reported"), timeout=30,
             what="the state file to record the acknowledgement")
    # every provision writes a new SCRAM verifier (fresh salt): unchanged means not provisioned again
    verifier = _verifier(h, creds["username"])
    agent.close()
    before = h.end_offsets()
    restarted = Running(Agent.build(h.settings)).start()
    try:
        restarted.wait_syncs(5)  # each sync flushes what it sends before it ends
        assert h.end_offsets() == before
        assert _verifier(h, creds["username"]) == verifier
        assert pg_roundtrip(creds) == [(1, "tea")]
        # and it still acts on new commits
        gone = h.remove(c)
        assert h.report(gone.operation_id, "Deleted")
    finally:
        restarted.close()


def test_a_report_kafka_did_not_take_is_sent_until_it_is_acknowledged(h, tmp_path):
    topic = h.new_topic(create=False)  # not there yet: deliveries fail
    settings = replace(h.settings, state_dir=tmp_path / "state", pop_status_topic=topic, message_timeout_ms=2000,
                       flush_timeout=1.0)
    running = Running(Agent.build(settings)).start()
    try:
        c = h.claim("vitess", name="late")
        key = f"{c.tenant}/{c.service_id}"
        failures = REGISTRY.get_sample_value("dbaas_localpop_sync_errors_total", {"error": "KafkaDelivery"}) or 0
        record = wait_for(lambda: h.state(settings)["services"].get(key), timeout=60, what="the provisioning")
        assert record["phase"] == "Ready" and not record["reported"]
        wait_for(lambda: (REGISTRY.get_sample_value("dbaas_localpop_sync_errors_total",
                                                    {"error": "KafkaDelivery"}) or 0) > failures,
                 timeout=60, what="a failed delivery")
        h.create_topic(topic)
        r = h.report(c.operation_id, "Ready", topic)
        assert my_roundtrip(h.credentials(r)) == [(1, "tea")]
        wait_for(lambda: h.state(settings)["services"][key]["reported"], timeout=30, what="the acknowledgement")
    finally:
        running.close()
    # the same observation each time: one report id, however often it was sent
    sent = [r for _, r in h.reports(topic) if r["operation_id"] == c.operation_id]
    assert {r["report_id"] for r in sent} == {core.report_id(c.operation_id, "Ready")}


def test_an_unreadable_file_is_left_alone_and_removes_nothing(h):
    running = Running(Agent.build(h.settings)).start()
    try:
        c = h.claim("dragonfly", name="sturdy")
        creds = h.credentials(h.report(c.operation_id, "Ready"))
        op, _, _ = h.commit(c.path, "not: [valid", "Break the file")
        running.wait_syncs(5)
        assert not [r for _, r in h.reports() if r["operation_id"] == op]
        assert rd_roundtrip(creds)  # still provisioned
        assert "ServiceClaim file ignored" in h.log.getvalue()
    finally:
        running.close()


def test_metrics_count_services_reports_and_syncs(h):
    assert REGISTRY.get_sample_value("dbaas_localpop_reports_total", {"phase": "Ready"}) >= 3
    assert REGISTRY.get_sample_value("dbaas_localpop_reports_total", {"phase": "Deleted"}) >= 3
    assert REGISTRY.get_sample_value("dbaas_localpop_reports_total", {"phase": "Failed"}) >= 3
    assert REGISTRY.get_sample_value("dbaas_localpop_sync_seconds_count") > 10
    assert REGISTRY.get_sample_value("dbaas_localpop_services", {"engine": "yugabyte"}) is not None


def test_no_password_is_logged_or_stored(h):
    assert len(h.passwords) >= 5
    text = h.log.getvalue()
    state = (h.settings.state_dir / "localpop-agent.json").read_text()
    assert "service applied" in text and '"services"' in state
    for password in h.passwords | {h.settings.mariadb.password, h.settings.redis.password,
                                   h.settings.postgres.password, h.key}:
        assert password not in text
        assert password not in state


def test_the_platform_runs_the_agent(stack):
    component = stack.status["components"]["localpop-agent"]
    assert component["state"] == "healthy"
    assert "dbaas_localpop_sync_seconds_count" in stack.metrics("localpop-agent")


def test_the_agent_process_serves_metrics_and_exits_cleanly_on_sigterm(h, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg, my, rd = h.settings.postgres, h.settings.mariadb, h.settings.redis
    signer = h.stack.signer("pop-local")
    env = {**os.environ, **h.stack.kafka_env(), "DBAAS_REGISTRY_URL": h.stack.registry,
           "DBAAS_GITOPS_REMOTE": h.remote.as_uri(), "DBAAS_STATE_DIR": str(tmp_path / "state"),
           "DBAAS_METRICS_PORT": str(port), "DBAAS_DATABASE_URL": h.stack.postgres_dsn,
           "DBAAS_LOCALPOP_MARIADB_URL": f"mysql://{my.user}:{my.password}@{my.host}:{my.port}",
           "DBAAS_LOCALPOP_REDIS_URL": f"redis://{rd.user}:{rd.password}@{rd.host}:{rd.port}",
           "DBAAS_CREDENTIALS_KEY": h.key, "DBAAS_LOCALPOP_PASSWORD_KEY": h.settings.password_key.hex(),
           "DBAAS_POP_STATUS_TOPIC": h.new_topic(), "DBAAS_LOCALPOP_SYNC_INTERVAL": "0.2",
           # its reports are signed with PoP local's key
           "DBAAS_SIGNING_KEY_ID": signer.key_id, "DBAAS_SIGNING_KEY": signer.private_text()}
    assert pg.host == "127.0.0.1"
    proc = subprocess.Popen([sys.executable, "-m", "operators.localpop.agent"], env=env, cwd=Path(__file__).parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def synced():
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return None
            line = next((ln for ln in text.splitlines() if ln.startswith("dbaas_localpop_sync_seconds_count")), "")
            return line and float(line.split()[-1]) >= 3
        wait_for(synced, timeout=60, what="the agent process to sync")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
    assert events[0] == "started" and events[-1] == "stopped"
    for secret in (my.password, rd.password, pg.password, h.key):
        assert secret not in out
