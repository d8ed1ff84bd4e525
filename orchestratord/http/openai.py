"""OpenAI-compatible routes (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
`/v1/models`).

A thin adapter over the same `TaskService` as `/v2`: an OpenAI body becomes a `/v2` task body
(`openai_task_body`, pure), goes through `parse_task_request` and the same queue, and the task's
events are shaped back into OpenAI objects (`Shaper`, pure).

Parameter mapping: `max_completion_tokens` (or `max_tokens`), `temperature`, `top_p`, `seed`,
`stop` (a string or a list) pass through; `n` (1..8) asks for choices (ORCH-270); `user`
becomes the task's `session_id` (so one end user's requests stick to one worker) unless
`session_id` is given. llama.cpp's
`top_k`, `min_p`, `repeat_penalty` and llorch's `priority`, `session_id`, `deadline_ms`,
`ignore_eos`, `task_id` are accepted as extensions (OpenAI clients send them through
`extra_body`). `response_format` and logprobs map onto the task's output constraint and
logprobs (`openai_structured`, ORCH-242/243); tools onto the prompt and, when a call is forced,
the output constraint (`openai_tools`, ORCH-250..ORCH-257). The task's id is in the
`X-Llorch-Task-Id` header and in the object `id`. Features llorch does not offer (best_of,
penalties, ...) are refused with 400 rather than silently ignored; unknown fields are ignored,
as OpenAI does.

`POST /v1/responses` (OpenAI's Responses API) goes through `submit` too: `openai_responses`.

Errors: the body is problem+json as on every llorch API (`code`, `retriable`, `retry_after_ms`)
with an extra `error` member in OpenAI's shape (`message`, `type`, `param`, `code`), which is
what OpenAI clients read; `http/errors.py` renders it for every `/v1` error, those of the auth
middleware, the body limit and routing included (ORCH-084). An error after a stream started
is a `data: {"error": {...}}` chunk, which the `openai` package raises as `APIError`.
A client that disconnects cancels its task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from orchestratord.domain.embeddings import embedding_reply, parse_embedding_request
from orchestratord.domain.tasks import TaskRecord, parse_task_request
from orchestratord.domain.toolcalls import ToolStream
from orchestratord.http.errors import error_response
from orchestratord.http.openai_shapes import (
    Kind,
    Shaper,
    event_error,
    finish_reason,
    invalid,
    openai_error,
    openai_task_body,
    sse_data,
    usage,
)
from orchestratord.http.openai_structured import logprobs_for
from orchestratord.http.openai_tools import ToolMode, tool_fields
from orchestratord.http.tasks import caller_of
from orchestratord.runtime.service import TaskService
from orchestratord.runtime.tasklog import TaskEvent
from shared.problem import ApiError, Internal, ModelNotFound
from shared.sse import EventStream, Last
from shared.wire import TERMINAL_EVENTS


async def json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise invalid([("body", "must be valid JSON")]) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Submitted:
    record: TaskRecord
    task: dict[str, Any]  # the /v2 task body
    stream: bool
    include_usage: bool
    tools: ToolMode | None


async def submit(request: Request, kind: Kind, body: Any) -> Submitted:
    """Map an OpenAI body onto a task and submit it (also the path of /v1/responses)."""
    service: TaskService = request.state.service
    task, stream, include_usage = openai_task_body(kind, body)
    req = parse_task_request(task, caller=caller_of(request))
    tools = tool_fields(body, {}, []) if kind == "chat" else None  # validated above
    if tools is not None and tools.schema is not None:
        if req.constrained:  # response_format already constrains the output
            raise invalid([("tool_choice", "cannot force a call with a response_format")])
        req = dataclasses.replace(req, json_schema=tools.schema)
    return Submitted(await service.submit(req), task, stream, include_usage, tools)


async def _submit(request: Request, kind: Kind) -> Response:
    service: TaskService = request.state.service
    try:
        done = await submit(request, kind, await json_body(request))
    except ApiError as err:
        return error_response(err, request.url.path)
    task_id = done.record.id
    shaper = Shaper(
        kind,
        task_id,
        done.task["model"],
        int(time.time()),
        logprobs=logprobs_for(kind, done.task),
        tools=done.tools,
    )
    n = int_or(done.task.get("n"), 1)
    if done.stream:
        return _event_stream(service, task_id, shaper, done.include_usage, n)
    path = request.url.path
    return await until_done_or_gone(
        request, service, task_id, lambda: _collect(service, task_id, shaper, path, n)
    )


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions: OpenAI's chat completion, streamed or not."""
    return await _submit(request, "chat")


async def completions(request: Request) -> Response:
    """POST /v1/completions: OpenAI's legacy text completion, streamed or not."""
    return await _submit(request, "completion")


async def embeddings(request: Request) -> Response:
    """POST /v1/embeddings: a task like any other (admission, queue, policy), run on a worker
    whose model can embed; the reply waits for its end (ORCH-230..ORCH-233)."""
    service: TaskService = request.state.service
    path = request.url.path
    try:
        try:
            body = await request.json()
        except ValueError:
            raise invalid([("body", "must be valid JSON")]) from None
        req, fmt = parse_embedding_request(body, caller=caller_of(request))
        record = await service.submit(req)
    except ApiError as err:
        return error_response(err, path)
    end: dict[str, Any] | None = None
    try:
        async with anyio.create_task_group() as tg:

            async def wait_end() -> None:
                nonlocal end
                async for ev in await service.events(record.id):
                    if ev.event in ("end", "error"):
                        end = {"event": ev.event, **ev.data}
                tg.cancel_scope.cancel()

            async def watch() -> None:
                await wait_disconnect(request.receive)
                tg.cancel_scope.cancel()

            tg.start_soon(wait_end)
            tg.start_soon(watch)
    except ApiError as err:
        return error_response(err, path)
    finally:
        if end is None:  # the client left before the task ended: the one cancel path
            service.cancel_soon(record.id)
    if end is None:
        return Response(status_code=499)  # nobody reads it
    if end["event"] == "error":
        return error_response(event_error(end), path)
    if "embeddings" not in end:  # cancelled by someone else (DELETE /v2/tasks/{id})
        return error_response(event_error({"code": "CANCELLED", "message": "cancelled"}), path)
    reply = embedding_reply(end["embeddings"], int_or(end.get("prompt_tokens"), 0), req.model, fmt)
    return JSONResponse(reply, headers={"X-Llorch-Task-Id": record.id})


async def list_models(request: Request) -> Response:
    """GET /v1/models: the models at least one live worker serves."""
    service: TaskService = request.state.service
    return JSONResponse({"object": "list", "data": [_model(n) for n in service.models()]})


async def get_model(request: Request) -> Response:
    """GET /v1/models/{id}: one served model (`client.models.retrieve`); 404 otherwise
    (ORCH-245)."""
    service: TaskService = request.state.service
    name = request.path_params["model"]
    if name not in service.models():
        err = ModelNotFound(
            f"no live worker serves model {name!r}",
            errors=[{"field": "model", "message": "no live worker serves it"}],
        )
        return error_response(err, request.url.path)
    return JSONResponse(_model(name))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llorch"}


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_done_or_gone(
    request: Request,
    service: TaskService,
    task_id: str,
    collect_task: Callable[[], Awaitable[Response]],
) -> Response:
    """The whole answer `collect_task` makes of the task, cancelling the task if the client
    disconnects first (the one place a non-streamed `/v1` reply watches its client)."""
    result: Response | None = None
    try:
        async with anyio.create_task_group() as tg:

            async def collect() -> None:
                nonlocal result
                result = await collect_task()
                tg.cancel_scope.cancel()

            async def watch() -> None:
                await wait_disconnect(request.receive)
                tg.cancel_scope.cancel()

            tg.start_soon(collect)
            tg.start_soon(watch)
    finally:
        if result is None:  # the client left (or this failed) before the task ended
            service.cancel_soon(task_id)
    return result if result is not None else Response(status_code=499)  # nobody reads it


class _Choice:
    """What one choice of a task has produced so far: its text, logprobs and tool calls."""

    __slots__ = ("calls", "logprobs", "parts")

    def __init__(self, shaper: Shaper) -> None:
        self.parts: list[str] = []
        self.logprobs = shaper.new_logprobs()
        mode = shaper.tools
        self.calls = ToolStream(mode.names, forced=mode.forced) if mode is not None else None


async def _collect(
    service: TaskService, task_id: str, shaper: Shaper, path: str, n: int
) -> Response:
    """The whole object of a task of `n` choices: token events name their choice (`index`,
    absent when n is 1), the end says how each ended (ORCH-270)."""
    choices = [_Choice(shaper) for _ in range(n)]
    prompt_tokens = 0
    try:
        async for ev in await service.events(task_id):
            if ev.event == "token":
                choice = choices[choice_index(ev.data, n)]
                choice.parts.append(str(ev.data.get("t", "")))
                if choice.logprobs is not None:
                    choice.logprobs.add(ev.data.get("logprobs"))
            elif ev.event in ("started", "end"):
                prompt_tokens = int_or(ev.data.get("prompt_tokens"), prompt_tokens)
            if ev.event == "end":
                ends = choice_ends(ev.data)
                default = finish_reason(ev.data.get("stop_reason"))
                whole = [
                    ("".join(c.parts), ends.get(k, default), c.logprobs)
                    for k, c in enumerate(choices)
                ]
                tokens = int_or(ev.data.get("tokens_out"), 0)
                body = shaper.final_choices(
                    whole, usage(prompt_tokens, tokens, cached_tokens(ev.data))
                )
                return JSONResponse(body, headers={"X-Llorch-Task-Id": task_id})
            if ev.event == "error":
                return error_response(event_error(ev.data), path)
    except ApiError as err:
        return error_response(err, path)
    return error_response(Internal("the task's event stream ended without an end event"), path)


def choice_index(token: dict[str, Any], n: int) -> int:
    """The choice a token event belongs to; one out of range is the first's (never trusted to
    index past the choices the request asked for)."""
    index = int_or(token.get("index"), 0)
    return index if 0 <= index < n else 0


def choice_ends(end: dict[str, Any]) -> dict[int, str]:
    """Each choice's finish_reason, from the `choices` of a task's end event (ORCH-270)."""
    out: dict[int, str] = {}
    raw = end.get("choices")
    for c in raw if isinstance(raw, list) else []:
        if isinstance(c, dict):
            out[int_or(c.get("index"), 0)] = finish_reason(c.get("stop_reason"))
    return out


def int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def cached_tokens(end: dict[str, Any]) -> int | None:
    cached = end.get("prompt_tokens_cached")
    return cached if isinstance(cached, int) and not isinstance(cached, bool) else None


class _Chunks:
    """The OpenAI SSE body of one task of `n` choices, shaped from its events: each chunk
    carries its choice's index (ORCH-270), and each choice has its own logprobs and tool-call
    reader (ORCH-271)."""

    def __init__(
        self, service: TaskService, task_id: str, shaper: Shaper, include_usage: bool, n: int = 1
    ) -> None:
        self.service, self.task_id, self.shaper = service, task_id, shaper
        self.include_usage = include_usage
        self.n = n
        self.choices = [_Choice(shaper) for _ in range(n)]
        self.prompt_tokens = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """One bytes object per batch of task events; a keep-alive comment while idle."""
        if self.shaper.kind == "chat":
            yield b"".join(
                sse_data(self.shaper.chunk("", role=True, index=k)) for k in range(self.n)
            )
        done = sse_data("[DONE]")
        try:
            batches = await self.service.frames(self.task_id)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    chunk = b"".join([self.shape(ev) for ev in batch])
                    if batch and batch[-1].event in TERMINAL_EVENTS:
                        yield Last(chunk + done)
                        return
                    yield chunk
        except ApiError as err:
            yield Last(sse_data({"error": openai_error(err)}) + done)
            return
        yield Last(done)

    def shape(self, ev: TaskEvent) -> bytes:
        sh = self.shaper
        if ev.event == "token":
            k = choice_index(ev.data, self.n)
            choice = self.choices[k]
            text = str(ev.data.get("t", ""))
            lp = None
            if choice.logprobs is not None:
                lp = choice.logprobs.chunk(ev.data.get("logprobs"))
            if choice.calls is None:
                return sse_data(sh.chunk(text, logprobs=lp, index=k))
            text, deltas = choice.calls.feed(text)  # what may be a tool call is held (ORCH-255)
            out = sse_data(sh.chunk(text, logprobs=lp, index=k)) if text or lp else b""
            return out + (sse_data(sh.tool_calls_chunk(deltas, k)) if deltas else b"")
        if ev.event == "started":
            self.prompt_tokens = int_or(ev.data.get("prompt_tokens"), 0)
        elif ev.event == "end":
            ends = choice_ends(ev.data)
            default = finish_reason(ev.data.get("stop_reason"))
            out = b"".join(self.end_choice(k, ends.get(k, default)) for k in range(self.n))
            if self.include_usage:
                tokens = int_or(ev.data.get("tokens_out"), 0)
                cached = cached_tokens(ev.data)
                out += sse_data(sh.usage_chunk(usage(self.prompt_tokens, tokens, cached)))
            return out
        elif ev.event == "error":
            return sse_data({"error": openai_error(event_error(ev.data))})
        return b""

    def end_choice(self, k: int, finish: str) -> bytes:
        """Choice k's last chunks: what its tool-call reader held, then its finish_reason."""
        sh, calls, out = self.shaper, self.choices[k].calls, b""
        if calls is not None:
            content, deltas = calls.finish()
            out += sse_data(sh.chunk(content, index=k)) if content else b""
            if deltas:
                out += sse_data(sh.tool_calls_chunk(deltas, k))
            if calls.called and sh.tools is not None:
                finish = sh.tools.finish
        return out + sse_data(sh.chunk(None, finish, index=k))


def _event_stream(
    service: TaskService, task_id: str, shaper: Shaper, include_usage: bool, n: int = 1
) -> EventStream:
    """The OpenAI SSE stream of one task; when it ends before the task did (the client left),
    the task is cancelled: nobody wants its tokens."""

    def detach() -> None:
        if service.is_open(task_id):
            service.cancel_soon(task_id)

    return EventStream(
        _Chunks(service, task_id, shaper, include_usage, n).chunks(),
        on_close=detach,
        headers={"X-Llorch-Task-Id": task_id},
        stop_frame=lambda err: sse_data({"error": openai_error(err)}) + sse_data("[DONE]"),
    )


routes: list[Route] = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
