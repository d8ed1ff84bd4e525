"""Tenants' limits (admin) and usage (each its own; the admin every tenant's): ORCH-323,
ORCH-327."""

from __future__ import annotations

import re

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.domain.quotas import USAGE_BY, UsageBy, parse_limits
from orchestratord.http.audit import audit
from orchestratord.http.tasks import caller_of
from orchestratord.runtime.service import TaskService
from shared.params import read_json
from shared.problem import Forbidden, InvalidParams

MAX_TENANT = 128
_AGO = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _tenant(request: Request) -> str:
    tenant: str = request.path_params["tenant"]
    if not 0 < len(tenant) <= MAX_TENANT:
        raise InvalidParams(
            f"a tenant name is 1-{MAX_TENANT} characters",
            errors=[{"field": "tenant", "message": f"must be 1-{MAX_TENANT} characters"}],
        )
    return tenant


async def get_limits(request: Request) -> Response:
    service: TaskService = request.state.service
    return JSONResponse(service.tenants.limits_json(_tenant(request)))


async def put_limits(request: Request) -> Response:
    """Replace the tenant's limits: a field left out or null is no limit (ORCH-323)."""
    service: TaskService = request.state.service
    tenant = _tenant(request)
    limits = parse_limits(await read_json(request))
    before = service.tenants.quotas.limits.get(tenant)
    reply = await service.tenants.set_limits(tenant, limits)
    audit(
        request,
        "limits.put",
        tenant,
        before=None if before is None else before.to_json(),
        after=limits.to_json(),
    )
    return JSONResponse(reply)


def _time(params: QueryParams, name: str, now_ms: int, default: int) -> int:
    """`since`/`until`: unix milliseconds, or a time ago (30s, 15m, 24h, 7d)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw.isdigit() and len(raw) <= 16:
        return int(raw)
    m = _AGO.match(raw)
    if m is None:
        raise InvalidParams(
            f"{name} must be unix milliseconds or a time ago like 15m, 24h, 7d",
            errors=[{"field": name, "message": "expected unix ms or 30s / 15m / 24h / 7d"}],
        )
    return now_ms - int(m.group(1)) * _UNIT_MS[m.group(2)]


async def get_usage(request: Request) -> Response:
    """GET /v2/usage?since=&until=&by=tenant|model|key|hour[&tenant=]: totals per group; a
    client key sees its own tenant's only (ORCH-327)."""
    service: TaskService = request.state.service
    caller = caller_of(request)
    params = request.query_params
    now = service.clock()
    since = _time(params, "since", now, now - 86_400_000)
    until = _time(params, "until", now, now + 1)
    by = params.get("by", "tenant")
    if by not in USAGE_BY:
        raise InvalidParams(
            f"by must be one of {', '.join(USAGE_BY)}",
            errors=[{"field": "by", "message": f"one of {', '.join(USAGE_BY)}"}],
        )
    asked = params.get("tenant")
    if caller.sees_all:
        tenant, restricted = asked, asked is not None
    else:
        if asked is not None and asked != caller.tenant:
            raise Forbidden("a client key sees its own tenant's usage only")
        tenant, restricted = caller.tenant, True
    by_: UsageBy = by
    rows = await service.tenants.usage(since, until, by_, tenant, restricted)
    return JSONResponse({"since_ms": since, "until_ms": until, "by": by, "usage": rows})


routes = [
    Route("/v2/admin/tenants/{tenant}/limits", get_limits, methods=["GET"]),
    Route("/v2/admin/tenants/{tenant}/limits", put_limits, methods=["PUT"]),
    Route("/v2/usage", get_usage, methods=["GET"]),
]
