"""worker/registration.py against a real orchestratord app served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orchestratord.app import create_app
from orchestratord.settings import Settings
from shared.wire import Health, PrefixCacheStats, WorkerStatus
from tests.support import free_port
from worker.kvblocks import BlockLedger
from worker.registration import Registration, run_registration

TOKEN = "reg-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def serve(app: Any, port: int) -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no startup event
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def until(predicate: Any, what: str, limit_s: float = 10.0) -> Any:
    async with asyncio.timeout(limit_s):
        while not (value := await predicate()):  # noqa: ASYNC110 - polling an HTTP API
            await asyncio.sleep(0.02)
    assert value, what
    return value


def health_of(
    status: WorkerStatus, *, slots_total: int, cache: PrefixCacheStats | None = None
) -> Health:
    """A worker's GET /health, as WorkerState.health makes it: what heartbeats are made of."""
    return {
        "status": status,
        "model": "m",
        "backend": "cpu",
        "slots_total": slots_total,
        "slots_busy": 0,
        "queued": 0,
        "n_ctx": 512,
        "worker_id": "w",
        "prefix_cache": cache
        or {"lookups": 0, "hits": 0, "tokens_reused": 0, "prompt_tokens": 0, "cached_tokens": 0},
        "embeddings": {"available": True, "pooling": "mean", "reason": "mean pooling"},
    }


def test_register_heartbeat_reregister_deregister(tmp_path: Path) -> None:
    """ORCH-044: registers only once the worker is ready, heartbeats its slot counts, registers
    again on 404 and deregisters on shutdown. (WRK-070)"""
    health = health_of("loading", slots_total=2)

    async def worker_health(request: Request) -> JSONResponse:
        return JSONResponse(health)

    async def scenario() -> None:
        orch_app = create_app(Settings(state_dir=tmp_path, cluster_token=TOKEN))
        worker_app = Starlette(routes=[Route("/health", worker_health)])
        async with (
            serve(orch_app, free_port()) as orch,
            serve(worker_app, free_port()) as wurl,
            httpx.AsyncClient(headers=AUTH) as http,
        ):
            reg = Registration(
                orchestrator_url=orch,
                worker_id="w-reg",
                url=wurl,
                probe_url=wurl,
                model="m",
                backend="cpu",
                pool="p",
                slots_total=2,
                n_ctx=512,
                token=TOKEN,
                interval_s=0.05,
            )

            async def listed() -> dict[str, Any] | None:
                r = await http.get(orch + "/v2/workers")
                return next((w for w in r.json()["workers"] if w["id"] == "w-reg"), None)

            task = asyncio.create_task(run_registration(reg, lambda: health))
            await asyncio.sleep(0.3)
            assert await listed() is None  # not before the worker says it is ready
            health["status"] = "ready"
            w = await until(listed, "registration")
            assert (w["model"], w["pool"], w["url"], w["slots_total"]) == ("m", "p", wurl, 2)
            health["slots_busy"] = 2

            async def busy() -> bool:
                w = await listed()
                return w is not None and w["slots_busy"] == 2

            await until(busy, "heartbeats to carry the worker's slot counts")
            # orchestratord forgets the worker: the next heartbeat gets 404 and it registers again.
            assert (await http.delete(orch + "/v2/workers/w-reg")).status_code == 204
            await until(listed, "re-registration after a 404")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert await listed() is None  # deregistered on the way out

    asyncio.run(scenario())


def test_from_settings_uses_the_worker_flags(tmp_path: Path) -> None:
    """WRK-070: the registration carries the worker's id, advertised URL, model, backend, pool,
    slots and context."""
    from worker.settings import WorkerSettings

    s = WorkerSettings(
        model=tmp_path / "tiny.gguf",
        host="0.0.0.0",
        port=8123,
        slots=3,
        token="t",
        orchestrator_url="http://o:8080/",
        worker_id="w1",
        pool="gpu-box",
        advertise_url="http://10.0.0.5:8123",
    )
    reg = Registration.from_settings(s)
    assert reg.orchestrator_url == "http://o:8080"
    assert reg.url == "http://10.0.0.5:8123" and reg.probe_url == "http://127.0.0.1:8123"
    assert reg.register_body() == {
        "worker_id": "w1",
        "url": "http://10.0.0.5:8123",
        "model": "tiny",
        "backend": "cpu",
        "pool": "gpu-box",
        "slots_total": 3,
        "n_ctx": 4096,
    }


def test_wrk103_wrk111_heartbeats_carry_prefix_cache_use_and_embeddings(tmp_path: Path) -> None:
    """The real orchestratord app, with the heartbeat bodies it receives recorded on the way in.
    (WRK-103, WRK-111)"""
    cache: PrefixCacheStats = {
        "lookups": 3,
        "hits": 2,
        "tokens_reused": 40,
        "prompt_tokens": 90,
        "cached_tokens": 7,
    }
    health = health_of("ready", slots_total=1, cache=cache)
    seen: list[Any] = []
    orch_app = create_app(Settings(state_dir=tmp_path, cluster_token=TOKEN))

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/heartbeat"):
            chunks: list[bytes] = []

            async def tee() -> Any:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    seen.append(json.loads(b"".join(chunks)))
                return message

            await orch_app(scope, tee, send)
            return
        await orch_app(scope, receive, send)

    async def worker_health(request: Request) -> JSONResponse:
        return JSONResponse(health)

    async def scenario() -> None:
        worker_app = Starlette(routes=[Route("/health", worker_health)])
        async with serve(recording, free_port()) as orch, serve(worker_app, free_port()) as wurl:
            reg = Registration(orch, "w-cache", wurl, wurl, "m", "cpu", "p", 1, 512, TOKEN, 0.05)
            task = asyncio.create_task(run_registration(reg, lambda: health))

            async def heartbeat_seen() -> bool:
                return bool(seen)

            await until(heartbeat_seen, "a heartbeat")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert seen[0]["prefix_cache"] == cache and seen[0]["slots_total"] == 1
    # WRK-111: and whether the model can embed, which orchestratord routes by (ORCH-231).
    assert seen[0]["embeddings"] == health["embeddings"]


def test_wrk_172_a_report_lost_in_transit_is_answered_kv_resync_and_resent_whole(
    tmp_path: Path,
) -> None:
    """WRK-171, WRK-172, ORCH-401: heartbeats carry the ledger's reports; a report taken and
    never delivered leaves a gap, which the real orchestratord answers `kv_resync`, and the
    worker's next report is full: the index ends up holding what the ledger holds."""
    health = health_of("ready", slots_total=1)
    seen: list[Any] = []
    orch_app = create_app(Settings(state_dir=tmp_path, cluster_token=TOKEN))
    ledger = BlockLedger(4)
    ledger.set(0, list(range(8)))

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/heartbeat"):
            body = b""

            async def tee() -> Any:
                nonlocal body
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    seen.append(json.loads(body)["kv_blocks"])
                return message

            await orch_app(scope, tee, send)
            return
        await orch_app(scope, receive, send)

    async def worker_health(request: Request) -> JSONResponse:
        return JSONResponse(health)

    async def entries(orch: str) -> int:
        async with httpx.AsyncClient() as c:
            text = (await c.get(orch + "/metrics")).text
        line = next(ln for ln in text.splitlines() if 'cache_index{figure="entries"}' in ln)
        return int(float(line.split()[-1]))

    async def scenario() -> None:
        worker_app = Starlette(routes=[Route("/health", worker_health)])
        async with serve(recording, free_port()) as orch, serve(worker_app, free_port()) as wurl:
            reg = Registration(orch, "w-kv", wurl, wurl, "m", "cpu", "p", 1, 512, TOKEN, 0.05)
            task = asyncio.create_task(run_registration(reg, lambda: health, ledger=lambda: ledger))

            async def holds(n: int) -> bool:
                return await entries(orch) == n

            await until(lambda: holds(2), "the first full report")
            ledger.report()  # a report that never reaches orchestratord
            ledger.set(1, list(range(100, 112)))
            await until(lambda: holds(5), "the resync")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert seen[0]["full"] and len(seen[0]["stored"]) == 2
    gap = next(i for i, r in enumerate(seen) if not r["full"] and r["stored"])
    assert seen[gap]["seq"] > seen[gap - 1]["seq"] + 1  # the lost one's number is missing
    assert any(r["full"] and len(r["stored"]) == 5 for r in seen[gap + 1 :])
