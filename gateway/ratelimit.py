"""Rate limits per tenant at the gateway: a token bucket per organization (per caller for requests
that name none), configured by `DBAAS_RATE_LIMITS` = comma-separated `<glob>=<rate>/<burst>`
(requests per second, bucket size; the first glob matching the tenant wins; default `*=50/100`).
A request over the limit is answered 429 with `Retry-After` (seconds) and counted in
`dbaas_http_rate_limited_total`. Buckets live in the API process: with several API replicas each
enforces its share (the limit per replica).

Whose bucket a request is charged to is decided once the caller's roles in the organization it
names are known (`bucket_for`): a member's request counts against the organization; a request
naming an organization the caller has no role in (a stranger's, a typo, a made-up name) counts
against the caller's own bucket, so nobody outside an organization can drain its bucket and made-up
names create no buckets. At most `MAX_BUCKETS` buckets are kept; the least recently used one goes
first (a bucket idle for `burst / rate` seconds is full again anyway).
"""
from __future__ import annotations

import fnmatch
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import HTTPException, Request
from prometheus_client import Counter

LIMITED = Counter("dbaas_http_rate_limited_total", "Requests refused by the per-tenant rate limit", ["tenant"])
DEFAULT = "*=50/100"
MAX_BUCKETS = 10_000


@dataclass
class Bucket:
    rate: float
    burst: float
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rules: list[tuple[str, float, float]], clock=time.monotonic, max_buckets: int = MAX_BUCKETS):
        self.rules = rules
        self.clock = clock
        self.max_buckets = max_buckets
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()
        self.lock = threading.Lock()

    @classmethod
    def from_env(cls) -> RateLimiter:
        return cls(parse(os.environ.get("DBAAS_RATE_LIMITS") or DEFAULT))

    def rule(self, key: str) -> tuple[float, float] | None:
        for pattern, rate, burst in self.rules:
            if fnmatch.fnmatchcase(key, pattern):
                return rate, burst
        return None

    def take(self, key: str) -> float:
        """Take one token for `key`: 0 when allowed, else the seconds until one is available."""
        rule = self.rule(key)
        if rule is None:
            return 0.0
        rate, burst = rule
        with self.lock:
            now = self.clock()
            b = self.buckets.get(key) or Bucket(rate, burst, burst, now)
            b.tokens = min(b.burst, b.tokens + (now - b.at) * b.rate)
            b.at = now
            self.buckets[key] = b
            self.buckets.move_to_end(key)
            while len(self.buckets) > self.max_buckets:
                self.buckets.popitem(last=False)
            if b.tokens >= 1:
                b.tokens -= 1
                return 0.0
            return (1 - b.tokens) / b.rate


def parse(text: str) -> list[tuple[str, float, float]]:
    rules = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        pattern, _, spec = item.partition("=")
        rate, _, burst = spec.partition("/")
        try:
            r, b = float(rate), float(burst or rate)
        except ValueError:
            r = b = -1
        if not pattern or r <= 0 or b < 1:
            raise ValueError(f"DBAAS_RATE_LIMITS: {item!r} is not <glob>=<requests per second>/<burst>, "
                             "e.g. *=20/40")
        rules.append((pattern, r, b))
    return rules


def caller_bucket(principal: str) -> str:
    """The bucket of one caller (requests that name no organization, or one it is not part of)."""
    return f"user:{principal}"


def bucket_for(tenant: str, roles: set[str] | frozenset[str], principal: str) -> str:
    """The bucket a request naming organization `tenant` is charged to, once the caller's `roles`
    there are known: the organization's for its members, the caller's own otherwise."""
    return tenant if roles else caller_bucket(principal)


def charge(request: Request, key: str) -> None:
    """Count this request against `key` once; 429 when its bucket is empty."""
    charged = getattr(request.state, "rate_charged", None)
    if charged is None:
        charged = request.state.rate_charged = set()
    if key in charged:
        return
    charged.add(key)
    wait = request.app.state.limiter.take(key)
    if wait > 0:
        LIMITED.labels(key if not key.startswith("user:") else "user").inc()
        raise HTTPException(429, f"too many requests for {key}; retry in {math.ceil(wait)} s",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
