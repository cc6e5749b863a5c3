"""Write routes: validate, build the command, publish it, answer 202 with the operation.

The operation id is the command id, which is the `Idempotency-Key` when the caller sends one:
repeating a request with the same key and body yields the same operation (the processor judges
a command id once); the same key with another body is rejected as a conflict.
"""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

import commands
from commands import (
    Actor,
    CancelOperation,
    CommandEnvelope,
    CreateOrganization,
    CreateService,
    DeleteService,
    ScaleService,
    SetDeletionProtection,
)
from gateway.access import Reads, require_command, roles_in
from gateway.auth import Identity, current_identity
from projections.reads import ReadModel
from runtime import tracing
from runtime.publisher import PublishError

SERVICE_ID_NAMESPACE = uuid.UUID("5d1c8c59-3c8e-4b7e-9a43-0b4f3f0c6a11")

router = APIRouter()


class OrganizationIn(BaseModel):
    slug: str = Field(description="DNS-1123 label; becomes the tenant id")
    display_name: str | None = None


class ServiceIn(BaseModel):
    org: str = Field(description="organization slug (tenant id)")
    name: str
    engine: str = Field(description="yugabyte, vitess, scylla, dragonfly, aerospike or mongodb")
    pop: str = Field(description="lagos, johannesburg, frankfurt, ashburn, singapore or local")
    size: str = "small"
    engine_version: str | None = None
    cpu: float | None = None
    memory_gb: int | None = None
    storage_gb: int | None = None
    replicas: int | None = None
    deletion_protection: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class ScaleIn(BaseModel):
    cpu: float | None = None
    memory_gb: int | None = None
    storage_gb: int | None = None
    replicas: int | None = None


class ProtectionIn(BaseModel):
    enabled: bool = Field(description="true: the service cannot be deleted until this is turned off")


class Accepted(BaseModel):
    operation_id: str
    status_url: str
    service_id: str | None = None
    backup_id: str | None = None


def command_id(key: str | None) -> str:
    if key is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(key))
    except ValueError:
        raise RequestValidationError([{"loc": ["header", "Idempotency-Key"], "type": "value_error",
                                       "msg": "Idempotency-Key must be a UUID"}]) from None


def check(payload) -> None:
    problems = commands.validate(payload)
    if problems:
        raise RequestValidationError([
            {"loc": ["body", p.field] if p.field else ["body"], "type": p.reason_code, "msg": p.message}
            for p in problems])


async def publish(request: Request, reads: ReadModel, response: Response, tenant: str, actor: Actor, payload,
                  command_id: str, correlation: str | None, service_id: str | None = None) -> Accepted:
    check(payload)
    envelope = CommandEnvelope(
        command_id=command_id, tenant_id=tenant, actor=actor, issued_at=datetime.now(timezone.utc),
        correlation_id=correlation or str(uuid.uuid4()), payload=payload)
    operation = commands.operation_id(tenant, command_id)
    known = reads.operation_fingerprint(operation)
    if known is not None and known != commands.fingerprint_of(payload):
        raise HTTPException(409, f"Idempotency-Key {command_id} was already used for a different request "
                                 f"(operation {operation}); send a new key for a new request")
    tracing.annotate(tracing.attributes(operation, tenant, "request", command_type=type(payload).__name__,
                                        command_id=command_id))
    publisher = request.app.state.publisher
    # The producer gives up after `publish_timeout` (its message timeout) and reports it; the extra
    # seconds only guard against a report that never comes. Shielded: the delivery report may
    # still resolve the future after this request has been answered.
    timeout = getattr(request.app.state, "publish_timeout", 30.0) + 5
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(publisher.publish_async(envelope))), timeout)
    except TimeoutError:
        raise PublishError(f"command {command_id} not confirmed by the broker within {timeout:.0f} s") from None
    location = f"/api/v1/operations/{operation}"
    response.headers["Location"] = location
    response.headers["X-Correlation-Id"] = envelope.correlation_id
    return Accepted(operation_id=operation, status_url=location, service_id=service_id)


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key")]
CorrId = Annotated[str | None, Header(alias="X-Correlation-Id")]


@router.post("/organizations", status_code=202, response_model=Accepted, tags=["organizations"])
async def create_organization(body: OrganizationIn, request: Request, response: Response, reads: Reads,
                              identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                              correlation_id: CorrId = None) -> Accepted:
    payload = CreateOrganization(body.slug, body.display_name or body.slug)
    actor = require_command(request, reads, identity, body.slug, "CreateOrganization")
    return await publish(request, reads, response, body.slug, actor, payload, command_id(idempotency_key),
                          correlation_id)


@router.post("/services", status_code=202, response_model=Accepted, tags=["services"])
async def create_service(body: ServiceIn, request: Request, response: Response, reads: Reads,
                         identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                         correlation_id: CorrId = None) -> Accepted:
    op_id = command_id(idempotency_key)
    # Derived from the command id, so a retried request carries the same service id (same payload).
    service_id = str(uuid.uuid5(SERVICE_ID_NAMESPACE, f"{body.org}/{op_id}"))
    fields = body.model_dump(exclude={"org"})
    payload = CreateService(service_id=service_id, **fields)
    check(payload)  # a malformed request is a 422 whoever sends it
    visible(request, reads, identity, body.org, f"no organization {body.org} among yours")
    actor = require_command(request, reads, identity, body.org, "CreateService")
    return await publish(request, reads, response, body.org, actor, payload, op_id, correlation_id,
                         service_id=service_id)


def visible(request: Request, reads: ReadModel, identity: Identity, tenant: str | None, missing: str) -> str:
    """`tenant` when the caller holds a role in it; 404 otherwise — what belongs to organizations
    the caller is not part of does not exist for it."""
    if tenant is None or not roles_in(request, reads, identity, tenant):
        raise HTTPException(404, missing)
    return tenant


def tenant_of(request: Request, reads: ReadModel, identity: Identity, service_id: str) -> str:
    return visible(request, reads, identity, reads.service_tenant(service_id), f"no service {service_id}")


@router.post("/services/{service_id}/scale", status_code=202, response_model=Accepted, tags=["services"])
async def scale_service(service_id: str, body: ScaleIn, request: Request, response: Response, reads: Reads,
                        identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                        correlation_id: CorrId = None) -> Accepted:
    payload = ScaleService(service_id=service_id, **body.model_dump())
    tenant = tenant_of(request, reads, identity, service_id)
    actor = require_command(request, reads, identity, tenant, "ScaleService")
    return await publish(request, reads, response, tenant, actor, payload,
                         command_id(idempotency_key), correlation_id, service_id=service_id)


@router.put("/services/{service_id}/deletion-protection", status_code=202, response_model=Accepted,
            tags=["services"])
async def set_deletion_protection(service_id: str, body: ProtectionIn, request: Request, response: Response,
                                  reads: Reads,
                                  identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                                  correlation_id: CorrId = None) -> Accepted:
    """Turn deletion protection on or off. The setting holds once accepted; the service's manifests
    are rendered and committed again (an operation, queued like a scale), so a deletion sent after
    turning it off runs once the PoP has the unprotected manifests."""
    tenant = tenant_of(request, reads, identity, service_id)
    actor = require_command(request, reads, identity, tenant, "SetDeletionProtection")
    return await publish(request, reads, response, tenant, actor, SetDeletionProtection(service_id, body.enabled),
                         command_id(idempotency_key), correlation_id, service_id=service_id)


@router.delete("/services/{service_id}", status_code=202, response_model=Accepted, tags=["services"])
async def delete_service(service_id: str, request: Request, response: Response, reads: Reads,
                         identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                         correlation_id: CorrId = None) -> Accepted:
    tenant = tenant_of(request, reads, identity, service_id)
    actor = require_command(request, reads, identity, tenant, "DeleteService")
    return await publish(request, reads, response, tenant, actor,
                         DeleteService(service_id), command_id(idempotency_key), correlation_id,
                         service_id=service_id)


@router.post("/operations/{operation_id}/cancel", status_code=202, response_model=Accepted, tags=["operations"],
             responses={404: {"description": "no such operation"}})
async def cancel_operation(operation_id: str, request: Request, response: Response, reads: Reads,
                           identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                           correlation_id: CorrId = None) -> Accepted:
    """Cancel an operation that is queued behind another on its service (dropped), or that awaits
    its PoP (its GitOps commit is reverted). The answer is the cancellation's own operation; the
    cancelled operation's state becomes Cancelled, or the cancellation is rejected with the reason."""
    tenant = visible(request, reads, identity, reads.operation_tenant(operation_id),
                      f"no operation {operation_id}")
    actor = require_command(request, reads, identity, tenant, "CancelOperation")
    return await publish(request, reads, response, tenant, actor, CancelOperation(operation_id),
                         command_id(idempotency_key), correlation_id)
