"""`GET/PUT /organizations/{id}/quotas`: an organization's quota and what its services use.

The quota is the org-owner's `SetQuota` (the platform default until one is set); usage comes from
the services read model (what holds quota: services neither deleted nor failed). The PUT publishes
`SetQuota`, which `decide` judges again (org-owner only, bounds) — the check here is the fast path.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from commands import SetQuota
from commands.catalog import DEFAULT_QUOTA
from events import Quota, ResourceLimit
from gateway import writes
from gateway.access import Reads, require_command, require_read
from gateway.auth import Identity, current_identity
from schemas import as_record

router = APIRouter(tags=["organizations"])


class Limit(BaseModel):
    cpu: float = Field(ge=0, description="vCPU: cpu per replica times replicas, summed over services")
    memory_gb: int = Field(ge=0, description="GiB: memory per replica times replicas")
    storage_gb: int = Field(ge=0, description="GiB: storage per replica times replicas")


class QuotaBody(BaseModel):
    max_services: int = Field(ge=0, description="services that hold quota (neither deleted nor failed)")
    total: Limit
    engines: dict[str, Limit] = Field(default_factory=dict, description="engine -> limit; others: total only")
    pops: dict[str, Limit] = Field(default_factory=dict, description="PoP -> limit; others: total only")


class Usage(BaseModel):
    services: int
    total: Limit
    engines: dict[str, Limit]
    pops: dict[str, Limit]


class Quotas(BaseModel):
    organization: str
    default: bool = Field(description="true: no quota was set, the platform default applies")
    quota: QuotaBody
    usage: Usage


def _limit(cpu: float, memory: int, storage: int) -> Limit:
    return Limit(cpu=round(cpu, 3), memory_gb=int(memory), storage_gb=int(storage))


@router.get("/organizations/{org}/quotas", response_model=Quotas,
            responses={404: {"description": "no such organization"}})
def get_quotas(org: str, request: Request, reads: Reads,
               identity: Identity = Depends(current_identity)) -> Quotas:
    require_read(request, reads, identity, org, "quotas")
    reading = reads.quotas(org)
    if reading is None:
        raise HTTPException(404, f"organization {org} not found")
    sums: dict[str, dict[str, list[float]]] = {"engines": {}, "pops": {}}
    total = [0.0, 0.0, 0.0]
    for g in reading.usage:
        for bucket in (total, sums["engines"].setdefault(g.engine, [0.0] * 3),
                       sums["pops"].setdefault(g.pop, [0.0] * 3)):
            for i, amount in enumerate((g.cpu, g.memory_gb, g.storage_gb)):
                bucket[i] += amount
    usage = Usage(services=sum(g.services for g in reading.usage), total=_limit(*total),
                  engines={k: _limit(*v) for k, v in sums["engines"].items()},
                  pops={k: _limit(*v) for k, v in sums["pops"].items()})
    return Quotas(organization=org, default=reading.quota is None,
                  quota=QuotaBody.model_validate(as_record(reading.quota or DEFAULT_QUOTA)), usage=usage)


@router.put("/organizations/{org}/quotas", status_code=202, response_model=writes.Accepted,
            responses={403: {"description": "only an org-owner sets quotas"}})
async def put_quotas(org: str, body: QuotaBody, request: Request, response: Response, reads: Reads,
                     identity: Identity = Depends(current_identity),
                     idempotency_key: writes.IdemKey = None, correlation_id: writes.CorrId = None,
                     ) -> writes.Accepted:
    actor = require_command(request, reads, identity, org, "SetQuota")
    quota = Quota(body.max_services, ResourceLimit(**body.total.model_dump()),
                  {k: ResourceLimit(**v.model_dump()) for k, v in body.engines.items()},
                  {k: ResourceLimit(**v.model_dump()) for k, v in body.pops.items()})
    return await writes.publish(request, reads, response, org, actor, SetQuota(quota),
                                writes.command_id(idempotency_key), correlation_id)
