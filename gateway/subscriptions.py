"""Tenant subscriptions: Kafka credentials that read the organization's own streams.

`POST /organizations/{id}/subscriptions` {name} (org-owner, org-admin) generates the password,
answers it once — with the principal, bootstrap, SASL settings, topics and consumer-group prefix
of a ready client configuration — and publishes `CreateSubscription` carrying the password only
sealed to the subscription saga's key (`runtime.sealing`, bound to the subscription's id). No
event, log line, topic or read model holds it: the saga opens it to create the SCRAM credential
and the broker keeps only SCRAM's salted keys. The answer has `Cache-Control: no-store`.
`GET …/subscriptions` (any role in the organization) lists them, never with a password.
`DELETE …/subscriptions/{subscription_id}` (org-owner, org-admin) revokes one: its ACLs and
credential are deleted, and its clients are refused from then on.

A retried create with the same `Idempotency-Key` answers 409: the password was shown once and is
not kept anywhere to show again (revoke and create another).
"""
from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from commands import CreateSubscription, RevokeSubscription
from commands.catalog import (
    SUBSCRIPTION_SEAL_KEY_ID,
    subscription_group_prefix,
    subscription_principal,
    subscription_seal_context,
    subscription_topics,
)
from gateway import writes
from gateway.access import Reads, require_command, require_read
from gateway.auth import Identity, current_identity
from runtime import sealing
from runtime.kafka import SASL_MECHANISM, SECURITY_PROTOCOL

router = APIRouter(tags=["subscriptions"])
IdemKey, CorrId = writes.IdemKey, writes.CorrId
SUBSCRIPTION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:dbaas:subscription")


class SubscriptionIn(BaseModel):
    name: str = Field(description="a DNS label, unique among the organization's subscriptions in use")


class ClientConfig(BaseModel):
    """What a Kafka client needs (librdkafka / Java property names)."""

    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str
    group_id_prefix: str = Field(description="consumer groups must start with this")
    topics: list[str] = Field(description="topics it may read; a trailing * is a prefix")


class SubscriptionCreated(writes.Accepted):
    subscription_id: str
    name: str
    client: ClientConfig = Field(description="shown once: the password is kept nowhere")


class Subscription(BaseModel):
    subscription_id: str
    name: str
    principal: str
    group_prefix: str
    status: str = Field(description="Requested, Active, Revoking, Revoked or Failed")
    reason: str | None
    requested_by: str | None
    topics: list[str]
    created_at: datetime
    updated_at: datetime


@router.post("/organizations/{org}/subscriptions", status_code=202, response_model=SubscriptionCreated)
async def create_subscription(org: str, body: SubscriptionIn, request: Request, response: Response, reads: Reads,
                              identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                              correlation_id: CorrId = None) -> SubscriptionCreated:
    require_read(request, reads, identity, org, "subscriptions")
    actor = require_command(request, reads, identity, org, "CreateSubscription")
    seal_key = getattr(request.app.state, "subscription_seal_key", None)
    if not seal_key:
        raise HTTPException(503, "subscriptions are not offered by this platform (no sealing key configured)")
    command_id = writes.command_id(idempotency_key)
    subscription_id = str(uuid.uuid5(SUBSCRIPTION_NAMESPACE, f"{org}/{command_id}"))
    password = secrets.token_urlsafe(32)
    sealed = sealing.seal(seal_key, SUBSCRIPTION_SEAL_KEY_ID, password.encode(),
                          subscription_seal_context(subscription_id))
    accepted = await writes.publish(request, reads, response, org, actor,
                                    CreateSubscription(subscription_id, body.name, sealed), command_id, correlation_id)
    response.headers["Cache-Control"] = "no-store"
    client = ClientConfig(bootstrap_servers=request.app.state.subscription_bootstrap,
                          security_protocol=SECURITY_PROTOCOL, sasl_mechanism=SASL_MECHANISM,
                          sasl_username=subscription_principal(org, body.name), sasl_password=password,
                          group_id_prefix=subscription_group_prefix(org, body.name), topics=subscription_topics(org))
    return SubscriptionCreated(**accepted.model_dump(), subscription_id=subscription_id, name=body.name, client=client)


@router.get("/organizations/{org}/subscriptions", response_model=list[Subscription])
def list_subscriptions(org: str, request: Request, reads: Reads,
                       identity: Identity = Depends(current_identity)) -> list[Subscription]:
    require_read(request, reads, identity, org, "subscriptions")
    return [Subscription(subscription_id=s.subscription_id, name=s.name, principal=s.principal,
                         group_prefix=s.group_prefix, status=s.status, reason=s.reason, requested_by=s.requested_by,
                         topics=subscription_topics(org), created_at=s.created_at, updated_at=s.updated_at)
            for s in reads.subscriptions(org)]


@router.delete("/organizations/{org}/subscriptions/{subscription_id}", status_code=202,
               response_model=writes.Accepted)
async def revoke_subscription(org: str, subscription_id: str, request: Request, response: Response, reads: Reads,
                              identity: Identity = Depends(current_identity), idempotency_key: IdemKey = None,
                              correlation_id: CorrId = None) -> writes.Accepted:
    require_read(request, reads, identity, org, "subscriptions")
    actor = require_command(request, reads, identity, org, "RevokeSubscription")
    return await writes.publish(request, reads, response, org, actor, RevokeSubscription(subscription_id),
                                writes.command_id(idempotency_key), correlation_id)
