"""Fixtures the integration modules share: alice's API client, a fresh organization of hers, and a
command processor of its own on topics of its own (`lane`)."""
from __future__ import annotations

import uuid

import httpx
import pytest

from processors.command_processor import CommandProcessor
from tests.conftest import wait_for
from tests.integration.kafka_support import RunningProcessor, Topics, publisher


@pytest.fixture
def api(stack):
    """alice's client of the test platform's API (`/api/v1`)."""
    with httpx.Client(base_url=stack.api + "/api/v1", headers=stack.auth(), timeout=30) as client:
        yield client


@pytest.fixture
def org(api):
    """A new organization of alice's, once its read model answers."""
    slug = f"org-{uuid.uuid4().hex[:8]}"
    assert api.post("/organizations", json={"slug": slug}).status_code == 202
    wait_for(lambda: api.get(f"/organizations/{slug}/quotas").status_code == 200, what="the organization")
    return slug


@pytest.fixture
def lane(stack):
    """A command processor of its own on topics of its own, trusting the platform's keyring."""
    topics = Topics.create(stack.kafka)
    proc = RunningProcessor(CommandProcessor(topics.settings(stack))).start()
    pub = publisher(stack, topics)
    yield stack, topics, pub
    pub.close()
    proc.close()


def operation(api, op_id: str, predicate, what: str, timeout: float = 120) -> dict:
    """Operation `op_id` as the API answers it, once `predicate` holds for it."""
    def get():
        r = api.get(f"/operations/{op_id}")
        return r.json() if r.status_code == 200 and predicate(r.json()) else None
    return wait_for(get, timeout=timeout, what=what)


def local_service(api, org: str, name: str, engine: str, **resources) -> str:
    """A service created in PoP local through the API and Succeeded: its id."""
    r = api.post("/services", json={"org": org, "name": name, "engine": engine, "pop": "local", **resources})
    assert r.status_code == 202, r.text
    done = operation(api, r.json()["operation_id"], lambda o: o["state"] in ("Succeeded", "Failed"),
                     f"{name} to be created", timeout=180)
    assert done["state"] == "Succeeded", done
    return r.json()["service_id"]


def credentials(api, service_id: str) -> dict:
    """A service's credentials as the API answers them."""
    r = api.get(f"/services/{service_id}/credentials")
    assert r.status_code == 200, r.text
    return r.json()
