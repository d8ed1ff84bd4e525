"""llorch-workerd's HTTP routes and lifespan. The model loads in the background so `/health`
answers `loading` while it does; everything else lives in `WorkerState`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.auth import BearerAuth
from shared.heap import freeze_startup_heap
from shared.limits import BodyLimit
from shared.params import read_json
from shared.problem import InvalidParams, install_problem_handlers
from shared.sse import KEEPALIVE_S, EventStream
from shared.wire import CancelReply
from worker.embed_api import embeddings
from worker.engine import InferenceEngine
from worker.kvblocks import BlockLedger, block_hashes
from worker.params import parse_execute
from worker.registration import Registration, run_registration
from worker.runner import WorkerState, stream_job
from worker.settings import WorkerSettings

log = logging.getLogger("llorch.worker")
EngineLoader = Callable[[WorkerSettings], InferenceEngine]
# Called with an exit code when the process should stop (after /shutdown, or a failed load).
ExitHook = Callable[[int], None]


def _state(request: Request) -> WorkerState:
    state: WorkerState = request.state.worker
    return state


async def execute(request: Request) -> Response:
    received_at = time.perf_counter()
    state = _state(request)
    req = parse_execute(await read_json(request))
    prompt = await state.prepare(req)
    job, ticket = state.admit(req, prompt)
    body = stream_job(
        state, req, job, ticket, prompt.tokens, prompt.stops, received_at, prompt.grammar
    )

    def closed() -> None:
        # A body that never started never runs its `finally`: the job would keep its place.
        if job.state == "queued":
            job.cancel()
            ticket.release()
            state.finish(job)

    headers = {"Cache-Control": "no-store"}
    return EventStream(body, on_close=closed, keepalive_s=KEEPALIVE_S, headers=headers)


async def tokenize(request: Request) -> Response:
    """The prompt's length in this model's tokens, as /execute would count it (WRK-032): what
    orchestratord asks when its own bound cannot tell whether a prompt fits (ORCH-163)."""
    state = _state(request)
    req = parse_execute(await read_json(request))
    prompt = await state.prepare(req)
    answer: dict[str, Any] = {"n_tokens": len(prompt.tokens), "n_ctx": state.settings.n_ctx}
    if state.engine is not None:
        # WRK-173: the prompt's block hashes, so orchestratord can ask its cache index where
        # the prompt's prefix is cached (ORCH-402); hashed off the event loop, as tokenizing.
        size = state.engine.ledger.block_size
        hashes = await asyncio.get_running_loop().run_in_executor(
            state.tokenizer, block_hashes, prompt.tokens, size
        )
        answer |= {"block_size": size, "block_hashes": hashes}
    return JSONResponse(answer)


def _ledger(state: WorkerState) -> BlockLedger | None:
    return state.engine.ledger if state.engine is not None else None


async def cancel(request: Request) -> Response:
    state = _state(request)
    body = await read_json(request)
    job_id = body.get("job_id") if isinstance(body, dict) else None
    if not isinstance(job_id, str) or not job_id:
        raise InvalidParams(
            "job_id is required", errors=[{"field": "job_id", "message": "must be a string"}]
        )
    job = state.jobs.get(job_id)
    reply: CancelReply
    if job is None:
        reply = {"job_id": job_id, "state": "unknown", "tokens_emitted": 0}
    else:
        job.cancel()  # on the event loop: no token event is written after this line
        reply = {"job_id": job_id, "state": "cancelled", "tokens_emitted": job.emitted}
    return JSONResponse(reply, 202)


async def health(request: Request) -> Response:
    return JSONResponse(_state(request).health())


async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


async def shutdown(request: Request) -> Response:
    state = _state(request)
    if state.status != "draining":
        state.status = "draining"
        request.app.state.drain_task = asyncio.create_task(_drain_then_exit(request.app, state))
    return JSONResponse({"status": "draining", "running": len(state.jobs)}, 202)


async def _drain_then_exit(app: Starlette, state: WorkerState) -> None:
    await state.idle.wait()
    app.state.exit_hook(0)


def create_app(
    settings: WorkerSettings,
    *,
    load_engine: EngineLoader,
    exit_hook: ExitHook | None = None,
) -> Starlette:
    """The worker's ASGI app. `load_engine` runs in a thread after the server starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        state = WorkerState.create(settings)
        loader = asyncio.create_task(_load(state, load_engine, app))
        registration = None
        if settings.orchestrator_url:
            reg = Registration.from_settings(settings)
            registration = asyncio.create_task(
                run_registration(reg, state.health, ledger=lambda: _ledger(state))
            )
        # The server calls this when a signal stops it: running streams end at once with a
        # retriable error instead of being cut when the graceful period runs out (WRK-005).
        app.state.stop_jobs = lambda: state.jobs.cancel_all(shutdown=True)
        try:
            yield {"worker": state}
        finally:
            loader.cancel()
            if registration is not None:  # deregisters on its way out
                registration.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registration
            state.jobs.cancel_all()
            state.executor.shutdown(wait=True, cancel_futures=True)
            state.tokenizer.shutdown(wait=True, cancel_futures=True)
            if state.engine is not None:
                state.engine.close()

    routes = [
        Route("/execute", execute, methods=["POST"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/cancel", cancel, methods=["POST"]),
        Route("/embeddings", embeddings, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/shutdown", shutdown, methods=["POST"]),
    ]
    middleware = [Middleware(BodyLimit)]
    if settings.token:
        middleware.append(Middleware(BearerAuth, tokens=[settings.token], open_paths={"/health"}))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.exit_hook = exit_hook or (lambda code: None)
    install_problem_handlers(app)
    return app


async def _load(state: WorkerState, load_engine: EngineLoader, app: Starlette) -> None:
    loop = asyncio.get_running_loop()
    try:
        state.engine = await loop.run_in_executor(None, load_engine, state.settings)
    except Exception as e:
        state.status = "failed"
        log.error("could not load %s: %s", state.settings.model, e)
        app.state.exit_hook(1)
        return
    freeze_startup_heap()
    state.status = "ready"
    log.info(
        "ready: %s on %s, %d slot(s)",
        state.settings.model_name,
        state.settings.url,
        state.settings.slots,
    )
