"""Test-wide fixtures.

Integration tests run against a platform instance of their own — folder ``.data/test-stack``
and ports shifted by 1000 (``DBAAS_TEST_PORT_OFFSET``) — started through the same launcher as
``make up`` and stopped at the end of the session (``DBAAS_TEST_KEEP_STACK=1`` leaves it up for
the next run). A developer's platform on the default ports is never touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from runtime.kafka import KafkaAccess

REPO = Path(__file__).resolve().parents[1]
DBAAS = [sys.executable, "-m", "cli.main"]


# Tests that leave the shared platform a long backlog (the crash-safety test's 900 operations, which
# the saga renders and commits after it) or change how many instances it runs (the scale-out test)
# run last, so that no later test waits behind them.
RUN_LAST = ("tests/integration/test_crash_safety.py", "tests/integration/test_scale_out.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.nodeid.startswith(RUN_LAST))  # stable: the rest keep their order


@dataclass(frozen=True)
class Stack:
    home: Path
    kafka: KafkaAccess  # the platform's administrator principal (a super user)
    registry: str
    connect: str
    postgres_dsn: str
    gitops_remote: str
    api: str
    status: dict

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*DBAAS, *args], cwd=REPO, capture_output=True, text=True,
                              check=check, timeout=timeout, env={**os.environ, **PLATFORM_ENV})

    def token(self, subject: str = "alice", orgs: dict[str, list[str]] | None = None, **claims) -> str:
        """A token of this platform's development issuer for `subject`, granting `orgs` roles."""
        from runtime import devissuer

        key = json.loads((self.home / "secrets.json").read_text())[devissuer.SECRET_NAME]
        return devissuer.mint(key, subject, orgs, **claims)

    def auth(self, subject: str = "alice", orgs: dict[str, list[str]] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, orgs)}"}

    def dbaas(self, *args: str, check: bool = False, subject: str = "alice",
              orgs: dict[str, list[str]] | None = None) -> subprocess.CompletedProcess:
        """The `dbaas` CLI pointed at this platform's API, signed in as `subject`."""
        env = {**os.environ, "DBAAS_API_URL": self.api, "DBAAS_TOKEN": self.token(subject, orgs)}
        return subprocess.run([*DBAAS, *args], cwd=REPO, capture_output=True, text=True, check=check,
                              timeout=300, env=env)

    def kafka_as(self, process: str) -> KafkaAccess:
        """The broker as platform process `process` (its principal: what it may do, no more)."""
        values = json.loads((self.home / "secrets.json").read_text())
        return self.kafka.as_user(f"dbaas-{process}", values[f"kafka_password_{process}"])

    def kafka_env(self, process: str | None = None) -> dict[str, str]:
        """The variables a process reads its broker and principal from (default: the administrator)."""
        access = self.kafka_as(process) if process else self.kafka
        return {"DBAAS_KAFKA_BOOTSTRAP": access.bootstrap, "DBAAS_KAFKA_USERNAME": access.username or "",
                "DBAAS_KAFKA_PASSWORD": access.password or ""}

    @property
    def keyring(self) -> Path:
        return self.home / "keyring.json"

    def signer(self, holder: str = "gateway"):
        """The platform instance's own signing key of `holder` (gateway, platform, pop-local)."""
        from runtime.signing import Signer

        return Signer.from_text(holder, json.loads((self.home / "secrets.json").read_text())[f"signing_key_{holder}"])

    def publisher(self, topic: str = "dbaas.commands", holder: str = "gateway"):
        """A command publisher signing as `holder` (the gateway's key: its actors are believed)."""
        from runtime.publisher import Publisher

        return Publisher(self.kafka, self.registry, topic, signer=self.signer(holder))

    def pop_signer(self, pop: str):
        """A key of PoP `pop`, registered in the keyring with `dbaas keys add-pop` (once per run)."""
        from runtime.signing import Signer

        if (self.home, pop) not in _POP_KEYS:
            key_id = f"pop-{pop}-{uuid.uuid4().hex[:8]}"
            added = json.loads(self.cli("keys", "add-pop", pop, "--key-id", key_id, "--home", str(self.home),
                                        "--json").stdout)
            _POP_KEYS[(self.home, pop)] = Signer.from_text(key_id, added["private_key"])
        return _POP_KEYS[(self.home, pop)]

    def report(self, pop: str, tenant: str, service_id: str, operation_id: str, phase: str = "Ready", **fields):
        """Publish PoP `pop`'s signed status report, as its status reporter does; returns the report."""
        from confluent_kafka import Producer

        from schemas.registry import POP_STATUS_SUBJECT, Registry, Serde

        record = {"report_id": str(uuid.uuid4()), "pop": pop, "tenant_id": tenant, "service_id": service_id,
                  "operation_id": operation_id, "phase": phase, "endpoint": None, "reason": None,
                  "credentials": None, "observed_at": datetime.now(timezone.utc), **fields}
        value = Serde(Registry(self.registry), POP_STATUS_SUBJECT).encode(record)
        producer = Producer({**self.kafka.client(), "acks": "all", "enable.idempotence": True})
        headers = self.pop_signer(pop).headers("dbaas.pop.status", tenant.encode(), value)
        producer.produce("dbaas.pop.status", key=tenant.encode(), value=value, headers=headers)
        assert producer.flush(30) == 0
        return record

    def principal(self, subject: str) -> str:
        """The platform principal of a development-issuer subject (what its tokens sign in as)."""
        from runtime import devissuer

        return f"{devissuer.ISSUER}#{subject}"

    def metrics(self, component: str) -> str:
        import httpx

        return httpx.get(self.status["components"][component]["endpoint"], timeout=10).text

    def stack_cli(self, action: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.cli("stack", action, "--home", str(self.home), *args, **kw)

    def backup_env(self) -> dict[str, str]:
        """What the local PoP agent is given to keep backups: the object storage (DBAAS_S3_*) and the
        backups' key-encryption key (DBAAS_BACKUP_KEK)."""
        values = json.loads((self.home / "secrets.json").read_text())
        return {"DBAAS_S3_ENDPOINT": self.status["endpoints"]["s3_endpoint"],
                "DBAAS_S3_ACCESS_KEY": values["s3_access_key"], "DBAAS_S3_SECRET_KEY": values["s3_secret_key"],
                "DBAAS_S3_BUCKET": "dbaas-backups", "DBAAS_BACKUP_KEK": values["backup_kek"]}


_POP_KEYS: dict = {}  # (home, pop) -> the Signer registered for it in this run
SINGAPORE_TIMEOUT = 12  # seconds the test platform's saga waits for a report from PoP singapore
RATE_LIMIT = "1/3"  # requests per second / burst for the test platform's ratelimit-* organizations
# How the test platform runs, for every `dbaas stack up` of it (a test that restarts it too):
PLATFORM_ENV = {
    # PoP singapore is where the tests let operations time out: nothing reports from there.
    "DBAAS_SAGA_STEP_TIMEOUTS": f"pop-report@singapore={SINGAPORE_TIMEOUT}",
    # Organizations named ratelimit-* get a tight rate limit; the rest room for every test's polling.
    "DBAAS_RATE_LIMITS": f"ratelimit-*={RATE_LIMIT},*=1000/2000",
    # crash tests kill processes on purpose: restart them at once, not after a growing wait
    "DBAAS_SUPERVISE_MAX_BACKOFF": "2",
    # a backup meeting an unavailable object store fails after this long (the failure tests stop it)
    "DBAAS_LOCALPOP_BACKUP_RETRY_SECONDS": "8",
    # services are sampled often, and a claim's GiB counts as 32 MiB, so that a test fills a
    # service past its storage alert with a few MiB
    "DBAAS_LOCALPOP_METRICS_INTERVAL": "5",
    "DBAAS_LOCALPOP_STORAGE_SCALE": str(1 / 32),
    # a failed CDC connector is reported after two quick restarts (the failure tests wait for it)
    "DBAAS_LOCALPOP_CDC_MAX_RESTARTS": "2",
    "DBAAS_LOCALPOP_CDC_MAX_BACKOFF": "2",
}


def _up(home: Path, offset: int) -> dict:
    env = {**os.environ, **PLATFORM_ENV}
    # --show-secrets: the tests connect with the DSN's real password
    proc = subprocess.run([*DBAAS, "stack", "up", "--home", str(home), "--port-offset", str(offset),
                           "--json", "--show-secrets"], cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        pytest.fail(f"the test platform did not start (exit {proc.returncode}); see {home}/logs")
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def stack() -> Stack:
    home = Path(os.environ.get("DBAAS_TEST_STACK_HOME", REPO / ".data" / "test-stack")).resolve()
    offset = int(os.environ.get("DBAAS_TEST_PORT_OFFSET", "1000"))
    status = _up(home, offset)
    ep = status["endpoints"]
    kafka = KafkaAccess(ep["kafka_bootstrap"], ep["kafka_username"], ep["kafka_password"])
    yield Stack(home, kafka, ep["schema_registry_url"], ep["connect_url"],
                ep["postgres_dsn"], ep["gitops_remote"], ep["api_url"], status)
    if not os.environ.get("DBAAS_TEST_KEEP_STACK"):
        subprocess.run([*DBAAS, "stack", "down", "--home", str(home)], cwd=REPO, timeout=300)


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.2,
             what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
