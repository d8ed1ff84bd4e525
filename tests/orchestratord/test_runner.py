"""The runner in process: whatever goes wrong while relaying, a dispatched task ends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestratord.worker_client.relay import WorkerRefused
from tests.orchestratord.cluster import wait_for
from tests.orchestratord.conftest import AppFactory

CT = {"authorization": "Bearer ct"}
WORKER = {"worker_id": "w1", "url": "http://127.0.0.1:1", "model": "m", "slots_total": 1}


async def broken_relay(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("a relay bug")


def test_an_unexpected_relay_error_fails_the_task_and_frees_its_slot(
    orchd: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It used to escape the runner: the task stayed open and its client waited forever.
    monkeypatch.setattr("orchestratord.runtime.runner.execute", broken_relay)
    with orchd(cluster_token="ct") as c:
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        r = c.post("/v2/tasks", json={"model": "m", "prompt": "hello", "max_tokens": 4})
        assert r.status_code == 202
        task_id = r.json()["task_id"]
        record = wait_for(
            lambda: (rec := c.get(f"/v2/tasks/{task_id}").json())["status"] == "failed" and rec,
            timeout=10,
            what="the task to fail",
        )
        assert record["error_code"] == "INTERNAL"
        with c.stream("GET", f"/v2/tasks/{task_id}/events") as stream:
            frames = [line for line in stream.iter_lines() if line.startswith("data: ")]
        error = json.loads(frames[-1].removeprefix("data: "))
        assert error["code"] == "INTERNAL" and "a relay bug" in error["message"]
        (worker,) = c.get("/v2/workers", headers=CT).json()["workers"]
        assert worker["slots_busy"] == 0


async def already_running(*args: Any, **kwargs: Any) -> None:
    raise WorkerRefused(409, b'{"code": "CONFLICT", "detail": "job is already running"}')


def test_orch_055_a_workers_409_does_not_mark_it_failed(
    orchd: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH-055: a worker answering 409 (that job id runs there already: orchestratord's own
    duplicate) stays ready; the task is retried as for a 503, then fails WORKER_RESET."""
    monkeypatch.setattr("orchestratord.runtime.runner.execute", already_running)
    with orchd(cluster_token="ct", retry_attempts=1) as c:
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        r = c.post("/v2/tasks", json={"model": "m", "prompt": "hello", "max_tokens": 4})
        task_id = r.json()["task_id"]
        record = wait_for(
            lambda: (rec := c.get(f"/v2/tasks/{task_id}").json())["status"] == "failed" and rec,
            timeout=10,
            what="the task to fail",
        )
        assert (record["error_code"], record["attempts"]) == ("WORKER_RESET", 2)
        (worker,) = c.get("/v2/workers", headers=CT).json()["workers"]
        assert (worker["state"], worker["slots_busy"]) == ("ready", 0)


TOKEN_WITH_LOGPROBS = (
    b'{"t":"Hi","i":0,"logprobs":[{"token":"Hi","bytes":[72,105],"logprob":-0.5,'
    b'"top_logprobs":[{"token":"Hi","bytes":[72,105],"logprob":-0.5}]}]}'
)


def test_orch_241_token_logprobs_pass_through_and_the_worker_gets_the_fields(
    orchd: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH-240, ORCH-241: the task's constraint and logprobs fields reach the worker body, and
    a token event's `logprobs` reach the task's stream byte for byte."""
    bodies: list[dict[str, Any]] = []

    async def scripted(
        url: str, token: str | None, body: dict[str, Any], on_event: Any, **_: Any
    ) -> None:
        bodies.append(body)
        on_event("started", b'{"job_id":"j","model":"m","prompt_tokens":2}')
        on_event("token", TOKEN_WITH_LOGPROBS)
        end = b'{"tokens_out":1,"prompt_tokens":2,"prompt_tokens_cached":0,"ttft_ms":1.0,'
        on_event("end", end + b'"decode_time_ms":1.0,"stop_reason":"EOS"}')

    monkeypatch.setattr("orchestratord.runtime.runner.execute", scripted)
    schema = {"type": "object"}
    task = {"model": "m", "prompt": "x", "json_schema": schema, "logprobs": True, "top_logprobs": 1}
    with orchd(cluster_token="ct") as c:
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        task_id = c.post("/v2/tasks", json=task).json()["task_id"]
        with c.stream("GET", f"/v2/tasks/{task_id}/events") as stream:
            frames = [line for line in stream.iter_lines() if line.startswith("data: ")]
    (body,) = bodies
    assert (body["json_schema"], body["logprobs"], body["top_logprobs"]) == (schema, True, 1)
    assert TOKEN_WITH_LOGPROBS.decode() in [f.removeprefix("data: ") for f in frames]
