"""The asyncio client for orchestratord's `/v2` API; the same calls as `Client`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import EventSource

from llorch_sdk.client import DEFAULT_TIMEOUT, _headers, _inputs, _object, _vectors, _workers
from llorch_sdk.errors import ConnectionFailed, error_from_response
from llorch_sdk.models import (
    Cursor,
    Event,
    Submitted,
    TaskPage,
    choice_index,
    output_params,
    parse_event,
    task_body,
    task_query,
)


class AsyncStream:
    """The events of one submitted task, for `async for`; `await text()` collects the tokens."""

    def __init__(self, submitted: Submitted, events: AsyncIterator[Event]) -> None:
        self.submitted = submitted
        self.task_id = submitted.task_id
        self._events = events

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events

    async def text(self) -> str:
        """Read to the end and return the generated text; an `error` event raises."""
        parts: list[str] = []
        async for event in self._events:
            if event.event == "token":
                parts.append(str(event.data.get("t", "")))
            event.raise_for_error()
        return "".join(parts)

    async def texts(self) -> list[str]:
        """Each choice's text, by index (ORCH-270): as `Stream.texts`."""
        parts: dict[int, list[str]] = {}
        async for event in self._events:
            if event.event == "token":
                parts.setdefault(choice_index(event), []).append(str(event.data.get("t", "")))
            event.raise_for_error()
        return [("".join(parts.get(k, []))) for k in range(max(parts, default=0) + 1)]

    async def aclose(self) -> None:
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncClient:
    """Talks to orchestratord from asyncio code; see `Client` for the parameters."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_reconnects: int = 5,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.max_reconnects = max_reconnects
        self._timeout = timeout
        self._http = http_client or httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {path}: {e!r}", retriable=True) from e
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    async def submit(
        self,
        model: str,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
        grammar: str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        **params: Any,
    ) -> Submitted:
        """Queue a task (`POST /v2/tasks`); raises `LlorchError` when it is refused. The
        keyword fields are `Client.submit`'s."""
        structure = output_params(json_schema, grammar, logprobs, top_logprobs)
        body = task_body(model, prompt, messages, {**params, **structure})
        response = await self._request("POST", "/v2/tasks", json=body)
        return Submitted.from_json(response.json())

    async def events(self, task_id: str, last_event_id: int | None = None) -> AsyncIterator[Event]:
        """Yield the task's events until `end` or `error`, reconnecting with `Last-Event-ID`;
        a task lost to an orchestratord restart raises the retriable `WorkerReset`."""
        cursor = Cursor(last_event_id, self.max_reconnects)
        path = f"/v2/tasks/{task_id}/events"
        timeout = httpx.Timeout(self._timeout, read=None)
        while not cursor.done:
            cause: Exception | None = None
            headers = {**cursor.headers(), "Accept": "text/event-stream"}
            try:
                async with self._http.stream(
                    "GET", path, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    async for sse in EventSource(response).aiter_sse():
                        event = parse_event(sse)
                        if event is not None and cursor.accept(event):
                            yield event
                            if cursor.done:
                                return
            except httpx.TransportError as e:
                cause = e
            await asyncio.sleep(cursor.broken(cause))

    async def stream(
        self,
        model: str,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        *,
        json_schema: Mapping[str, Any] | None = None,
        grammar: str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        **params: Any,
    ) -> AsyncStream:
        """Submit a task and return its events as an `AsyncStream`."""
        submitted = await self.submit(
            model,
            prompt,
            messages,
            json_schema=json_schema,
            grammar=grammar,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            **params,
        )
        return AsyncStream(submitted, self.events(submitted.task_id))

    async def cancel(self, task_id: str) -> None:
        """Cancel a task; cancelling twice is not an error."""
        await self._request("POST", f"/v2/tasks/{task_id}/cancel")

    async def get(self, task_id: str) -> dict[str, Any]:
        """The task record (`GET /v2/tasks/{id}`)."""
        return _object(await self._request("GET", f"/v2/tasks/{task_id}"))

    async def capabilities(self) -> dict[str, Any]:
        """What the daemon offers (`GET /v2/meta/capabilities`)."""
        return _object(await self._request("GET", "/v2/meta/capabilities"))

    async def embeddings(self, model: str, input: str | Sequence[str]) -> list[list[float]]:
        """One vector per input, in input order (`POST /v1/embeddings`)."""
        body = {"model": model, "input": _inputs(input), "encoding_format": "float"}
        return _vectors(_object(await self._request("POST", "/v1/embeddings", json=body)))

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        tenant: str | None = None,
        since_ms: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of task records, newest first (`GET /v2/tasks`); see `Client.list_tasks`."""
        query = task_query(status, model, tenant, since_ms, limit, cursor)
        return TaskPage.from_json(_object(await self._request("GET", "/v2/tasks", params=query)))

    async def workers(self) -> list[dict[str, Any]]:
        """The registered workers (`GET /v2/workers`)."""
        return _workers(_object(await self._request("GET", "/v2/workers")))

    async def remove_worker(self, worker_id: str) -> None:
        """Remove a worker from the registry (`DELETE /v2/workers/{id}`)."""
        await self._request("DELETE", f"/v2/workers/{worker_id}")
