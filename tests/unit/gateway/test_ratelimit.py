"""Rate limits: token buckets refill at their rate; a request naming an organization is charged to
it only when the caller is a member there (a stranger pays from its own bucket, so it can neither
drain another tenant's bucket nor create buckets by making names up); the buckets kept are capped."""
from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from gateway import ratelimit
from gateway.access import Reads, roles_in
from gateway.auth import Identity, current_identity
from tests.unit.gateway.fake_reads import FakeReadModel


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    clock = Clock()
    limiter = ratelimit.RateLimiter(ratelimit.parse("*=2/3"), clock)
    assert [limiter.take("acme") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("acme") == pytest.approx(0.5)
    clock.now = 0.5
    assert limiter.take("acme") == 0.0


def test_the_first_matching_rule_wins_and_no_rule_means_no_limit():
    limiter = ratelimit.RateLimiter(ratelimit.parse("ratelimit-*=1/1,acme=5/5"), Clock())
    assert limiter.take("ratelimit-a") == 0.0 and limiter.take("ratelimit-a") > 0
    assert all(limiter.take("globex") == 0.0 for _ in range(100))
    assert "globex" not in limiter.buckets


@pytest.mark.parametrize(("text", "reason"), [("*=0/1", "rate must be positive"), ("=1/1", "glob missing"),
                                              ("*=x/1", "not a number"), ("*=1/0.5", "burst below one")])
def test_a_malformed_setting_is_refused_with_an_example(text, reason):
    with pytest.raises(ValueError, match="e.g."):
        ratelimit.parse(text)


def test_the_buckets_kept_are_capped_least_recently_used_first():
    limiter = ratelimit.RateLimiter(ratelimit.parse("*=1/1"), Clock(), max_buckets=3)
    for name in ("acme", "a", "b"):
        limiter.take(name)
    limiter.take("acme")  # used again: now the most recent
    for i in range(100):
        limiter.take(f"made-up-{i}")
    assert len(limiter.buckets) == 3
    assert "acme" not in limiter.buckets and "made-up-99" in limiter.buckets


def test_members_are_charged_to_the_organization_and_others_to_themselves():
    assert ratelimit.bucket_for("acme", {"org-owner"}, "iss#alice") == "acme"
    assert ratelimit.bucket_for("acme", set(), "iss#mallory") == "user:iss#mallory"


@pytest.fixture
def client():
    """A route that looks up the caller's roles in `{org}` as every gateway route does, over an
    in-memory read port; the caller is named by the test's `X-Who` header."""
    app = FastAPI()
    app.state.read_model = FakeReadModel(roles={("acme", "iss#alice"): "org-owner"})
    app.state.limiter = ratelimit.RateLimiter(ratelimit.parse("*=1/5"), Clock())

    def who(request: Request) -> Identity:
        return Identity(request.headers["x-who"], "iss")

    @app.get("/organizations/{org}")
    def organization(org: str, request: Request, reads: Reads,
                     identity: Annotated[Identity, Depends(current_identity)]) -> list[str]:
        return sorted(roles_in(request, reads, identity, org))

    app.dependency_overrides[current_identity] = who
    with TestClient(app) as c:
        yield c, app.state.limiter


def test_a_stranger_cannot_drain_an_organizations_bucket(client):
    c, limiter = client
    strangers = [c.get("/organizations/acme", headers={"x-who": "mallory"}).status_code for _ in range(20)]
    assert strangers[:5] == [200] * 5 and set(strangers[5:]) == {429}  # its own bucket ran dry
    alice = [c.get("/organizations/acme", headers={"x-who": "alice"}) for _ in range(5)]
    assert [a.status_code for a in alice] == [200] * 5 and alice[0].json() == ["org-owner"]
    assert c.get("/organizations/acme", headers={"x-who": "alice"}).status_code == 429  # acme's own burst
    assert set(limiter.buckets) == {"acme", "user:iss#mallory"}


def test_made_up_organization_names_create_no_buckets(client):
    c, limiter = client
    for i in range(50):
        c.get(f"/organizations/nope-{i}", headers={"x-who": "mallory"})
    assert set(limiter.buckets) == {"user:iss#mallory"}
