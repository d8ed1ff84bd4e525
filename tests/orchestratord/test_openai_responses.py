"""The Responses API mapping and writer, pure (ORCH-260..ORCH-265): request bodies to chat
bodies, and task output to Response objects and stream events that the `openai` package's own
types validate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import Caller
from orchestratord.http.openai_responses_request import chat_body, rename_params
from orchestratord.http.openai_responses_shapes import Event, ResponseWriter
from orchestratord.http.openai_shapes import openai_task_body
from orchestratord.http.openai_tools import tool_fields
from shared.problem import ApiError, InvalidParams

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
PARAMS: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOL: dict[str, Any] = {"type": "function", "name": "get_weather", "parameters": PARAMS}
ECHO: dict[str, Any] = {
    "model": "m",
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}


def param_of(body: dict[str, Any]) -> str:
    """The param a refused body's error names (after the chat mapping, as the route does)."""
    origins: list[str] = []
    try:
        chat, origins = chat_body(body)
        parse_task_request(openai_task_body("chat", chat)[0], caller=Caller("t1"))
    except ApiError as err:
        renamed = rename_params(err, origins)
        assert isinstance(renamed, InvalidParams)
        return str(renamed.errors[0]["field"])
    raise AssertionError("accepted")


def test_orch_260_instructions_and_input_items_become_chat_messages() -> None:
    """ORCH-260: instructions a system message, text parts joined, a turn's function_call
    items one assistant message with tool_calls, function_call_output a tool message."""
    chat, origins = chat_body(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "message", "role": "assistant", "content": "Let me look."},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "rainy"}],
                },
            ],
            "max_output_tokens": 9,
            "prompt_cache_key": "k",
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
    ]
    assert origins == ["instructions", "input[0]", "input[1]", "input[4]", "input[5]"]
    assert chat["max_completion_tokens"] == 9 and chat["user"] == "k"
    task, stream, _ = openai_task_body("chat", chat)
    assert task["max_tokens"] == 9 and task["session_id"] == "k" and stream is False


def test_orch_260_string_input_is_one_user_message() -> None:
    """ORCH-260: `input` as text is the user's message."""
    chat, _ = chat_body({"model": "m", "input": "Hi", "stream": True, "seed": 3})
    assert chat["messages"] == [{"role": "user", "content": "Hi"}]
    task, stream, _ = openai_task_body("chat", chat)
    assert stream is True and task["seed"] == 3


def test_orch_260_orch_265_flat_tools_choice_and_text_format_map_to_the_chat_ones() -> None:
    """ORCH-260, ORCH-265: flat function tools and a named tool_choice force the call's schema;
    text.format json_schema is the chat response_format."""
    chat, _ = chat_body({"model": "m", "input": "x", "tools": [TOOL], "tool_choice": TOOL})
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": PARAMS}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    mode = tool_fields(chat, {}, [])
    assert mode is not None and mode.forced and mode.names == ("get_weather",)
    fmt = {"type": "json_schema", "name": "n", "schema": PARAMS, "strict": True}
    chat, _ = chat_body({"model": "m", "input": "x", "text": {"format": fmt}})
    task, _, _ = openai_task_body("chat", chat)
    assert task["json_schema"] == PARAMS
    chat, _ = chat_body({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})
    assert openai_task_body("chat", chat)[0]["json_schema"] == {"type": "object"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_x"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]"),
        ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"tools": [TOOL], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"truncation": "auto"}, "truncation"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"max_output_tokens": -1}, "max_output_tokens"),
        ({"instructions": 5}, "instructions"),
        ({"input": []}, "input"),
    ],
)
def test_orch_261_orch_262_refusals_name_the_responses_param(
    extra: dict[str, Any], param: str
) -> None:
    """ORCH-261, ORCH-262: stored state and features llorch lacks are refused, and the error
    names the Responses param, also when the chat validation found it."""
    assert param_of({"model": "m", "input": "Hi", **extra}) == param


def test_orch_261_store_false_and_unset_are_accepted() -> None:
    """ORCH-261: `store` unset means false on llorch (OpenAI's default is true)."""
    for store in ({}, {"store": False}, {"store": None}):
        chat_body({"model": "m", "input": "x", **store})


def check(events: list[Event]) -> list[str]:
    """Each event validates as the openai package's type; their types, in order."""
    for ev in events:
        EVENTS.validate_python(ev)
    return [ev["type"] for ev in events]


def run(writer: ResponseWriter, pieces: list[str], stop: str = "EOS") -> list[Event]:
    out = writer.start()
    for piece in pieces:
        out += writer.text(piece)
    out += writer.end(stop, 5, len(pieces), 2)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    Response.model_validate(writer.response())
    return out


def test_orch_263_orch_264_text_events_in_order_and_the_final_response() -> None:
    """ORCH-263, ORCH-264: a text reply's events in OpenAI's order; the Response holds one
    completed message whose text is the deltas'."""
    w = ResponseWriter("t1", 100, ECHO, None)
    events = run(w, ["Hel", "lo"])
    assert check(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = Response.model_validate(events[-1]["response"])
    assert final.id == "resp_t1" and final.status == "completed"
    assert final.output_text == "Hello" and final.output[0].status == "completed"  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 2
    assert final.usage.total_tokens == 7


def test_orch_263_max_tokens_is_incomplete_and_no_output_has_no_items() -> None:
    """ORCH-263: a reply cut at max_output_tokens is `incomplete` (its message too); a reply
    with no text has no output items."""
    w = ResponseWriter("t2", 100, ECHO, None)
    events = run(w, ["a"], stop="MAX_TOKENS")
    assert events[-1]["type"] == "response.incomplete"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.output[0].status == "incomplete"  # type: ignore[union-attr]
    empty = run(ResponseWriter("t3", 100, ECHO, None), [])
    assert check(empty) == ["response.created", "response.in_progress", "response.completed"]
    assert empty[-1]["response"]["output"] == []


def test_orch_264_orch_265_a_forced_call_streams_as_function_call_events() -> None:
    """ORCH-264, ORCH-265: a forced call's name opens a function_call item, its arguments
    come as deltas, and the item's arguments are the deltas'."""
    chat, _ = chat_body({"model": "m", "input": "x", "tools": [TOOL], "tool_choice": "required"})
    w = ResponseWriter("t4", 100, ECHO, tool_fields(chat, {}, []))
    events = run(w, ['{"name": "get_weather", ', '"arguments": {"city"', ': "Paris"}', "}"])
    kinds = check(events)
    assert kinds[2] == "response.output_item.added"
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[3:-3]) == {"response.function_call_arguments.delta"}
    deltas = "".join(e["delta"] for e in events if "delta" in e)
    final = Response.model_validate(events[-1]["response"])
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.status == "completed"
    assert call.arguments == deltas and json.loads(deltas) == {"city": "Paris"}


def test_orch_265_an_auto_call_after_text_is_a_message_then_a_function_call() -> None:
    """ORCH-265: with `auto`, text before a Hermes call is a message item, closed before the
    call's function_call item opens."""
    chat, _ = chat_body({"model": "m", "input": "x", "tools": [TOOL]})
    w = ResponseWriter("t5", 100, ECHO, tool_fields(chat, {}, []))
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    events = run(w, ["Checking. ", call[:20], call[20:]])
    check(events)
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output_text == "Checking. "  # streamed as it came
    fc = final.output[1]
    assert fc.type == "function_call" and json.loads(fc.arguments) == {"city": "Oslo"}
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == done == [0, 1]


def test_orch_264_an_error_event_validates() -> None:
    """ORCH-264: a stream that fails after it started ends with an `error` event."""
    w = ResponseWriter("t6", 100, ECHO, None)
    events = [*w.start(), w.error("WORKER_LOST", "the worker was lost", None)]
    assert check(events)[-1] == "error" and events[-1]["sequence_number"] == 2


def test_orch_263_a_forced_call_cut_at_max_output_tokens_is_incomplete() -> None:
    """ORCH-263: a call still being written when the token limit ends the output is an
    `incomplete` function_call item in an `incomplete` Response."""
    chat, _ = chat_body({"model": "m", "input": "x", "tools": [TOOL], "tool_choice": "required"})
    w = ResponseWriter("t7", 100, ECHO, tool_fields(chat, {}, []))
    events = run(w, ['{"name": "get_weather", ', '"arguments": {"ci'], stop="MAX_TOKENS")
    check(events)
    final = Response.model_validate(events[-1]["response"])
    (call,) = final.output
    assert call.type == "function_call" and call.arguments == '{"ci'
    assert final.status == "incomplete" and call.status == "incomplete"
