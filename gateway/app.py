"""Composition root of the HTTP process: the gateway's write routes and the projections' query
routes under `/api/v1`, OpenAPI at `/openapi.json`, Prometheus metrics at `/metrics`.

Run with `python -m gateway.app` (settings from the environment) or build with `create_app`. The
read models are reached only through the read port (`projections.reads`): `create_app` builds its
SQL implementation at start-up and hands it to every route through one dependency
(`gateway.access.read_model`), which tests override with a fake.
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from fastapi import Depends, FastAPI, Request
from prometheus_client import Counter, Histogram, make_asgi_app

from gateway import (audit, backups, cdc, credentials, failures, members, quotas, ratelimit, subscriptions, telemetry,
                     writes)
from gateway.access import Reads, tenants_of
from gateway.auth import Authenticator, Identity, current_identity
from gateway.guard import InputGuard
from projections import api as queries
from projections.reads import SqlReadModel
from runtime import tracing
from runtime.publisher import Publisher
from runtime.kafka import KafkaAccess, access_from_env
from runtime.settings import env, read
from runtime.signing import Signer

REQUESTS = Counter("dbaas_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("dbaas_http_request_seconds", "HTTP request latency", ["method", "route"])
log = structlog.get_logger("gateway")


@dataclass(frozen=True)
class GatewaySettings:
    kafka: KafkaAccess = env("DBAAS_KAFKA_BOOTSTRAP", compose=access_from_env)
    registry_url: str = env("DBAAS_REGISTRY_URL")
    database_url: str = env("DBAAS_DATABASE_URL", repr=False)
    commands_topic: str = env("DBAAS_COMMANDS_TOPIC", "dbaas.commands")
    # the gateway's key: the processor believes the actors it signs
    signer: Signer | None = env("DBAAS_SIGNING_KEY", None, compose=Signer.from_env, required=True, repr=False,
                                hint="the gateway signs the commands it publishes")
    # Seconds a command may wait for the broker before the request is answered 503 (and the
    # producer drops it): a caller is not held for librdkafka's default of five minutes.
    publish_timeout: float = env("DBAAS_PUBLISH_TIMEOUT", 10.0)
    # The tracing UI (Jaeger) an operation's `trace` links to; unset: the trace id alone.
    tracing_url: str | None = env("DBAAS_TRACING_URL", None)
    # Tenant subscriptions: the subscription saga's public sealing key (passwords travel sealed to
    # it; unset: subscriptions are not offered) and the bootstrap their clients are given (default:
    # the platform's own).
    subscription_seal_key: str | None = env("DBAAS_SUBSCRIPTION_SEAL_PUBLIC_KEY", None, required=True,
                                            hint="the subscription saga's public sealing key")
    subscription_bootstrap: str | None = env("DBAAS_SUBSCRIPTION_BOOTSTRAP", None)

    @classmethod
    def from_env(cls) -> GatewaySettings:
        return read(cls)


def _scope(request: Request, reads: Reads, identity: Identity = Depends(current_identity)) -> queries.Scope:
    """The read models a caller sees: its organizations only."""
    ratelimit.charge(request, ratelimit.caller_bucket(identity.principal))
    return queries.Scope(frozenset(tenants_of(reads, identity)), identity.principal)


def create_app(settings: GatewaySettings | None = None, authenticator: Authenticator | None = None) -> FastAPI:
    settings = settings or GatewaySettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        read_model = app.state.read_model = SqlReadModel.connect(settings.database_url)
        app.state.publisher = Publisher(settings.kafka, settings.registry_url, settings.commands_topic,
                                        signer=settings.signer,
                                        extra={"message.timeout.ms": int(settings.publish_timeout * 1000)})
        app.state.publish_timeout = settings.publish_timeout
        app.state.subscription_seal_key = settings.subscription_seal_key
        app.state.subscription_bootstrap = settings.subscription_bootstrap or settings.kafka.bootstrap
        app.dependency_overrides[queries.get_engine] = lambda: read_model.engine
        app.dependency_overrides[queries.get_scope] = _scope
        event_log = app.state.event_log = audit.EventLog(settings.kafka, settings.registry_url, read_model)
        app.dependency_overrides[queries.get_history] = lambda: event_log
        app.dependency_overrides[queries.get_tracing_url] = lambda: settings.tracing_url
        log.info("gateway started")
        yield
        app.state.publisher.close()
        event_log.close()
        read_model.close()
        tracing.shutdown()  # exports the spans still queued
        log.info("gateway stopped")

    app = FastAPI(title="dbaas control plane", version="1", lifespan=lifespan,
                  description="Writes publish commands (202 + operation); reads come from projections.")
    app.include_router(writes.router, prefix="/api/v1")
    app.include_router(credentials.router, prefix="/api/v1")
    app.include_router(quotas.router, prefix="/api/v1")
    app.include_router(members.router, prefix="/api/v1")
    app.include_router(subscriptions.router, prefix="/api/v1")
    app.include_router(audit.router, prefix="/api/v1")
    app.include_router(backups.router, prefix="/api/v1")
    app.include_router(telemetry.router, prefix="/api/v1")
    app.include_router(cdc.router, prefix="/api/v1")
    app.state.limiter = ratelimit.RateLimiter.from_env()
    app.state.authenticator = authenticator or Authenticator.from_env()
    app.include_router(queries.router, prefix="/api/v1")
    app.mount("/metrics", make_asgi_app())
    failures.install(app)
    app.add_middleware(InputGuard)  # inside `observe` below, so refused requests are counted too

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"status": "ok"}

    @app.middleware("http")
    async def observe(request: Request, call_next):
        correlation = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        structlog.contextvars.bind_contextvars(correlation_id=correlation)
        started = time.perf_counter()
        try:
            with _request_span(request):
                response = await call_next(request)
                route = getattr(request.scope.get("route"), "path", "unmatched")
                _finish_span(request, route, response.status_code, correlation)
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id")
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    return app


UNTRACED_PATHS = ("/healthz", "/metrics")  # probes and scrapes: no trace of their own
API_PREFIX = "/api/v1"


def _request_span(request: Request):
    """While tracing is on, a span per request (probes and scrapes aside), continuing the caller's
    `traceparent` header or starting a trace; the commands the request publishes carry it."""
    if not tracing.enabled() or request.url.path.startswith(UNTRACED_PATHS):
        return contextlib.nullcontext()
    return tracing.continued(f"{request.method} {request.url.path}", request.headers.get(tracing.TRACEPARENT),
                             {"http.request.method": request.method, "url.path": request.url.path},
                             kind=tracing.SpanKind.SERVER)


def _finish_span(request: Request, route: str, status: int, correlation: str) -> None:
    if not tracing.in_trace():
        return
    if request.url.path.startswith(API_PREFIX + "/") and not route.startswith(API_PREFIX):
        route = API_PREFIX + route  # the routers' paths are relative to where they are mounted
    tracing.rename(f"{request.method} {route}")
    tracing.annotate({"http.route": route, "http.response.status_code": status, "dbaas.correlation_id": correlation,
                      "dbaas.step": "request"})
    if status >= 500:
        tracing.fail(f"HTTP {status}")


def main() -> int:
    import uvicorn

    from runtime import logs

    logs.configure("gateway")
    tracing.configure("gateway", roots=1.0)  # every API request is recorded
    port = int(os.environ.get("DBAAS_API_PORT", "18080"))
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
