"""orchestratord's HTTP app: the /v2 client API, meta routes, and the lifespan that owns state.

Everything with runtime state (task service, database, policy, metrics, HTTP client) is made in
the lifespan and reaches handlers as `request.state.*`; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from orchestratord.auth import OrchestratorAuth
from orchestratord.db import BatchWriter, Store
from orchestratord.metrics import Metrics, MetricsPolicyObserver
from orchestratord.policy import PolicyEngine, PolicyHolder
from orchestratord.service import TaskService, parse_task_request
from orchestratord.settings import Settings
from orchestratord.streaming import EventStreamResponse
from orchestratord.worker_routes import routes as worker_routes
from shared.params import MAX_STOP_STRINGS, MAX_TOKENS_LIMIT, read_json
from shared.problem import InvalidParams, install_problem_handlers

log = logging.getLogger("llorch.orchestratord")
API_VERSION = "2.0"


def tenant_of(request: Request) -> str | None:
    """The tenant of the caller's API key (`--api-key TENANT:KEY`), if any."""
    tenant = getattr(request.state, "tenant", None)
    return tenant if isinstance(tenant, str) else None


def last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParams(
            "Last-Event-ID must be an integer event id",
            errors=[{"field": "Last-Event-ID", "message": "must be an integer"}],
        ) from None
    if value < -1:
        raise InvalidParams(
            "Last-Event-ID must be >= -1",
            errors=[{"field": "Last-Event-ID", "message": "must be >= -1"}],
        )
    return value


async def submit_task(request: Request) -> Response:
    service: TaskService = request.state.service
    req = parse_task_request(await read_json(request), tenant=tenant_of(request))
    record = await service.submit(req)
    events_url = f"/v2/tasks/{record.id}/events"
    if "text/event-stream" in request.headers.get("accept", ""):
        # The submitting connection owns the task: if it goes away, the task is cancelled.
        return EventStreamResponse(
            service.frames(record.id, cancel_on_detach=True),
            headers={"X-Llorch-Task-Id": record.id, "Content-Location": events_url},
        )
    return JSONResponse(
        {
            "task_id": record.id,
            "status": record.status,
            "queue_position": service.queue_position(record.id),
            "events_url": events_url,
        },
        status_code=202,
        headers={"Location": f"/v2/tasks/{record.id}"},
    )


async def task_events(request: Request) -> Response:
    service: TaskService = request.state.service
    task_id = request.path_params["task_id"]
    return EventStreamResponse(
        service.frames(task_id, last_event_id(request)), headers={"X-Llorch-Task-Id": task_id}
    )


async def cancel_task(request: Request) -> Response:
    await request.state.service.cancel(request.path_params["task_id"])
    return Response(status_code=204)


async def get_task(request: Request) -> Response:
    service: TaskService = request.state.service
    record = service.get(request.path_params["task_id"])
    body = record.to_json()
    body["queue_position"] = service.queue_position(record.id)
    return JSONResponse(body)


async def capabilities(request: Request) -> Response:
    service: TaskService = request.state.service
    settings: Settings = request.state.settings
    engine = request.state.policy.engine
    return JSONResponse(
        {
            "api_version": API_VERSION,
            "models": service.models(),
            "priorities": ["interactive", "batch"],
            "queue": {
                "capacity": settings.queue_capacity,
                "full_policy": settings.queue_full_policy,
            },
            "limits": {"max_tokens": MAX_TOKENS_LIMIT, "stop": MAX_STOP_STRINGS},
            "events": ["queued", "started", "token", "end", "error"],
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
    body = await asyncio.to_thread(m.render, service.queue.depth(), service.registry.counts(now))
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/v2/tasks", submit_task, methods=["POST"]),
        Route("/v2/tasks/{task_id}", get_task, methods=["GET"]),
        Route("/v2/tasks/{task_id}/events", task_events, methods=["GET"]),
        Route("/v2/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
        Route("/v2/meta/capabilities", capabilities, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *worker_routes,
    ]
    try:
        from orchestratord.openai_api import routes as openai_routes
    except ImportError:  # the OpenAI adapter is optional while it is being built
        return routes
    return routes + list(openai_routes)


def create_app(settings: Settings, *, handle_sighup: bool = False) -> Starlette:
    """The ASGI app. Nothing is opened until the lifespan starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        m = Metrics()
        policy = PolicyHolder(
            PolicyEngine.from_file(
                settings.policy,
                budget_ms=settings.policy_budget_ms,
                observer=MetricsPolicyObserver(m),
            )
        )
        store = Store(settings.database_url)
        await asyncio.to_thread(store.open)
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.read_timeout_s, connect=settings.connect_timeout_s, pool=None
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
            trust_env=False,
        )
        writer = BatchWriter(store)
        service = TaskService(
            settings, policy=policy, metrics=m, client=client, store=store, writer=writer
        )
        failed = await asyncio.to_thread(store.fail_unfinished, service.clock())
        if failed:
            log.warning("%d task(s) left unfinished by the last run marked WORKER_RESET", failed)
        service.registry.restore(await asyncio.to_thread(store.load_workers))
        writer.start()
        service.start()
        loop = asyncio.get_running_loop()
        if handle_sighup and threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGHUP, _reload_on_sighup, policy)
        app.state.service = service  # for the server's shutdown hook (orchestratord.__main__)
        try:
            yield {
                "service": service,
                "metrics": m,
                "policy": policy,
                "settings": settings,
                "store": store,
            }
        finally:
            if handle_sighup and threading.current_thread() is threading.main_thread():
                loop.remove_signal_handler(signal.SIGHUP)
            await service.stop()
            await writer.close()
            await client.aclose()
            store.close()

    app = Starlette(routes=_routes(), lifespan=lifespan)
    install_problem_handlers(app)
    app.add_middleware(
        OrchestratorAuth, key_tenants=settings.key_tenants, cluster_token=settings.cluster_token
    )
    return app


def _reload_on_sighup(policy: PolicyHolder) -> None:
    from orchestratord.policy import PolicyError

    try:
        engine = policy.reload()
    except PolicyError as e:
        log.error("SIGHUP: %s; keeping the running policy", e.detail)
        return
    log.info("SIGHUP: policy %s loaded (sha256 %s)", engine.name, engine.sha256[:12])
