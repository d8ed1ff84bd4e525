"""Tool calling on /v1: the request mapping and the reply shapes, pure (ORCH-250..ORCH-254)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestratord.domain.admission import max_prompt_tokens
from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import Caller
from orchestratord.http.openai_shapes import Shaper, openai_task_body
from orchestratord.http.openai_tools import ToolMode, tool_fields
from shared.problem import InvalidParams
from shared.prompt_constructor.tools import tools_system_prompt

OPEN = Caller(tenant=None, admin=True)
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
USER = [{"role": "user", "content": "Weather?"}]


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **extra}


def _mode(body: dict[str, Any]) -> tuple[dict[str, Any], ToolMode | None]:
    task: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    mode = tool_fields(body, task, errors)
    assert errors == []
    return task, mode


def test_orch_250_auto_is_the_default_and_none_sends_no_tools() -> None:
    """ORCH-250: tools alone mean auto (tools sent, output parsed); none sends no tools."""
    task, mode = _mode(_body(tools=[WEATHER, TIME]))
    assert mode == ToolMode(("get_weather", "get_time"), forced=False)
    assert [t["function"]["name"] for t in task["tools"]] == ["get_weather", "get_time"]
    assert _mode(_body(tools=[WEATHER], tool_choice="none")) == ({}, None)
    assert _mode(_body()) == ({}, None)


def test_orch_252_required_and_named_force_a_schema() -> None:
    """ORCH-252: required forces an anyOf of the tools' calls; a named function forces its
    own; the schema pins the name and takes the function's parameters as arguments."""
    _, mode = _mode(_body(tools=[WEATHER, TIME], tool_choice="required"))
    assert mode is not None and mode.forced and mode.schema is not None
    assert [s["properties"]["name"] for s in mode.schema["anyOf"]] == [
        {"const": "get_weather"},
        {"const": "get_time"},
    ]
    named = {"type": "function", "function": {"name": "get_weather"}}
    _, mode = _mode(_body(tools=[WEATHER, TIME], tool_choice=named))
    assert (
        mode is not None
        and mode.names == ("get_weather",)
        and mode.schema
        == {
            "type": "object",
            "properties": {
                "name": {"const": "get_weather"},
                "arguments": WEATHER["function"]["parameters"],
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
    )


def test_orch_250_legacy_functions_map_onto_tools() -> None:
    """ORCH-250: functions / function_call are tools / tool_choice."""
    legacy = _body(functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    task, mode = _mode(legacy)
    assert task["tools"] == [WEATHER]
    assert mode is not None and mode.forced and mode.names == ("get_weather",)
    assert _mode(_body(functions=[WEATHER["function"]], function_call="none")) == ({}, None)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
        ({"functions": [{"name": "a b"}]}, "functions[0].function.name"),
        ({"function_call": {"name": "f"}}, "function_call"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]},
            "messages[0].tool_calls[0].function.name",
        ),
    ],
)
def test_orch_250_bad_tool_fields_are_400(extra: dict[str, Any], field: str) -> None:
    """ORCH-250, ORCH-251: bad tools, choices and tool messages are refused naming the field
    (at /v1 or, for the messages, where the task body is validated)."""
    with pytest.raises(InvalidParams) as err:
        task, _, _ = openai_task_body("chat", _body(**extra))
        parse_task_request(task, caller=OPEN)
    assert err.value.errors[0]["field"] == field


def test_orch_251_tool_messages_reach_the_task() -> None:
    """ORCH-251: assistant tool_calls (content null), role tool, legacy function_call and role
    function become the task's messages; tools ride along."""
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "rain"}]},
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_time", "arguments": "{}"},
        },
        {"role": "function", "name": "get_time", "content": "noon"},
    ]
    task, _, _ = openai_task_body("chat", _body(messages=messages, tools=[WEATHER, TIME]))
    req = parse_task_request(task, caller=OPEN)
    assert req.tools is not None and len(req.tools) == 2
    body = req.worker_body("j")
    assert body["tools"] == [WEATHER, TIME]
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "content": "rain", "tool_call_id": "c1"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "content": "noon", "name": "get_time"},
    ]


def test_orch_254_a_reply_with_calls() -> None:
    """ORCH-254: calls give message.tool_calls, null content and finish_reason tool_calls;
    text without a call stays the content with its own finish reason."""
    mode = ToolMode(("get_weather",), forced=False)
    sh = Shaper("chat", "t1", "m", 0, tools=mode)
    out = sh.final(
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>', "stop", {}
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    plain = sh.final("Rain.", "length", {})["choices"][0]
    assert plain["message"] == {"role": "assistant", "content": "Rain."}
    assert plain["finish_reason"] == "length"


def test_orch_257_legacy_functions_are_answered_with_function_call() -> None:
    """ORCH-257: asked with `functions`, a call is `message.function_call`, streamed as
    `delta.function_call` fragments, with finish_reason function_call."""
    _, mode = _mode(_body(functions=[WEATHER["function"]]))
    assert mode is not None and mode.legacy and mode.finish == "function_call"
    sh = Shaper("chat", "t1", "m", 0, tools=mode)
    out = sh.final('{"name": "get_weather", "arguments": {"city": "Oslo"}}', "stop", {})
    choice = out["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    head = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    frag = {"index": 0, "function": {"arguments": '{"city"'}}
    assert sh.tool_calls_chunk([head, frag])["choices"][0]["delta"] == {
        "function_call": {"name": "get_weather", "arguments": '{"city"'}
    }
    assert (
        sh.tool_calls_chunk([{"index": 1, "function": {"arguments": "{}"}}])["choices"][0]["delta"]
        == {}
    )
    _, modern = _mode(_body(tools=[WEATHER]))
    assert modern is not None and not modern.legacy and modern.finish == "tool_calls"


def test_orch_251_the_prompt_bound_counts_tools_and_calls() -> None:
    """ORCH-251, ORCH-163: the upper bound of a prompt's tokens counts the tool listing, the
    fallback's text around it and the calls' arguments, which the worker renders."""
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "x" * 500}}
    history = [*USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    plain = parse_task_request(_body(), caller=OPEN)
    with_tools = parse_task_request(_body(tools=[WEATHER]), caller=OPEN)
    with_call = parse_task_request(_body(messages=history), caller=OPEN)
    listing = len(tools_system_prompt([WEATHER]))
    assert max_prompt_tokens(with_tools) >= max_prompt_tokens(plain) + listing
    assert max_prompt_tokens(with_call) >= max_prompt_tokens(plain) + 500
