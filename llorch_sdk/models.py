"""Values the SDK returns, and the pure logic both clients share (request bodies, resuming)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent

from llorch_sdk.errors import ConnectionFailed, LlorchError, error_for_code

TERMINAL_EVENTS = frozenset({"end", "error"})


@dataclass(frozen=True)
class Submitted:
    """orchestratord's answer to a submission: the task is queued under `task_id`."""

    task_id: str
    status: str
    queue_position: int | None
    events_url: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Submitted:
        try:
            task_id = str(body["task_id"])
        except KeyError:
            raise LlorchError("submit reply has no task_id", code="BAD_REPLY") from None
        position = body.get("queue_position")
        return cls(
            task_id=task_id,
            status=str(body.get("status", "queued")),
            queue_position=position if isinstance(position, int) else None,
            events_url=str(body.get("events_url") or f"/v2/tasks/{task_id}/events"),
        )


@dataclass(frozen=True)
class TaskPage:
    """One page of `GET /v2/tasks`: task records newest first, and the cursor of the next page
    (None on the last one)."""

    tasks: list[dict[str, Any]]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskPage:
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise LlorchError("task list reply has no tasks list", code="BAD_REPLY")
        cursor = body.get("next_cursor")
        return cls(
            tasks=[t for t in tasks if isinstance(t, dict)],
            next_cursor=cursor if isinstance(cursor, str) and cursor else None,
        )


def task_query(
    status: str | None,
    model: str | None,
    tenant: str | None,
    since_ms: int | None,
    limit: int | None,
    cursor: str | None,
) -> dict[str, str]:
    """The query of `GET /v2/tasks`: only the filters given."""
    given = {
        "status": status,
        "model": model,
        "tenant": tenant,
        "since": since_ms,
        "limit": limit,
        "cursor": cursor,
    }
    return {k: str(v) for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class Event:
    """One task event: `queued`, `started`, `token` (`data["t"]` is the text), `end` or `error`."""

    id: int
    event: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS

    def raise_for_error(self) -> None:
        """Raise the matching `LlorchError` if this is an `error` event."""
        if self.event == "error":
            raise error_for_code(
                str(self.data.get("code", "INTERNAL")),
                str(self.data.get("message", "task failed")),
                retriable=bool(self.data.get("retriable", False)),
                body=self.data,
            )


def choice_index(event: Event) -> int:
    """The choice a `token` event belongs to: its `index`, 0 for a task without `n` (ORCH-270)."""
    index = event.data.get("index", 0)
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def task_body(
    model: str,
    prompt: str | None,
    messages: Sequence[Mapping[str, Any]] | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON body of `POST /v2/tasks`; parameters left as None are not sent."""
    body: dict[str, Any] = {"model": model}
    if prompt is not None:
        body["prompt"] = prompt
    if messages is not None:
        body["messages"] = [dict(m) for m in messages]
    body.update({k: v for k, v in params.items() if v is not None})
    return body


def output_params(
    json_schema: Mapping[str, Any] | None,
    grammar: str | None,
    logprobs: bool | None,
    top_logprobs: int | None,
) -> dict[str, Any]:
    """The task fields of an output constraint and logprobs (ORCH-240); unset ones are left out.
    A `top_logprobs` alone asks for logprobs too."""
    out: dict[str, Any] = {}
    if json_schema is not None:
        out["json_schema"] = dict(json_schema)
    if grammar is not None:
        out["grammar"] = grammar
    if top_logprobs and logprobs is None:
        logprobs = True
    if logprobs is not None:
        out["logprobs"] = logprobs
    if top_logprobs is not None:
        out["top_logprobs"] = top_logprobs
    return out


def parse_event(sse: ServerSentEvent) -> Event | None:
    """An `Event` from one SSE frame; keep-alives and frames without a JSON object give None."""
    if not sse.data:
        return None
    try:
        data = json.loads(sse.data)
    except ValueError:
        return None
    if not isinstance(data, dict):
        data = {"value": data}
    try:
        event_id = int(sse.id)
    except ValueError:
        event_id = -1
    return Event(id=event_id, event=sse.event, data=data)


class Cursor:
    """Where a reader is in a task's event stream, so a reconnect resumes without duplicates.

    The server replays from `Last-Event-ID`; events it repeats anyway (ids not above the last
    one seen) are dropped here. `max_reconnects` counts reconnects in a row without a new event.
    """

    def __init__(self, last_event_id: int | None, max_reconnects: int) -> None:
        self.last_id = last_event_id
        self.max_reconnects = max_reconnects
        self.failures = 0
        self.done = False

    def headers(self) -> dict[str, str]:
        return {} if self.last_id is None else {"Last-Event-ID": str(self.last_id)}

    def accept(self, event: Event) -> bool:
        """Whether `event` is new; records it as seen."""
        if event.id >= 0:
            if self.last_id is not None and event.id <= self.last_id:
                return False
            self.last_id = event.id
        self.failures = 0
        if event.terminal:
            self.done = True
        return True

    def broken(self, cause: Exception | None) -> float:
        """Record a dropped stream; return the delay before reconnecting, or raise when spent."""
        self.failures += 1
        if self.failures > self.max_reconnects:
            raise ConnectionFailed(
                f"event stream broke {self.failures} times in a row without a new event"
                + (f" (last: {cause!r})" if cause else ""),
                retriable=True,
            ) from cause
        return min(0.1 * 2.0 ** (self.failures - 1), 2.0)
