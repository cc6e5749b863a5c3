"""Change data capture over HTTP: turn a service's change stream on and off.

Writes publish `EnableCdc` and `DisableCdc` (202 with the operation, as every write: `decide`
judges them again — the engine, the service's state, one CDC operation at a time). The stream's
state is part of the service (`GET /services/{id}`, field `cdc`), read from the services read
model like the rest of it.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from commands import DisableCdc, EnableCdc
from gateway import writes
from gateway.access import Reads, require_command
from gateway.auth import Identity, current_identity

router = APIRouter(tags=["cdc"])
_WRITE: dict[int | str, dict[str, Any]] = {404: {"description": "no such service among yours"},
                                           403: {"description": "the caller's roles do not allow it"}}


class CdcIn(BaseModel):
    tables: list[str] = Field(default_factory=list, description=(
        "tables (collections) to capture: `table` or `schema.table` (yugabyte), `table` (vitess), "
        "`keyspace.table` (scylla), `database.collection` (mongodb); empty: every table"))


@router.post("/services/{service_id}/cdc", status_code=202, response_model=writes.Accepted, responses=_WRITE)
async def enable_cdc(service_id: str, request: Request, response: Response, reads: Reads, body: CdcIn | None = None,
                     identity: Identity = Depends(current_identity), idempotency_key: writes.IdemKey = None,
                     correlation_id: writes.CorrId = None) -> writes.Accepted:
    """Stream the service's changes to its CDC topics (`dbaas.cdc.{engine}.{tenant}.…`), values in
    Avro through the schema registry. Again with other tables: the connector is reconfigured."""
    tenant = writes.tenant_of(request, reads, identity, service_id)
    actor = require_command(request, reads, identity, tenant, "EnableCdc")
    tables = tuple((body or CdcIn()).tables)
    return await writes.publish(request, reads, response, tenant, actor, EnableCdc(service_id, tables),
                                writes.command_id(idempotency_key), correlation_id, service_id=service_id)


@router.delete("/services/{service_id}/cdc", status_code=202, response_model=writes.Accepted, responses=_WRITE)
async def disable_cdc(service_id: str, request: Request, response: Response, reads: Reads,
                      identity: Identity = Depends(current_identity), idempotency_key: writes.IdemKey = None,
                      correlation_id: writes.CorrId = None) -> writes.Accepted:
    """Stop the service's change stream: its connector goes, with its replication slot and
    publication. Its topics stay until their retention ends."""
    tenant = writes.tenant_of(request, reads, identity, service_id)
    actor = require_command(request, reads, identity, tenant, "DisableCdc")
    return await writes.publish(request, reads, response, tenant, actor, DisableCdc(service_id),
                                writes.command_id(idempotency_key), correlation_id, service_id=service_id)
