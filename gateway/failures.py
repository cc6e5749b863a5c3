"""What the gateway answers when a dependency fails rather than the request: PostgreSQL (the read
models) or Kafka / the schema registry (publishing) unreachable or timing out is a 503 with
`Retry-After`, never a 500; a command too large for the broker is a 413; a value PostgreSQL refuses
to store is the request's fault (422). `install(app)` registers the handlers.

Imports fastapi, confluent-kafka and the error types of `runtime.publisher`, `schemas.registry` and
`projections.reads` (the read port's errors and the database driver's, listed there, so that the
gateway imports no database library); knows no route.
"""
from __future__ import annotations

import structlog
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from projections.reads import DATABASE_REFUSED, DATABASE_UNAVAILABLE
from runtime.publisher import CommandTooLarge, PublishError
from schemas.registry import RegistryUnavailable

RETRY_AFTER_SECONDS = 5
UNAVAILABLE = Counter("dbaas_http_dependency_unavailable_total",
                      "Requests answered 503 because a dependency failed", ["dependency"])
log = structlog.get_logger("gateway.failures")


def unavailable(dependency: str, what: str) -> JSONResponse:
    UNAVAILABLE.labels(dependency).inc()
    return JSONResponse({"detail": f"{what}; retry in {RETRY_AFTER_SECONDS} s"}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", error=_first_line(exc))
    return unavailable("postgresql", "the read models' database is unavailable")


async def broker_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("publishing failed", error=_first_line(exc))
    return unavailable("kafka", "the command could not be handed to the message broker; send the request "
                       "again with the same Idempotency-Key (it is judged once)")


async def log_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("event log unavailable", error=_first_line(exc))
    return unavailable("kafka", "the event log is unavailable")


async def registry_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("schema registry unavailable", error=_first_line(exc))
    return unavailable("registry", "the schema registry is unavailable")


async def command_too_large(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "the command is larger than the message broker accepts; "
                                   "send fewer or shorter labels or names"}, status_code=413)


async def unstorable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"the request holds a value the database cannot store: {_first_line(exc)}"},
                        status_code=422)


def _first_line(exc: Exception) -> str:
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).splitlines() or [type(cause).__name__])[0][:300]


def install(app: FastAPI) -> None:
    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, database_down)
    for kind in DATABASE_REFUSED:
        app.add_exception_handler(kind, unstorable)
    app.add_exception_handler(CommandTooLarge, command_too_large)
    app.add_exception_handler(PublishError, broker_down)
    app.add_exception_handler(KafkaException, log_down)
    app.add_exception_handler(RegistryUnavailable, registry_down)
