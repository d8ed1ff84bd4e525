"""Admin routes: the running policy, its reload and a check that installs nothing (the admin
token guards them, orchestratord.http.auth)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.http.audit import audit
from orchestratord.policy import PolicyEngine, PolicyHolder
from shared.params import read_json
from shared.problem import InvalidParams


async def _payload(request: Request) -> Mapping[str, object]:
    payload = await read_json(request) if (await request.body()).strip() else {}
    if not isinstance(payload, Mapping) or set(payload) - {"source", "name"}:
        raise InvalidParams(
            "the body must be {source, name?} or empty",
            errors=[{"field": "body", "message": "expected {source: <starlark text>, name?: str}"}],
        )
    return payload


def _summary(engine: PolicyEngine) -> dict[str, object]:
    return {
        "name": engine.name,
        "sha256": engine.sha256,
        "defines": sorted(engine.defines),
        "warnings": list(engine.warnings),
    }


async def get_policy(request: Request) -> Response:
    """The running policy (ORCH-371): its text, hash, file and when it was installed."""
    engine = request.state.policy.engine
    path = str(engine.path) if engine.path is not None else None
    return JSONResponse(
        {
            **_summary(engine),
            "source": engine.source,
            "path": path,
            "loaded_ms": engine.loaded_ms,
        }
    )


async def check_policy(request: Request) -> Response:
    """Compile and dry-run a policy without installing it (ORCH-372); 400 lists problems."""
    payload = await _payload(request)
    source = payload.get("source")
    if not isinstance(source, str):
        raise InvalidParams(
            "source is required: the Starlark text to check",
            errors=[{"field": "source", "message": "must be a string"}],
        )
    running: PolicyEngine = request.state.policy.engine
    engine = await asyncio.to_thread(
        PolicyEngine.from_source,
        source,
        name=str(payload.get("name") or "<check>"),
        budget_ms=running.budget_ms,
        clock=running.clock,
    )
    return JSONResponse({"ok": True, **_summary(engine)})


async def reload_policy(request: Request) -> Response:
    """Validate and install a policy: JSON {source} (Starlark text) or {} to re-read the file."""
    payload = await _payload(request)
    holder: PolicyHolder = request.state.policy
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
    return JSONResponse(_summary(engine))


routes = [
    Route("/v2/admin/policy", reload_policy, methods=["POST"]),
    Route("/v2/admin/policy", get_policy, methods=["GET"]),
    Route("/v2/admin/policy/check", check_policy, methods=["POST"]),
]
