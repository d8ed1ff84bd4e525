"""The pure OpenAI <-> llorch mapping: request bodies, chunk and object shapes, errors."""

from __future__ import annotations

from typing import Any

import pytest

from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import OPEN, Caller
from orchestratord.http.openai_shapes import (
    Shaper,
    event_error,
    finish_reason,
    openai_error,
    openai_task_body,
    sse_data,
    usage,
)
from shared.problem import InvalidParams, QueueFull, WorkerReset


def test_chat_body_maps_to_a_valid_task() -> None:
    task, stream, include_usage = openai_task_body(
        "chat",
        {
            "model": "llorch-tiny",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
            ],
            "max_completion_tokens": 7,
            "max_tokens": 99,
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 42,
            "stop": "\n",
            "n": 1,
            "user": "alice",
            "stream": True,
            "stream_options": {"include_usage": True},
            "frequency_penalty": 0,
            "some_future_field": {"ignored": True},
        },
    )
    assert stream and include_usage
    assert task == {
        "model": "llorch-tiny",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi there"},
        ],
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 42,
        "stop": ["\n"],
        "session_id": "alice",
    }
    req = parse_task_request(task, caller=Caller("t1"))
    assert req.max_tokens == 7 and req.stop == ("\n",) and req.session_id == "alice"
    assert req.tenant == "t1"


def test_completion_body_accepts_a_one_string_list_and_extensions() -> None:
    task, stream, include_usage = openai_task_body(
        "completion",
        {
            "model": "m",
            "prompt": ["Once"],
            "max_tokens": 3,
            "top_k": 5,
            "priority": "batch",
            "session_id": "s",
            "user": "ignored-because-session_id-given",
        },
    )
    assert (stream, include_usage) == (False, False)
    assert task == {
        "model": "m",
        "prompt": "Once",
        "max_tokens": 3,
        "top_k": 5,
        "priority": "batch",
        "session_id": "s",
    }
    parse_task_request(task, caller=OPEN)


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("chat", {"model": "m"}, "messages"),
        ("chat", {"model": "m", "messages": []}, "messages"),
        (
            "chat",
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
        ),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ("chat", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("chat", {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            "tools[0].function",
        ),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True},
            "logprobs",
        ),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "stream",
        ),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 1.0},
            "presence_penalty",
        ),
        (
            "chat",
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"},
            },
            "response_format",
        ),
        ("completion", {"model": "m", "prompt": [1, 2, 3]}, "prompt"),
        ("completion", {"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
        ("completion", {"model": "m", "prompt": "x", "echo": True}, "echo"),
        ("completion", "not an object", "body"),
    ],
)
def test_unsupported_or_bad_input_is_a_400_naming_the_field(
    kind: Any, body: Any, field: str
) -> None:
    with pytest.raises(InvalidParams) as exc:
        openai_task_body(kind, body)
    assert field in [e["field"] for e in exc.value.errors]
    assert openai_error(exc.value)["type"] == "invalid_request_error"


def test_out_of_range_values_are_left_to_the_task_validator() -> None:
    task, _, _ = openai_task_body("completion", {"model": "m", "prompt": "x", "temperature": 9})
    with pytest.raises(InvalidParams) as exc:
        parse_task_request(task, caller=OPEN)
    assert [e["field"] for e in exc.value.errors] == ["temperature"]


def test_chat_chunks_and_final_object_have_openai_shapes() -> None:
    sh = Shaper("chat", "t1", "m", 1700000000)
    first = sh.chunk("", role=True)
    assert first["object"] == "chat.completion.chunk" and first["id"] == "chatcmpl-t1"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert sh.chunk("hi")["choices"][0] == {
        "index": 0,
        "delta": {"content": "hi"},
        "logprobs": None,
        "finish_reason": None,
    }
    last = sh.chunk(None, finish_reason("MAX_TOKENS"))
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "length"
    final = sh.final("hello", finish_reason("EOS"), usage(3, 2))
    assert final["object"] == "chat.completion"
    assert final["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert sh.usage_chunk(usage(1, 1))["choices"] == []


def test_completion_shapes() -> None:
    sh = Shaper("completion", "t2", "m", 1)
    assert sh.chunk("a")["choices"][0]["text"] == "a"
    assert sh.chunk(None, "stop")["choices"][0]["text"] == ""
    final = sh.final("abc", "length", usage(1, 3))
    assert final["object"] == "text_completion" and final["id"] == "cmpl-t2"
    assert final["choices"][0]["text"] == "abc"


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [("MAX_TOKENS", "length"), ("EOS", "stop"), ("STOP_SEQUENCE", "stop"), ("CANCELLED", "stop")],
)
def test_finish_reason(stop_reason: str, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


def test_event_errors_keep_their_code_and_status() -> None:
    err = event_error({"code": "WORKER_RESET", "message": "worker died", "retriable": True})
    assert isinstance(err, WorkerReset) and err.status == 502
    unknown = event_error({"code": "DECODE_TIMEOUT", "message": "slow"})
    assert unknown.code == "DECODE_TIMEOUT" and unknown.status == 500
    assert unknown.to_problem()["code"] == "DECODE_TIMEOUT"


def test_openai_error_member() -> None:
    err = QueueFull("queue is full", retry_after_ms=1500)
    assert openai_error(err) == {
        "message": "queue is full",
        "type": "rate_limit_error",
        "param": None,
        "code": "QUEUE_FULL",
    }


def test_sse_data_framing() -> None:
    assert sse_data("[DONE]") == b"data: [DONE]\n\n"
    assert sse_data({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()
