"""Meta routes: capabilities, health, metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.metrics import Metrics
from orchestratord.runtime.service import TaskService
from orchestratord.settings import Settings
from shared.params import MAX_STOP_STRINGS, MAX_TOKENS_LIMIT
from shared.wire import EVENT_NAMES, PRIORITIES

API_VERSION = "2.0"


async def capabilities(request: Request) -> Response:
    service: TaskService = request.state.service
    settings: Settings = request.state.settings
    engine = request.state.policy.engine
    return JSONResponse(
        {
            "api_version": API_VERSION,
            "models": service.models(),
            "priorities": list(PRIORITIES),
            "queue": {
                "capacity": settings.queue_capacity,
                "full_policy": settings.queue_full_policy,
            },
            "limits": {"max_tokens": MAX_TOKENS_LIMIT, "stop": MAX_STOP_STRINGS},
            "events": list(EVENT_NAMES),
            "policy": {"name": engine.name, "sha256": engine.sha256},
        }
    )


async def health(request: Request) -> Response:
    service: TaskService = request.state.service
    return JSONResponse(
        {
            "status": "ok",
            "queue_depth": service.queue.depth(),
            "workers": service.registry.counts(service.clock()),
        }
    )


async def metrics(request: Request) -> Response:
    service: TaskService = request.state.service
    m: Metrics = request.state.metrics
    now = service.clock()
    kv = service.registry.kv.stats()
    body = await asyncio.to_thread(
        m.render, service.queue.depth(), service.registry.counts(now), kv
    )
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def openapi_document() -> bytes:
    """specs/openapi/orchestrator.yaml as JSON: the normative document itself, not one derived
    from the routes (`openapi.yaml` in this package is that file). Parsing it takes ~120 ms of
    CPU, so the lifespan does it once, off the event loop, and every request gets the bytes
    (ORCH-018)."""
    import yaml

    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    return bytes(JSONResponse(yaml.safe_load(text)).body)


async def openapi(request: Request) -> Response:
    return Response(request.state.openapi, media_type="application/json")


routes = [
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/v2/meta/capabilities", capabilities, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
