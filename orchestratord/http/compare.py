"""Compare runs over HTTP (ORCH-210..213): start one, read one (the export), list them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.http.tasks import caller_of
from orchestratord.runtime.compare_service import MAX_WAIT_MS, CompareService
from shared.params import read_json
from shared.problem import InvalidParams

MAX_LIST = 500


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        message = f"must be an integer between {lo} and {hi}"
        raise InvalidParams(f"{name} {message}", errors=[{"field": name, "message": message}])
    return value


async def start_run(request: Request) -> Response:
    compare: CompareService = request.state.compare
    run = await compare.start(await read_json(request), caller=caller_of(request))
    return JSONResponse(
        run.to_json(), status_code=201, headers={"Location": f"/v2/compare/{run.id}"}
    )


async def get_run(request: Request) -> Response:
    compare: CompareService = request.state.compare
    run_id = request.path_params["run_id"]
    wait_ms = query_int(request, "wait_ms", 0, 0, MAX_WAIT_MS)
    caller = caller_of(request)
    tenant, admin = caller.tenant, caller.sees_all
    record = await compare.get(run_id, tenant=tenant, admin=admin)  # 404 before any wait
    if wait_ms and record["status"] != "done":
        await compare.wait(run_id, wait_ms)
        record = await compare.get(run_id, tenant=tenant, admin=admin)
    return JSONResponse(record)


async def list_runs(request: Request) -> Response:
    compare: CompareService = request.state.compare
    limit = query_int(request, "limit", 50, 1, MAX_LIST)
    caller = caller_of(request)
    runs = await compare.list(limit, tenant=caller.tenant, admin=caller.sees_all)
    return JSONResponse({"runs": runs})


routes = [
    Route("/v2/compare", start_run, methods=["POST"]),
    Route("/v2/compare", list_runs, methods=["GET"]),
    Route("/v2/compare/{run_id}", get_run, methods=["GET"]),
]
