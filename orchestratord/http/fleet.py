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

from orchestratord.fleet.actions import ActualWorker
from orchestratord.fleet.control import Demand, FleetControl, PlanView
from orchestratord.fleet.desired import parse_fleet
from orchestratord.store.db import Store
from shared.params import FieldReader, read_json

MAX_TTL_S = 86_400


class FleetSource(Protocol):
    """What the fleet controller needs from the daemon, at one instant."""

    def clock(self) -> int: ...

    def fleet_snapshot(self, now_ms: int) -> tuple[dict[str, Demand], list[ActualWorker]]: ...

    def drain(self, worker_id: str) -> dict[str, object]:
        """Stop giving the worker new tasks; returns it as GET /v2/workers lists it.
        NotFound for an unknown worker."""
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
    # Stored first (FLT-080): a PUT that could not be kept is refused, and nothing changes.
    await asyncio.to_thread(store.save_fleet, spec.to_json(), source.clock())
    control.replace(spec)
    return JSONResponse(control.spec.to_json())


def current_plan(control: FleetControl, source: FleetSource) -> tuple[int, PlanView]:
    now = source.clock()
    demand, workers = source.fleet_snapshot(now)
    return now, control.plan(now, demand, workers)


async def get_plan(request: Request) -> Response:
    control, source = _parts(request)
    _, view = current_plan(control, source)
    return JSONResponse(view)


async def lease_action(request: Request) -> Response:
    control, source = _parts(request)
    r = FieldReader(await read_json(request), {"holder", "ttl_s"})
    holder = r.string("holder", required=True)
    ttl_s = r.integer("ttl_s", 600, 1, MAX_TTL_S) or 600
    r.raise_if_failed()
    assert holder is not None
    now, view = current_plan(control, source)
    action = control.lease(request.path_params["action_id"], holder, ttl_s * 1000, now, view)
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
    return Response(status_code=204)


async def drain_worker(request: Request) -> Response:
    _, source = _parts(request)
    return JSONResponse(source.drain(request.path_params["worker_id"]), status_code=202)


async def undrain_worker(request: Request) -> Response:
    _, source = _parts(request)
    return JSONResponse(source.undrain(request.path_params["worker_id"]), status_code=202)


routes: list[BaseRoute] = [
    Route("/v2/fleet", get_fleet, methods=["GET"]),
    Route("/v2/fleet", put_fleet, methods=["PUT"]),
    Route("/v2/fleet/plan", get_plan, methods=["GET"]),
    Route("/v2/fleet/actions/{action_id}/lease", lease_action, methods=["POST"]),
    Route("/v2/fleet/actions/{action_id}/result", report_action, methods=["POST"]),
    Route("/v2/workers/{worker_id}/drain", drain_worker, methods=["POST"]),
    Route("/v2/workers/{worker_id}/undrain", undrain_worker, methods=["POST"]),
]
