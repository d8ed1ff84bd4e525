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


def _entry(token: str, logprob: float) -> dict[str, Any]:
    alt = {"token": token, "bytes": list(token.encode()), "logprob": logprob}
    return {**alt, "top_logprobs": [alt]}


HEL, LO = _entry("Hel", -0.25), _entry("lo", -0.5)
WITH_LOGPROBS: list[tuple[str, dict[str, Any]]] = [
    ("started", {"worker_id": "w1", "queue_ms": 1, "prompt_tokens": 4}),
    ("token", {"t": "Hel", "i": 0, "logprobs": [HEL]}),
    ("token", {"t": "lo", "i": 1, "logprobs": [LO]}),
    (
        "end",
        {
            "tokens_out": 2,
            "ttft_ms": 1.0,
            "decode_time_ms": 1.0,
            "stop_reason": "EOS",
            "prompt_tokens": 4,
            "prompt_tokens_cached": 3,
        },
    ),
]


def test_orch_242_response_format_reaches_the_task() -> None:
    """ORCH-242: json_schema / json_object response formats become the task's json_schema;
    text is no constraint; another type is 400 naming response_format."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    service = ScriptedService(OK)
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    with client(service) as c:
        assert c.post("/v1/chat/completions", json={**CHAT, "response_format": fmt}).is_success
        fmt = {"type": "json_object"}
        assert c.post("/v1/chat/completions", json={**CHAT, "response_format": fmt}).is_success
        fmt = {"type": "text"}
        assert c.post("/v1/chat/completions", json={**CHAT, "response_format": fmt}).is_success
        bad = c.post("/v1/chat/completions", json={**CHAT, "response_format": {"type": "yaml"}})
    assert [r.json_schema for r in service.submitted] == [schema, {"type": "object"}, None]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"


def test_orch_243_chat_logprobs_whole_and_streamed() -> None:
    """ORCH-243, ORCH-246: logprobs.content holds the worker's entries, in the final object and
    per chunk; usage carries the worker's cached prompt tokens."""
    service = ScriptedService(WITH_LOGPROBS)
    asked = {**CHAT, "logprobs": True, "top_logprobs": 1}
    with client(service) as c:
        whole = c.post("/v1/chat/completions", json=asked).json()
        stream = {**asked, "stream": True, "stream_options": {"include_usage": True}}
        text = c.post("/v1/chat/completions", json=stream).text
    assert (service.submitted[0].logprobs, service.submitted[0].top_logprobs) == (True, 1)
    assert whole["choices"][0]["logprobs"] == {"content": [HEL, LO], "refusal": None}
    assert whole["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    chunks = [json.loads(x) for x in data_lines(text)[:-1]]
    per_chunk = [c["choices"][0]["logprobs"] for c in chunks if c["choices"]]
    assert per_chunk == [
        None,
        {"content": [HEL], "refusal": None},
        {"content": [LO], "refusal": None},
        None,
    ]
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}


def test_orch_243_completion_logprobs_are_the_legacy_object() -> None:
    """ORCH-243: `logprobs: k` on /v1/completions gives tokens, token_logprobs, top_logprobs
    dicts and text_offset counted from the prompt's start."""
    service = ScriptedService(WITH_LOGPROBS)
    body = {"model": "llorch-tiny", "prompt": "Say:", "logprobs": 1}
    with client(service) as c:
        whole = c.post("/v1/completions", json=body).json()
        text = c.post("/v1/completions", json={**body, "stream": True}).text
    legacy = {
        "tokens": ["Hel", "lo"],
        "token_logprobs": [-0.25, -0.5],
        "top_logprobs": [{"Hel": -0.25}, {"lo": -0.5}],
        "text_offset": [4, 7],
    }
    assert whole["choices"][0]["logprobs"] == legacy
    chunks = [json.loads(x)["choices"][0]["logprobs"] for x in data_lines(text)[:-1]]
    assert [c["text_offset"] for c in chunks if c] == [[4], [7]]


def test_no_logprobs_asked_leaves_them_null() -> None:
    """ORCH-243: without logprobs asked, logprobs stay null even if an event had entries."""
    with client(ScriptedService(WITH_LOGPROBS)) as c:
        whole = c.post("/v1/chat/completions", json=CHAT).json()
    assert whole["choices"][0]["logprobs"] is None


def test_orch_245_retrieve_a_model_or_404() -> None:
    """ORCH-245: GET /v1/models/{id} gives the model object; an unknown one is 404 with
    OpenAI's error member naming `model`."""
    with client(ScriptedService(OK)) as c:
        found = c.get("/v1/models/llorch-tiny")
        missing = c.get("/v1/models/org/other-model")
    assert found.json() == {
        "id": "llorch-tiny",
        "object": "model",
        "created": 0,
        "owned_by": "llorch",
    }
    assert missing.status_code == 404
    assert missing.json()["code"] == "MODEL_NOT_FOUND"
    assert missing.json()["error"]["type"] == "not_found_error"
    assert missing.json()["error"]["param"] == "model"
