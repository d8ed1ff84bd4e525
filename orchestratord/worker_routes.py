"""Routes for workers (register, heartbeat, deregister, list) and the admin policy reload.

All are guarded by the cluster token (orchestratord.auth).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.registry import REPORTED_STATES, Worker
from orchestratord.service import TaskService
from shared.problem import FieldError, InvalidParams, NotFound


class _Fields:
    def __init__(self, body: Any) -> None:
        if not isinstance(body, Mapping):
            raise InvalidParams(
                "the body must be a JSON object",
                errors=[{"field": "body", "message": "must be a JSON object"}],
            )
        self.body = body
        self.errors: list[FieldError] = []

    def text(self, name: str, default: str | None = None, max_len: int = 512) -> str:
        value = self.body.get(name, default)
        if not isinstance(value, str) or not value or len(value) > max_len:
            self.errors.append(
                {
                    "field": name,
                    "message": f"must be a non-empty string of at most {max_len} characters",
                }
            )
            return ""
        return value

    def count(self, name: str, default: int | None = None, lo: int = 0) -> int:
        value = self.body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            self.errors.append({"field": name, "message": f"must be an integer >= {lo}"})
            return lo
        return value

    def check(self) -> None:
        if self.errors:
            raise InvalidParams(
                "; ".join(f"{e['field']}: {e['message']}" for e in self.errors), errors=self.errors
            )


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InvalidParams(
            "the body must be JSON", errors=[{"field": "body", "message": "invalid JSON"}]
        ) from None


async def register(request: Request) -> Response:
    f = _Fields(await _json(request))
    url = f.text("url")
    if url and not url.startswith(("http://", "https://")):
        f.errors.append({"field": "url", "message": "must be an http:// or https:// URL"})
    worker = Worker(
        id=f.text("worker_id", max_len=128),
        url=url.rstrip("/"),
        model=f.text("model", max_len=256),
        backend=f.text("backend", "cpu", 32),
        pool=f.text("pool", "default", 128),
        slots_total=f.count("slots_total", lo=1),
        n_ctx=f.count("n_ctx", 0),
    )
    f.check()
    service: TaskService = request.state.service
    w = service.register_worker(worker)
    return JSONResponse(w.view(service.clock(), service.registry.stale_ms), status_code=201)


async def heartbeat(request: Request) -> Response:
    f = _Fields(await _json(request))
    state = f.text("state", "ready", 32)
    if state and state not in REPORTED_STATES:
        f.errors.append({"field": "state", "message": f"must be one of {sorted(REPORTED_STATES)}"})
    slots_total, slots_busy = f.count("slots_total"), f.count("slots_busy", 0)
    f.check()
    service: TaskService = request.state.service
    worker_id = request.path_params["worker_id"]
    if not service.heartbeat(worker_id, state, slots_total, slots_busy):
        raise NotFound(f"worker {worker_id} is not registered; register again")
    return JSONResponse({"ok": True})


async def deregister(request: Request) -> Response:
    service: TaskService = request.state.service
    worker_id = request.path_params["worker_id"]
    if not service.deregister_worker(worker_id):
        raise NotFound(f"worker {worker_id} is not registered")
    return Response(status_code=204)


async def list_workers(request: Request) -> Response:
    service: TaskService = request.state.service
    return JSONResponse({"workers": service.worker_views()})


async def reload_policy(request: Request) -> Response:
    """Validate and install a policy: JSON {source} (Starlark text) or {} to re-read the file."""
    from orchestratord.policy import PolicyHolder

    payload = await _json(request) if (await request.body()).strip() else {}
    holder: PolicyHolder = request.state.policy
    if not isinstance(payload, Mapping) or set(payload) - {"source", "name"}:
        raise InvalidParams(
            "the body must be {source, name?} or empty",
            errors=[{"field": "body", "message": "expected {source: <starlark text>, name?: str}"}],
        )
    source = payload.get("source")
    if source is None:
        engine = holder.reload()
    elif isinstance(source, str):
        engine = holder.reload_source(source, name=str(payload.get("name") or "<admin>"))
    else:
        raise InvalidParams(
            "source must be a string", errors=[{"field": "source", "message": "must be a string"}]
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
    Route("/v2/workers/register", register, methods=["POST"]),
    Route("/v2/workers/{worker_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/v2/workers/{worker_id}", deregister, methods=["DELETE"]),
    Route("/v2/workers", list_workers, methods=["GET"]),
    Route("/v2/admin/policy", reload_policy, methods=["POST"]),
]
