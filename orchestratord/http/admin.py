"""Admin routes: the policy reload (the admin token guards them, orchestratord.http.auth)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.http.audit import audit
from orchestratord.policy import PolicyHolder
from shared.params import read_json
from shared.problem import InvalidParams


async def reload_policy(request: Request) -> Response:
    """Validate and install a policy: JSON {source} (Starlark text) or {} to re-read the file."""
    payload = await read_json(request) if (await request.body()).strip() else {}
    holder: PolicyHolder = request.state.policy
    if not isinstance(payload, Mapping) or set(payload) - {"source", "name"}:
        raise InvalidParams(
            "the body must be {source, name?} or empty",
            errors=[{"field": "body", "message": "expected {source: <starlark text>, name?: str}"}],
        )
    source = payload.get("source")
    before = {"name": holder.engine.name, "sha256": holder.engine.sha256}
    # Compiling and dry-running a policy takes a while: never on the event loop. admit,
    # schedule and plan (specs/fleet.md FLT-010) come from one compile: all of it changes or
    # none (POL-074).
    if source is None:
        engine = await asyncio.to_thread(holder.reload)
    elif isinstance(source, str):
        name = str(payload.get("name") or "<admin>")
        engine = await asyncio.to_thread(holder.reload_source, source, name=name)
    else:
        raise InvalidParams(
            "source must be a string", errors=[{"field": "source", "message": "must be a string"}]
        )
    after = {"name": engine.name, "sha256": engine.sha256}
    audit(
        request,
        "policy.reload" if source is None else "policy.put",
        "policy",
        before=before,
        after=after,
    )
    return JSONResponse(
        {
            "name": engine.name,
            "sha256": engine.sha256,
            "defines": sorted(engine.defines),
            "warnings": list(engine.warnings),
        }
    )


routes = [
    Route("/v2/admin/policy", reload_policy, methods=["POST"]),
]
