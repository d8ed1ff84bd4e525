"""The fleet endpoints (specs/openapi/fleet.yaml): thin adapters over FleetControl.

Handlers find the controller as `request.state.fleet` and the daemon's view of its work as
`request.state.fleet_source` (a FleetSource: orchestratord.runtime.fleet). The auth
middleware guards every path here (orchestratord.http.auth).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from orchestratord.fleet.actions import ActualWorker, ModelFacts, PoolFacts
from orchestratord.fleet.control import Demand, FleetControl, PlanView
from orchestratord.fleet.desired import parse_fleet
from orchestratord.fleet.plan_hook import ClusterInput, FleetInput, PlanDecision, PlanHook
from orchestratord.http.audit import audit
from orchestratord.store.db import Store
from shared.names import POOL_NAME
from shared.params import FieldReader, read_json
from shared.problem import FieldError, InvalidParams

MAX_TTL_S = 86_400


class FleetSource(Protocol):
    """What the fleet controller needs from the daemon, at one instant."""

    def clock(self) -> int: ...

    def fleet_snapshot(self, now_ms: int) -> tuple[dict[str, Demand], list[ActualWorker]]: ...

    def drain(self, worker_id: str, migrate: bool = False) -> dict[str, object]:
        """Stop giving the worker new tasks; returns it as GET /v2/workers lists it.
        NotFound for an unknown worker. `migrate`: its running tasks fail over now (ORCH-385)."""
        ...

    async def decide_plan(
        self, hook: PlanHook, fleet: FleetInput, cluster: ClusterInput
    ) -> PlanDecision:
        """The hook's decision, off the event loop where it is a policy's own code (FLT-081)."""
        ...

    def note_waiting(self, view: PlanView) -> None:
        """Tell queued tasks which spawn of the plan they wait for (ORCH-361)."""
        ...

    def undrain(self, worker_id: str) -> dict[str, object]:
        """A drain's undo (ORCH-373): the worker takes new tasks again. NotFound as drain."""
        ...


def _parts(request: Request) -> tuple[FleetControl, FleetSource]:
    return request.state.fleet, request.state.fleet_source


async def get_fleet(request: Request) -> Response:
    control, _ = _parts(request)
    return JSONResponse(control.spec.to_json())


async def put_fleet(request: Request) -> Response:
    control, source = _parts(request)
    spec = parse_fleet(await read_json(request))
    store: Store = request.state.store
    before = control.spec.to_json()
    # Stored first (FLT-080): a PUT that could not be kept is refused, and nothing changes.
    await asyncio.to_thread(store.save_fleet, spec.to_json(), source.clock())
    control.replace(spec)
    after = control.spec.to_json()
    audit(request, "fleet.put", "fleet", before=before, after=after)
    return JSONResponse(after)


async def current_plan(
    control: FleetControl, source: FleetSource, *, replace_misplaced: bool = False
) -> tuple[int, PlanView]:
    now = source.clock()
    demand, workers = source.fleet_snapshot(now)
    asked = control.plan_input(now, demand, workers)
    # A policy's plan() may take its whole budget: not on the event loop (FLT-081).
    decision = await source.decide_plan(control.hook, asked.fleet, asked.cluster)
    view = control.plan_view(now, workers, asked, decision, replace_misplaced)
    source.note_waiting(view)
    return now, view


def _replace_misplaced(request: Request) -> bool:
    """`?replace_misplaced=true`: the plan drains replicas outside their pools (FLT-063)."""
    value = request.query_params.get("replace_misplaced", "false")
    if value not in ("true", "false"):
        raise InvalidParams(
            "replace_misplaced must be true or false",
            errors=[{"field": "replace_misplaced", "message": "must be true or false"}],
        )
    return value == "true"


async def get_plan(request: Request) -> Response:
    control, source = _parts(request)
    _, view = await current_plan(control, source, replace_misplaced=_replace_misplaced(request))
    return JSONResponse(view)


async def lease_action(request: Request) -> Response:
    control, source = _parts(request)
    r = FieldReader(await read_json(request), {"holder", "ttl_s"})
    holder = r.string("holder", required=True)
    ttl_s = r.integer("ttl_s", 600, 1, MAX_TTL_S) or 600
    r.raise_if_failed()
    assert holder is not None
    now, view = await current_plan(control, source, replace_misplaced=_replace_misplaced(request))
    action = control.lease(request.path_params["action_id"], holder, ttl_s * 1000, now, view)
    audit(request, "fleet.action.lease", request.path_params["action_id"], after=action)
    return JSONResponse(action)


async def report_action(request: Request) -> Response:
    control, source = _parts(request)
    r = FieldReader(await read_json(request), {"holder", "ok", "detail"})
    holder = r.string("holder", required=True)
    if not isinstance(r.body.get("ok"), bool):
        r.fail("ok", "is required: true or false")
    r.string("detail", max_len=1000, min_len=0)
    r.raise_if_failed()
    assert holder is not None
    control.report(request.path_params["action_id"], holder, bool(r.body["ok"]), source.clock())
    after = {"holder": holder, "ok": r.body["ok"], "detail": r.body.get("detail")}
    audit(request, "fleet.action.result", request.path_params["action_id"], after=after)
    return Response(status_code=204)


MAX_BYTES = 1 << 60


def _bytes(r: FieldReader, name: str, required: bool) -> int | None:
    if required and r.body.get(name) is None:
        r.fail(name, "is required")
        return None
    return r.integer(name, None, 0, MAX_BYTES)


def _model_facts(model_id: str, body: object, errors: list[FieldError]) -> ModelFacts | None:
    if not isinstance(body, dict):
        errors.append({"field": f"models.{model_id}", "message": "must be an object"})
        return None
    r = FieldReader(body, {"size_bytes", "kv_bytes_per_token", "context_length"})
    size = _bytes(r, "size_bytes", True)
    kv = _bytes(r, "kv_bytes_per_token", False)
    ctx = r.integer("context_length", None, 0, 1 << 24)
    errors.extend({"field": f"models.{model_id}.{e['field']}", "message": e["message"]}
                  for e in r.errors)  # fmt: skip
    return None if r.errors or size is None else ModelFacts(size, kv, ctx or None)


async def report_pool(request: Request) -> Response:
    """PUT /v2/fleet/pools/{pool}: a pool's memory and model sizes, as `llorch fleet apply`
    probed them with `llorch-pool backends --json`; the plan places replicas by it (FLT-065)."""
    control, source = _parts(request)
    pool = request.path_params["pool"]
    if not POOL_NAME.matches(pool):
        raise InvalidParams(
            f"{pool!r} is not a pool name", errors=[{"field": "pool", "message": POOL_NAME.rule}]
        )
    r = FieldReader(
        await read_json(request),
        {"ram_total_bytes", "ram_free_bytes", "vram_total_bytes", "vram_free_bytes", "models"},
    )
    total = _bytes(r, "ram_total_bytes", True)
    free = _bytes(r, "ram_free_bytes", True)
    vram_total = _bytes(r, "vram_total_bytes", False)
    vram_free = _bytes(r, "vram_free_bytes", False)
    errors: list[FieldError] = list(r.errors)
    raw = r.body.get("models", {})
    models: dict[str, ModelFacts] = {}
    if not isinstance(raw, dict) or len(raw) > 4096:
        errors.append({"field": "models", "message": "must be an object keyed by model id"})
    else:
        for model_id, body in raw.items():
            facts = _model_facts(str(model_id), body, errors)
            if facts is not None:
                models[str(model_id)] = facts
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidParams(f"invalid pool report: {summary}", errors=errors)
    assert total is not None and free is not None
    now = source.clock()
    before = control.pool_facts(now).get(pool)
    report = PoolFacts(total, free, vram_total, vram_free, models, now)
    control.report_pool(pool, report)
    after = report.to_json()
    audit(request, "fleet.pool", pool, before=before.to_json() if before else None, after=after)
    return Response(status_code=204)


async def drain_worker(request: Request) -> Response:
    _, source = _parts(request)
    worker_id = request.path_params["worker_id"]
    migrate = request.query_params.get("migrate", "false")
    if migrate not in ("true", "false"):
        message = "must be true or false"
        raise InvalidParams(f"migrate {message}", errors=[{"field": "migrate", "message": message}])
    listing = source.drain(worker_id, migrate=migrate == "true")
    audit(request, "workers.drain", worker_id, after=listing)
    return JSONResponse(listing, status_code=202)


async def undrain_worker(request: Request) -> Response:
    _, source = _parts(request)
    worker_id = request.path_params["worker_id"]
    listing = source.undrain(worker_id)
    audit(request, "workers.undrain", worker_id, after=listing)
    return JSONResponse(listing, status_code=202)


routes: list[BaseRoute] = [
    Route("/v2/fleet", get_fleet, methods=["GET"]),
    Route("/v2/fleet", put_fleet, methods=["PUT"]),
    Route("/v2/fleet/plan", get_plan, methods=["GET"]),
    Route("/v2/fleet/pools/{pool}", report_pool, methods=["PUT"]),
    Route("/v2/fleet/actions/{action_id}/lease", lease_action, methods=["POST"]),
    Route("/v2/fleet/actions/{action_id}/result", report_action, methods=["POST"]),
    Route("/v2/workers/{worker_id}/drain", drain_worker, methods=["POST"]),
    Route("/v2/workers/{worker_id}/undrain", undrain_worker, methods=["POST"]),
]
