"""The synchronous client for orchestratord's `/v2` API (and `/v1/embeddings`)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource

from llorch_sdk.errors import ConnectionFailed, LlorchError, error_from_response
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

DEFAULT_TIMEOUT = 30.0


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Stream:
    """The events of one submitted task; iterate it, or call `text()` to collect the tokens.

    Closing it (or leaving its `with` block) stops reading; it does not cancel the task.
    """

    def __init__(self, submitted: Submitted, events: Iterator[Event]) -> None:
        self.submitted = submitted
        self.task_id = submitted.task_id
        self._events = events

    def __iter__(self) -> Iterator[Event]:
        return self._events

    def text(self) -> str:
        """Read to the end and return the generated text; an `error` event raises."""
        parts: list[str] = []
        for event in self._events:
            if event.event == "token":
                parts.append(str(event.data.get("t", "")))
            event.raise_for_error()
        return "".join(parts)

    def texts(self) -> list[str]:
        """Read to the end and return each choice's text, by index: one for a task without `n`,
        `n` for a task that asked for `n` choices (ORCH-270); an `error` event raises."""
        parts: dict[int, list[str]] = {}
        for event in self._events:
            if event.event == "token":
                parts.setdefault(choice_index(event), []).append(str(event.data.get("t", "")))
            event.raise_for_error()
        return [("".join(parts.get(k, []))) for k in range(max(parts, default=0) + 1)]

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Client:
    """Talks to orchestratord: submit tasks, read their events, cancel, inspect.

    `base_url` is the daemon's root (`http://host:8080`); `api_key` is sent as a bearer token;
    `timeout` bounds every call except the wait for the next event of a stream.
    `http_client` replaces the internal `httpx.Client` (its base_url and auth are then yours).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_reconnects: int = 5,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.max_reconnects = max_reconnects
        self._timeout = timeout
        self._http = http_client or httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {path}: {e!r}", retriable=True) from e
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def submit(
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
        """Queue a task (`POST /v2/tasks`); `params` are the API's fields (`max_tokens`, `n`
        for several choices of the prompt, ...).

        `json_schema` (a JSON Schema) or `grammar` (GBNF) binds the output; `logprobs` makes
        each `token` event carry its tokens' logprobs, with `top_logprobs` alternatives each.

        Raises `LlorchError` (e.g. `QueueFull` with `retry_after_ms`) when it is refused.
        """
        structure = output_params(json_schema, grammar, logprobs, top_logprobs)
        body = task_body(model, prompt, messages, {**params, **structure})
        response = self._request("POST", "/v2/tasks", json=body)
        return Submitted.from_json(response.json())

    def events(self, task_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """Yield the task's events until `end` or `error`, reconnecting with `Last-Event-ID`.

        A dropped connection is resumed where it broke, so no event is lost or repeated. A task
        whose events went with a restarted orchestratord raises `WorkerReset` (retriable:
        submit it again), not `NotFound`.
        """
        cursor = Cursor(last_event_id, self.max_reconnects)
        path = f"/v2/tasks/{task_id}/events"
        timeout = httpx.Timeout(self._timeout, read=None)
        while not cursor.done:
            cause: Exception | None = None
            headers = {**cursor.headers(), "Accept": "text/event-stream"}
            try:
                with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response)
                    for sse in EventSource(response).iter_sse():
                        event = parse_event(sse)
                        if event is not None and cursor.accept(event):
                            yield event
                            if cursor.done:
                                return
            except httpx.TransportError as e:
                cause = e
            time.sleep(cursor.broken(cause))

    def stream(
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
    ) -> Stream:
        """Submit a task and return its events as a `Stream` (`stream.task_id` to cancel it)."""
        submitted = self.submit(
            model,
            prompt,
            messages,
            json_schema=json_schema,
            grammar=grammar,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            **params,
        )
        return Stream(submitted, self.events(submitted.task_id))

    def cancel(self, task_id: str) -> None:
        """Cancel a task (`POST /v2/tasks/{id}/cancel`); cancelling twice is not an error."""
        self._request("POST", f"/v2/tasks/{task_id}/cancel")

    def get(self, task_id: str) -> dict[str, Any]:
        """The task record (`GET /v2/tasks/{id}`)."""
        return _object(self._request("GET", f"/v2/tasks/{task_id}"))

    def capabilities(self) -> dict[str, Any]:
        """What the daemon offers (`GET /v2/meta/capabilities`): models, limits, API version."""
        return _object(self._request("GET", "/v2/meta/capabilities"))

    def list_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        tenant: str | None = None,
        since_ms: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of task records, newest first (`GET /v2/tasks`); a client key sees its own
        tenant's tasks, `tenant` filters for an admin. `page.next_cursor` fetches the next."""
        query = task_query(status, model, tenant, since_ms, limit, cursor)
        return TaskPage.from_json(_object(self._request("GET", "/v2/tasks", params=query)))

    def workers(self) -> list[dict[str, Any]]:
        """The registered workers (`GET /v2/workers`)."""
        return _workers(_object(self._request("GET", "/v2/workers")))

    def embeddings(self, model: str, input: str | Sequence[str]) -> list[list[float]]:
        """One vector per input, in input order (`POST /v1/embeddings`); a single string
        gives a list of one. Raises `InvalidParams` when the model cannot embed."""
        body = {"model": model, "input": _inputs(input), "encoding_format": "float"}
        return _vectors(_object(self._request("POST", "/v1/embeddings", json=body)))

    def remove_worker(self, worker_id: str) -> None:
        """Remove a worker from the registry (`DELETE /v2/workers/{id}`); the process runs on."""
        self._request("DELETE", f"/v2/workers/{worker_id}")

    def compare(
        self,
        model: str,
        targets: Sequence[str],
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        *,
        label: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Run one job at once on each target (`"worker:ID"` or `"pool:NAME"`) and save it as
        a compare run (`POST /v2/compare`); returns the run record (status `running`)."""
        body = task_body(model, prompt, messages, params)
        body["targets"] = list(targets)
        if label is not None:
            body["label"] = label
        return _object(self._request("POST", "/v2/compare", json=body))

    def compare_run(self, run_id: str, wait_ms: int = 0) -> dict[str, Any]:
        """A compare run's record (`GET /v2/compare/{id}`); with `wait_ms`, the server holds
        the reply until the run is done or that time passed."""
        params = {"wait_ms": wait_ms} if wait_ms else None
        timeout = self._timeout + wait_ms / 1000
        return _object(
            self._request("GET", f"/v2/compare/{run_id}", params=params, timeout=timeout)
        )

    def compare_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Saved compare runs, newest first (`GET /v2/compare`)."""
        return _runs(_object(self._request("GET", "/v2/compare", params={"limit": limit})))

    def limits(self, tenant: str) -> dict[str, Any]:
        """A tenant's limits and its usage now (`GET /v2/admin/tenants/{t}/limits`, admin)."""
        return _object(self._request("GET", f"/v2/admin/tenants/{quote(tenant, safe='')}/limits"))

    def set_limits(self, tenant: str, limits: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a tenant's limits (`PUT`, admin): a limit left out or None is no limit."""
        path = f"/v2/admin/tenants/{quote(tenant, safe='')}/limits"
        return _object(self._request("PUT", path, json=dict(limits)))

    def usage(
        self,
        since: str | int | None = None,
        until: str | int | None = None,
        by: str = "tenant",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Usage totals grouped `by` tenant, model, key or hour (`GET /v2/usage`); `since` and
        `until` are unix ms or a time ago (`24h`). A client key sees its own tenant's."""
        query = {"since": since, "until": until, "by": by, "tenant": tenant}
        params = {k: str(v) for k, v in query.items() if v is not None}
        return _object(self._request("GET", "/v2/usage", params=params))


def _object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as e:
        raise LlorchError(f"reply is not JSON: {response.text[:200]!r}", code="BAD_REPLY") from e
    if not isinstance(body, dict):
        raise LlorchError(f"reply is not a JSON object: {body!r}"[:300], code="BAD_REPLY")
    return body


def _inputs(value: str | Sequence[str]) -> str | list[str]:
    return value if isinstance(value, str) else list(value)


def _vectors(body: dict[str, Any]) -> list[list[float]]:
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise LlorchError("reply has no data list", code="BAD_REPLY")
    ordered = sorted(data, key=lambda d: int(d.get("index", 0)))
    return [[float(x) for x in d.get("embedding", [])] for d in ordered]


def _workers(body: dict[str, Any]) -> list[dict[str, Any]]:
    workers = body.get("workers")
    if not isinstance(workers, list):
        raise LlorchError("reply has no workers list", code="BAD_REPLY")
    return [w for w in workers if isinstance(w, dict)]


def _runs(body: dict[str, Any]) -> list[dict[str, Any]]:
    runs = body.get("runs")
    if not isinstance(runs, list):
        raise LlorchError("reply has no runs list", code="BAD_REPLY")
    return [r for r in runs if isinstance(r, dict)]
