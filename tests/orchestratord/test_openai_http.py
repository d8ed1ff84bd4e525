"""The /v1 adapter over HTTP, in process, with a scripted task service.

These pin the adapter's own behaviour on paths a real worker rarely takes (an error event
mid-stream, a refused submission); the real end-to-end paths are in test_openai_e2e.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from orchestratord.domain.tasks import TaskRecord, TaskRequest
from orchestratord.http.openai import routes
from orchestratord.runtime.tasklog import TaskEvent
from shared.problem import QueueFull, install_problem_handlers


class ScriptedService:
    """Replays a fixed event list for every task; records what it was asked."""

    def __init__(self, events: list[tuple[str, dict[str, Any]]], refuse: Exception | None = None):
        self.script = events
        self.refuse = refuse
        self.submitted: list[TaskRequest] = []
        self.cancelled: list[str] = []

    async def submit(self, req: TaskRequest) -> TaskRecord:
        if self.refuse is not None:
            raise self.refuse
        self.submitted.append(req)
        return TaskRecord(
            id=f"t{len(self.submitted)}",
            model=req.model,
            priority=req.priority,
            status="queued",
            prompt_hash=req.prompt_hash,
            created_ms=0,
        )

    async def events(self, task_id: str, *_: object) -> AsyncIterator[TaskEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[TaskEvent]:
        for n, (name, data) in enumerate(self.script):
            yield TaskEvent(n, name, data)

    async def frames(self, task_id: str, *_: object) -> AsyncGenerator[list[TaskEvent], None]:
        return self._frames()

    async def _frames(self) -> AsyncGenerator[list[TaskEvent], None]:
        yield []  # what the service sends while nothing happens: becomes a keep-alive
        async for ev in self._events():
            yield [ev]

    def cancel_soon(self, task_id: str) -> None:
        self.cancelled.append(task_id)

    def is_open(self, task_id: str) -> bool:
        return False  # every scripted stream runs to its end

    def models(self) -> list[str]:
        return ["llorch-tiny"]


@contextlib.contextmanager
def client(service: ScriptedService) -> Iterator[TestClient]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"service": service}

    app = Starlette(routes=routes, lifespan=lifespan)
    install_problem_handlers(app)
    with TestClient(app) as c:
        yield c


OK: list[tuple[str, dict[str, Any]]] = [
    ("queued", {"queue_position": 0}),
    ("started", {"worker_id": "w1", "queue_ms": 1, "prompt_tokens": 4}),
    ("token", {"t": "Hel", "i": 0}),
    ("token", {"t": "lo", "i": 1}),
    ("end", {"tokens_out": 2, "ttft_ms": 1.0, "decode_time_ms": 1.0, "stop_reason": "MAX_TOKENS"}),
]
CHAT = {"model": "llorch-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_non_streaming_chat_completion() -> None:
    service = ScriptedService(OK)
    with client(service) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "user": "u1"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-t1"
    assert body["choices"][0]["message"]["content"] == "Hello"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert r.headers["x-llorch-task-id"] == "t1"
    assert service.submitted[0].session_id == "u1" and service.submitted[0].max_tokens == 2


def test_streaming_chat_sends_role_tokens_finish_usage_and_done() -> None:
    service = ScriptedService(OK)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with client(service) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert ": keep-alive" in text
    lines = data_lines(text)
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["usage"]["completion_tokens"] == 2
    assert service.cancelled == []  # a stream read to the end cancels nothing


def test_error_event_mid_stream_becomes_an_openai_error_chunk() -> None:
    service = ScriptedService(
        [
            ("started", {"worker_id": "w1", "queue_ms": 1}),
            ("token", {"t": "a", "i": 0}),
            ("error", {"code": "WORKER_RESET", "message": "worker died", "retriable": True}),
        ]
    )
    with client(service) as c:
        r = c.post("/v1/completions", json={"model": "llorch-tiny", "prompt": "x", "stream": True})
    lines = data_lines(r.text)
    assert json.loads(lines[0])["choices"][0]["text"] == "a"
    assert json.loads(lines[1]) == {
        "error": {
            "message": "worker died",
            "type": "server_error",
            "param": None,
            "code": "WORKER_RESET",
        }
    }
    assert lines[-1] == "[DONE]"


def test_error_event_without_stream_is_an_error_status() -> None:
    service = ScriptedService([("error", {"code": "DEADLINE_UNMET", "message": "too late"})])
    with client(service) as c:
        r = c.post("/v1/completions", json={"model": "llorch-tiny", "prompt": "x"})
    assert r.status_code == 504
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "DEADLINE_UNMET"
    assert r.json()["error"]["code"] == "DEADLINE_UNMET"


def test_refused_submission_has_both_error_shapes_and_retry_after() -> None:
    service = ScriptedService(OK, refuse=QueueFull("queue is full", retry_after_ms=1200))
    with client(service) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    body = r.json()
    assert (body["code"], body["retriable"], body["retry_after_ms"]) == ("QUEUE_FULL", True, 1200)
    assert body["error"] == {
        "message": "queue is full",
        "type": "rate_limit_error",
        "param": None,
        "code": "QUEUE_FULL",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"{not json", "body"), (b'{"model": "m", "messages": [], "n": 3}', "messages")],
)
def test_bad_body_is_400_naming_the_field(body: bytes, field: str) -> None:
    service = ScriptedService(OK)
    with client(service) as c:
        r = c.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert r.status_code == 400
    assert field in [e["field"] for e in r.json()["errors"]]
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert service.submitted == []


def test_task_validator_errors_reach_the_client() -> None:
    with client(ScriptedService(OK)) as c:
        r = c.post("/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "max_tokens"


def test_models_list() -> None:
    with client(ScriptedService(OK)) as c:
        r = c.get("/v1/models")
    assert r.json() == {
        "object": "list",
        "data": [{"id": "llorch-tiny", "object": "model", "created": 0, "owned_by": "llorch"}],
    }
