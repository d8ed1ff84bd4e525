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
from orchestratord.http.openai_structured import Logprobs
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
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2, "best_of": 3},
            "best_of",
        ),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            "tools[0].function",
        ),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": "yes"},
            "logprobs",
        ),
        (
            "chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3},
            "top_logprobs",
        ),
        (
            "chat",
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "logprobs": True,
                "top_logprobs": 21,
            },
            "top_logprobs",
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
                "response_format": {"type": "xml"},
            },
            "response_format",
        ),
        (
            "chat",
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
            },
            "response_format",
        ),
        (
            "completion",
            {"model": "m", "prompt": "x", "response_format": {"type": "json_schema"}},
            "response_format",
        ),
        ("completion", {"model": "m", "prompt": "x", "logprobs": True}, "logprobs"),
        ("completion", {"model": "m", "prompt": "x", "logprobs": 21}, "logprobs"),
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


# --- response_format and logprobs (ORCH-242, ORCH-243, ORCH-246) ---------------------------

_USER = [{"role": "user", "content": "x"}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("fmt", "schema"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}},
            PERSON,
        ),
        ({"type": "json_schema", "json_schema": {"name": "any"}}, {"type": "object"}),
    ],
)
def test_response_format_becomes_the_tasks_json_schema(
    fmt: dict[str, Any], schema: dict[str, Any] | None
) -> None:
    """ORCH-242: response_format maps onto the task's json_schema, which reaches the worker."""
    for kind, text in (("chat", {"messages": _USER}), ("completion", {"prompt": "x"})):
        task, _, _ = openai_task_body(kind, {"model": "m", **text, "response_format": fmt})  # type: ignore[arg-type]
        assert task.get("json_schema") == schema
        req = parse_task_request(task, caller=OPEN)
        assert req.json_schema == schema and req.constrained is (schema is not None)
        assert req.worker_body("j").get("json_schema") == schema


def test_chat_logprobs_map_to_the_task() -> None:
    """ORCH-243: chat's logprobs/top_logprobs become the task's; false or unset asks nothing."""
    body = {"model": "m", "messages": _USER, "logprobs": True, "top_logprobs": 3}
    task, _, _ = openai_task_body("chat", body)
    assert (task["logprobs"], task["top_logprobs"]) == (True, 3)
    req = parse_task_request(task, caller=OPEN)
    body = req.worker_body("j")
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    for off in ({"logprobs": False, "top_logprobs": 0}, {"logprobs": None}, {}):
        task, _, _ = openai_task_body("chat", {"model": "m", "messages": _USER, **off})
        assert "logprobs" not in task and "top_logprobs" not in task


def test_completion_logprobs_int_maps_to_the_task() -> None:
    """ORCH-243: the legacy `logprobs: k` asks for logprobs with k alternatives."""
    task, _, _ = openai_task_body("completion", {"model": "m", "prompt": "x", "logprobs": 2})
    assert (task["logprobs"], task["top_logprobs"]) == (True, 2)
    task, _, _ = openai_task_body("completion", {"model": "m", "prompt": "x", "logprobs": 0})
    assert task["logprobs"] is True and "top_logprobs" not in task


def _entry(token: str, logprob: float, *alts: tuple[str, float]) -> dict[str, Any]:
    top = [{"token": t, "bytes": list(t.encode()), "logprob": lp} for t, lp in alts]
    return {"token": token, "bytes": list(token.encode()), "logprob": logprob, "top_logprobs": top}


def test_chat_logprobs_shapes() -> None:
    """ORCH-243: chat chunks carry the event's entries as logprobs.content; the final object
    every entry; a chunk of an event without entries says null."""
    a, b = _entry("Hi", -0.1, ("Hi", -0.1), ("Yo", -2.5)), _entry("!", -0.5, ("!", -0.5))
    sh = Shaper("chat", "t", "m", 1, logprobs=Logprobs("chat"))
    lp = sh.new_logprobs()  # one choice's
    assert lp is not None and lp is not sh.logprobs
    chunk = sh.chunk("Hi", logprobs=lp.chunk([a]))
    assert chunk["choices"][0]["logprobs"] == {"content": [a], "refusal": None}
    assert lp.chunk(None) is None
    lp.add([b])
    final = sh.final("Hi!", "stop", usage(1, 2), lp)
    assert final["choices"][0]["logprobs"] == {"content": [a, b], "refusal": None}


def test_completion_logprobs_are_the_legacy_object() -> None:
    """ORCH-243: tokens, token_logprobs, top_logprobs dicts, text_offset from the prompt's end."""
    a, b = _entry("Hi", -0.1, ("Hi", -0.1), ("Yo", -2.5)), _entry("é", -0.5)
    lp = Logprobs("completion", start=5)
    assert lp.chunk([a]) == {
        "tokens": ["Hi"],
        "token_logprobs": [-0.1],
        "top_logprobs": [{"Hi": -0.1, "Yo": -2.5}],
        "text_offset": [5],
    }
    assert lp.chunk([b])["text_offset"] == [7]  # type: ignore[index]
    assert lp.whole() == {
        "tokens": ["Hi", "é"],
        "token_logprobs": [-0.1, -0.5],
        "top_logprobs": [{"Hi": -0.1, "Yo": -2.5}, {}],
        "text_offset": [5, 7],
    }


def test_usage_reports_cached_prompt_tokens() -> None:
    """ORCH-246: the worker's prefix-cache hit is usage.prompt_tokens_details.cached_tokens."""
    assert usage(10, 2, 8)["prompt_tokens_details"] == {"cached_tokens": 8}
    assert "prompt_tokens_details" not in usage(10, 2)
