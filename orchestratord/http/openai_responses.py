"""`POST /v1/responses`: OpenAI's Responses API over the chat completions path (ORCH-260..ORCH-266).

The body is mapped to a chat body (`openai_responses_request`), submitted as a chat task
(`openai.submit`: same validation, tools, output constraint, queue), and the task's events are
written as a Response (`openai_responses_shapes`), streamed as typed events or sent whole.
Stateless: nothing is stored, so the `id` cannot be retrieved or continued. Errors are
OpenAI's `error` shape (`http/errors.py`); after a stream started, an `error` event.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.http.errors import error_response
from orchestratord.http.openai import (
    cached_tokens,
    int_or,
    json_body,
    submit,
    until_done_or_gone,
)
from orchestratord.http.openai_responses_request import chat_body, rename_params
from orchestratord.http.openai_responses_shapes import Event, ResponseWriter
from orchestratord.http.openai_shapes import event_error, openai_error
from orchestratord.runtime.service import TaskService
from orchestratord.runtime.tasklog import TaskEvent
from shared.problem import ApiError, Internal
from shared.sse import EventStream, Last, encode_event
from shared.wire import TERMINAL_EVENTS


async def create_response(request: Request) -> Response:
    """POST /v1/responses: a model response, streamed as typed events or not."""
    service: TaskService = request.state.service
    path = request.url.path
    origins: list[str] = []
    try:
        body = await json_body(request)
        chat, origins = chat_body(body)
        done = await submit(request, "chat", chat)
    except ApiError as err:
        return error_response(rename_params(err, origins), path)
    writer = ResponseWriter(done.record.id, int(time.time()), _echo(body, done.task), done.tools)
    if done.stream:
        return _stream(service, done.record.id, writer)
    return await _whole(request, service, done.record.id, writer)


def _echo(body: Mapping[str, Any], task: Mapping[str, Any]) -> dict[str, Any]:
    """The request settings a Response repeats (the openai types require some of them)."""
    fmt = body.get("text") if isinstance(body.get("text"), Mapping) else None
    return {
        "model": task["model"],
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "tool_choice": body.get("tool_choice") or ("auto" if body.get("tools") else "none"),
        "tools": body.get("tools") or [],
        "text": {"format": (fmt or {}).get("format") or {"type": "text"}},
        "truncation": "disabled",
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {},
    }


class _Run:
    """Feeds one task's events to its writer."""

    def __init__(self, writer: ResponseWriter) -> None:
        self.writer = writer
        self.input_tokens = 0

    def events(self, ev: TaskEvent) -> list[Event]:
        w = self.writer
        if ev.event == "token":
            return w.text(str(ev.data.get("t", "")))
        if ev.event == "started":
            self.input_tokens = int_or(ev.data.get("prompt_tokens"), 0)
        elif ev.event == "end":
            self.input_tokens = int_or(ev.data.get("prompt_tokens"), self.input_tokens)
            out = int_or(ev.data.get("tokens_out"), 0)
            return w.end(ev.data.get("stop_reason"), self.input_tokens, out, cached_tokens(ev.data))
        return []


async def _whole(
    request: Request, service: TaskService, task_id: str, writer: ResponseWriter
) -> Response:
    """Collect the task into one Response, cancelling it if the client disconnects first."""
    path = request.url.path

    async def collect() -> Response:
        run = _Run(writer)
        result: Response | None = None
        try:
            async for ev in await service.events(task_id):  # ends after end or error
                run.events(ev)
                if ev.event == "end":
                    headers = {"X-Llorch-Task-Id": task_id}
                    result = JSONResponse(writer.response(), headers=headers)
                elif ev.event == "error":
                    result = error_response(event_error(ev.data), path)
        except ApiError as err:
            result = error_response(err, path)
        if result is None:
            lost = Internal("the task's event stream ended without an end event")
            result = error_response(lost, path)
        return result

    return await until_done_or_gone(request, service, task_id, collect)


def _sse(events: list[Event]) -> bytes:
    return b"".join(encode_event(ev["type"], ev) for ev in events)


async def _frames(
    service: TaskService, task_id: str, writer: ResponseWriter
) -> AsyncIterator[bytes]:
    run = _Run(writer)
    yield _sse(writer.start())
    try:
        batches = await service.frames(task_id)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                chunk = b""
                for ev in batch:
                    if ev.event == "error":
                        chunk += _sse([_error_event(writer, event_error(ev.data))])
                    else:
                        chunk += _sse(run.events(ev))
                if batch and batch[-1].event in TERMINAL_EVENTS:
                    yield Last(chunk)
                    return
                yield chunk
    except ApiError as err:
        yield Last(_sse([_error_event(writer, err)]))


def _error_event(writer: ResponseWriter, err: ApiError) -> Event:
    e = openai_error(err)
    return writer.error(e["code"], e["message"], e["param"])


def _stream(service: TaskService, task_id: str, writer: ResponseWriter) -> EventStream:
    """The Response's event stream; when it ends before the task did (the client left), the
    task is cancelled."""

    def detach() -> None:
        if service.is_open(task_id):
            service.cancel_soon(task_id)

    return EventStream(
        _frames(service, task_id, writer),
        on_close=detach,
        headers={"X-Llorch-Task-Id": task_id},
        stop_frame=lambda err: _sse([_error_event(writer, err)]),
    )


routes: list[Route] = [Route("/v1/responses", create_response, methods=["POST"])]
