from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from orchestratord.domain.tasks import TaskRecord, TaskRequest, parse_task_request
from orchestratord.domain.tenancy import OPEN, Caller
from orchestratord.runtime.service import TaskService
from orchestratord.runtime.tasklog import TaskEvent, TaskLog
from shared.problem import Conflict, InvalidParams
from tests.orchestratord.conftest import AppFactory


def fields(body: Any) -> set[str]:
    with pytest.raises(InvalidParams) as e:
        parse_task_request(body, caller=OPEN)
    return {err["field"] for err in e.value.errors}


def test_minimal_prompt_request_gets_defaults() -> None:
    """ORCH-010: defaults apply and sampling fields left out stay out of the worker body; ORCH-062:
    the prompt hash is a sha256, not the prompt."""
    req = parse_task_request({"model": "m", "prompt": "hi"}, caller=OPEN)
    assert (req.model, req.prompt, req.max_tokens, req.priority) == ("m", "hi", 128, "interactive")
    assert req.worker_body("j1") == {"job_id": "j1", "max_tokens": 128, "prompt": "hi"}
    assert len(req.prompt_hash) == 64 and "hi" not in req.prompt_hash


def test_full_request_passes_sampling_to_the_worker_body() -> None:
    """ORCH-010: every sampling field reaches the worker body; ORCH-151: the key's tenant wins over
    the body's."""
    req = parse_task_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 5,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 10,
            "min_p": 0.1,
            "repeat_penalty": 1.1,
            "seed": 7,
            "stop": ["\n"],
            "priority": "batch",
            "session_id": "s",
            "deadline_ms": 10,
            "task_id": "abc-1",
            "tenant": "body",
        },
        caller=Caller("key"),
    )
    assert req.tenant == "key"  # credentials win over the body
    assert req.worker_body("j") == {
        "job_id": "j",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 10,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
        "seed": 7,
        "stop": ["\n"],
    }


def test_every_bad_field_is_listed() -> None:
    """ORCH-010, ORCH-011: every bad field, unknown fields included, is listed at once."""
    assert fields({"prompt": "x"}) == {"model"}
    assert fields({"model": "m"}) == {"prompt"}
    assert fields({"model": "m", "prompt": "x", "messages": []}) == {"messages"}
    assert fields(
        {
            "model": "m",
            "prompt": "x",
            "max_tokens": 0,
            "temperature": "hot",
            "top_k": True,
            "stop": ["a"] * 5,
            "priority": "urgent",
            "task_id": "a b",
            "extra": 1,
        }
    ) == {"max_tokens", "temperature", "top_k", "stop", "priority", "task_id", "extra"}
    assert fields({"model": "m", "messages": [{"role": "user"}]}) == {"messages[0].content"}
    assert fields([1, 2]) == {"body"}


def test_orch_240_constraint_and_logprobs_reach_the_worker_body() -> None:
    """ORCH-240: grammar / json_schema / logprobs / top_logprobs are validated and passed to the
    worker's /execute as given; left out, none of them is sent."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = parse_task_request(
        {"model": "m", "prompt": "x", "json_schema": schema, "logprobs": True, "top_logprobs": 5},
        caller=OPEN,
    )
    assert req.constrained and req.logprobs and req.top_logprobs == 5
    body = req.worker_body("j")
    assert (body["json_schema"], body["logprobs"], body["top_logprobs"]) == (schema, True, 5)
    assert "grammar" not in body
    req = parse_task_request(
        {"model": "m", "prompt": "x", "grammar": 'root ::= "yes" | "no"'}, caller=OPEN
    )
    assert req.worker_body("j")["grammar"] == 'root ::= "yes" | "no"' and req.constrained
    plain = parse_task_request({"model": "m", "prompt": "x", "logprobs": False}, caller=OPEN)
    assert not plain.constrained
    assert set(plain.worker_body("j")) == {"job_id", "max_tokens", "prompt"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"json_schema": "object"}, "json_schema"),
        ({"json_schema": ["type", "object"]}, "json_schema"),
        ({"json_schema": {"enum": ["x" * 70_000]}}, "json_schema"),
        ({"grammar": 42}, "grammar"),
        ({"grammar": ""}, "grammar"),
        ({"grammar": "x" * 70_000}, "grammar"),
        ({"grammar": "root ::= x", "json_schema": {}}, "grammar"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"json_schema": {}, "ignore_eos": True}, "ignore_eos"),
    ],
)
def test_orch_240_bad_constraint_or_logprobs_is_named(extra: dict[str, Any], field: str) -> None:
    """ORCH-240, ORCH-011: each bad field is refused at the edge, named, before anything queues;
    for what it holds, not as an unknown field."""
    with pytest.raises(InvalidParams) as e:
        parse_task_request({"model": "m", "prompt": "x", **extra}, caller=OPEN)
    problems = {err["field"]: err["message"] for err in e.value.errors}
    assert field in problems and problems[field] != "unknown field"


def test_event_frames_pass_raw_data_through() -> None:
    """ORCH-022: token data is framed as the worker's JSON bytes, unchanged."""
    raw = b'{"t":"h\\u00e9","i":0}'
    ev = TaskEvent(3, "token", raw=raw)
    assert ev.frame == b"id: 3\nevent: token\ndata: " + raw + b"\n\n"
    assert ev.data == {"t": "hé", "i": 0}
    made = TaskEvent(0, "queued", {"queue_position": 2})
    assert json.loads(made.raw) == {"queue_position": 2}


def test_task_log_wakes_readers_and_closes_on_terminal_event() -> None:
    async def scenario() -> list[str]:
        log = TaskLog()
        seen: list[str] = []

        async def reader() -> None:
            i = 0
            while True:
                await log.wait(i)
                while i < len(log.events):
                    seen.append(log.events[i].event)
                    i += 1
                if log.closed:
                    return

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)
        log.append("queued", {})
        await asyncio.sleep(0)
        log.append("end", {})
        await asyncio.wait_for(task, 5)
        assert not await log.wait(99, 0.0) or log.closed
        with pytest.raises(RuntimeError):
            log.append("token", {})
        return seen

    assert asyncio.run(scenario()) == ["queued", "end"]


def test_orch_157_concurrent_submits_of_one_task_id_make_one_task(orchd: AppFactory) -> None:
    """ORCH-157, ORCH-013: two submits of one task_id at once (each looks the id up in the
    database, off the event loop) make one task: the same record for the same task, 409 for a
    different one; it used to be a 500 from the queue, or a second run of the task."""
    body = {"model": "m", "prompt": "hello", "max_tokens": 4}
    same = parse_task_request({**body, "task_id": "twice"}, caller=OPEN)
    with orchd() as c:
        service: TaskService = c.app.state.service

        async def together(*reqs: TaskRequest) -> list[TaskRecord | BaseException]:
            return await asyncio.gather(*(service.submit(r) for r in reqs), return_exceptions=True)

        first, second = c.portal.call(together, same, same)
        assert isinstance(first, TaskRecord) and second is first
        assert [r["client_id"] for r in c.get("/v2/tasks").json()["tasks"]] == ["twice"]
        one = parse_task_request({**body, "task_id": "race-2"}, caller=OPEN)
        two = parse_task_request({**body, "task_id": "race-2", "prompt": "bye"}, caller=OPEN)
        won, lost = c.portal.call(together, one, two)
        assert isinstance(won, TaskRecord) and won.prompt_hash == one.prompt_hash
        assert isinstance(lost, Conflict)
        assert len(c.get("/v2/tasks").json()["tasks"]) == 2
