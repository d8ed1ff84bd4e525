"""The /v2 task routes: submit, read, follow, cancel.

The submitting connection owns its task: when a streaming submission's response ends before
the task did (the client went away, or the response was never sent), the task is cancelled.
That is the response's `on_close`, so it holds whether or not the stream ever started.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.domain.tasks import TaskRecord, parse_task_request
from orchestratord.domain.tenancy import OPEN, Caller
from orchestratord.http.listing import encode_cursor, parse_list_query
from orchestratord.runtime.service import TaskService
from orchestratord.runtime.tasklog import TaskEvent
from shared.params import read_json
from shared.problem import InvalidParams
from shared.sse import EventStream, Last
from shared.wire import TERMINAL_EVENTS


def caller_of(request: Request) -> Caller:
    """Who is asking (set by orchestratord.http.auth); an app without the middleware is open."""
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else OPEN


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


async def frames(batches: AsyncGenerator[list[TaskEvent], None]) -> AsyncIterator[bytes]:
    """One chunk per batch of events; an empty batch becomes a keep-alive."""
    try:
        async for batch in batches:
            chunk = b"".join([ev.frame for ev in batch])
            yield Last(chunk) if batch and batch[-1].event in TERMINAL_EVENTS else chunk
    finally:
        await batches.aclose()


async def submit_task(request: Request) -> Response:
    service: TaskService = request.state.service
    caller = caller_of(request)
    req = parse_task_request(await read_json(request), caller=caller)
    record = await service.submit(req)
    shown = record.id_for(caller.tenant)  # the client's own task_id, if it chose one
    events_url = f"/v2/tasks/{shown}/events"
    if "text/event-stream" in request.headers.get("accept", ""):
        task_id = record.id

        def detach() -> None:
            service.cancel_soon(task_id)

        return EventStream(
            frames(await service.frames(task_id)),
            on_close=detach,
            headers={"X-Llorch-Task-Id": shown, "Content-Location": events_url},
        )
    return JSONResponse(
        {
            "task_id": shown,
            "status": record.status,
            "queue_position": service.queue_position(record.id),
            "events_url": events_url,
        },
        status_code=202,
        headers={"Location": f"/v2/tasks/{shown}"},
    )


async def task_events(request: Request) -> Response:
    service: TaskService = request.state.service
    task_id = request.path_params["task_id"]
    batches = await service.frames(task_id, caller_of(request), last_event_id(request))
    return EventStream(
        frames(batches),
        headers={"X-Llorch-Task-Id": task_id},
    )


async def cancel_task(request: Request) -> Response:
    await request.state.service.cancel(request.path_params["task_id"], caller_of(request))
    return Response(status_code=204)


def task_json(service: TaskService, record: TaskRecord, caller: Caller) -> dict[str, Any]:
    body = record.to_json()
    body["id"] = record.id_for(caller.tenant)
    body["queue_position"] = service.queue_position(record.id)
    return body


async def get_task(request: Request) -> Response:
    service: TaskService = request.state.service
    caller = caller_of(request)
    record = await service.get(request.path_params["task_id"], caller)
    return JSONResponse(task_json(service, record, caller))


async def list_tasks(request: Request) -> Response:
    """GET /v2/tasks: the caller's tasks (every tenant's for the admin), newest first, paged."""
    service: TaskService = request.state.service
    caller = caller_of(request)
    query = parse_list_query(request.query_params, caller)
    records, more = await service.list_tasks(query)
    cursor = encode_cursor(records[-1]) if more and records else None
    tasks = [task_json(service, r, caller) for r in records]
    return JSONResponse({"tasks": tasks, "next_cursor": cursor})


routes = [
    Route("/v2/tasks", submit_task, methods=["POST"]),
    Route("/v2/tasks", list_tasks, methods=["GET"]),
    Route("/v2/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/v2/tasks/{task_id}/events", task_events, methods=["GET"]),
    Route("/v2/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
]
