"""Tools in the prompt: tool messages, the Hermes fallback and the embedded tools path
(specs/prompt_constructor.md PC-100..PC-106)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.prompt_constructor import PromptError, build_prompt
from shared.prompt_constructor.tools import template_takes_tools

SMOLLM2 = Path(__file__).resolve().parents[2] / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"

# Qwen/Qwen2.5-7B-Instruct tokenizer_config.json "chat_template" (the tool-use template), verbatim.
QWEN25_TEMPLATE = (Path(__file__).parent / "qwen25_tool_template.jinja").read_text()

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
TOOLS = [WEATHER, TIME]


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


LOOP: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and the time?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            _call("call_1", "get_weather", '{"city": "Paris"}'),
            _call("call_2", "get_time", "{}"),
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
    {"role": "assistant", "content": "Sunny.", "tool_calls": [_call("c3", "get_time", "{}")]},
    {"role": "tool", "tool_call_id": "c3", "content": "12:01"},
]

TOOLS_BLOCK = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "The weather in a '
    'city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, '
    '"required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "get_time"}}\n'
    "</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

LOOP_CHATML = (
    f"<|im_start|>system\nBe brief.\n\n{TOOLS_BLOCK}<|im_end|>\n"
    "<|im_start|>user\nWeather in Paris and the time?<|im_end|>\n"
    "<|im_start|>assistant\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response>\n"
    "<tool_response>\n12:00\n</tool_response><|im_end|>\n"
    '<|im_start|>assistant\nSunny.\n<tool_call>\n{"name": "get_time", "arguments": {}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n<tool_response>\n12:01\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_pc_103_pc_104_fallback_golden() -> None:
    """PC-103, PC-104: the fallback writes the tools into the first system message, calls after
    the assistant's content and a run of tool results as one user message."""
    assert build_prompt(LOOP, "qwen", tools=TOOLS).text == LOOP_CHATML


def test_pc_105_fallback_is_qwen25s_own_rendering() -> None:
    """PC-103, PC-105: Qwen 2.5's own tool template, rendered through the embedded path with
    the tools, gives exactly the fallback's text: the fallback is Qwen 2.5's format."""
    meta = {"tokenizer.chat_template": QWEN25_TEMPLATE}
    assert template_takes_tools(QWEN25_TEMPLATE)
    native = build_prompt(LOOP, metadata=meta, tools=TOOLS)
    assert native.template == "embedded"
    assert native.text == LOOP_CHATML


def test_pc_105_embedded_template_without_tools_gets_the_fallback() -> None:
    """PC-103: an embedded template that does not read `tools` (SmolLM2's, from its GGUF) is
    given the lowered messages, so the tools still reach the prompt."""
    if not SMOLLM2.exists():
        pytest.skip("SmolLM2 GGUF not downloaded")
    import gguf

    field = gguf.GGUFReader(SMOLLM2).fields["tokenizer.chat_template"]
    source = bytes(field.parts[field.data[0]]).decode()
    assert not template_takes_tools(source)
    meta = {"tokenizer.chat_template": source}
    assert build_prompt(LOOP, metadata=meta, tools=TOOLS).text == LOOP_CHATML


def test_pc_103_new_system_message_and_no_tools() -> None:
    """PC-103: without a system message the tool list is a new first one; tool messages
    without tools are still written (a history from an earlier turn)."""
    msgs = [{"role": "user", "content": "Hi"}]
    text = build_prompt(msgs, "llama3", tools=[TIME]).text
    assert text.startswith("<|start_header_id|>system<|end_header_id|>\n\n# Tools")
    history = [*LOOP[1:3], LOOP[3]]
    assert build_prompt(history, "qwen").text == (
        "<|im_start|>user\nWeather in Paris and the time?<|im_end|>\n<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_pc_104_strict_families_alternate_after_lowering() -> None:
    """PC-014, PC-104: tool results become user turns, so mistral's alternation holds."""
    text = build_prompt(LOOP[1:5], "mistral", tools=TOOLS).text
    assert text.startswith(" [INST] # Tools")
    assert text.endswith("</tool_response> [/INST]")


@pytest.mark.parametrize(
    ("tools", "messages", "message"),
    [
        ("x", None, "tools: expected a list of tools, got str"),
        ([{"type": "web"}], None, 'tools[0]: expected {"type": "function", "function": {...}}'),
        ([{"type": "function"}], None, "tools[0].function: expected an object, got null"),
        (
            [{"type": "function", "function": {"name": "a b"}}],
            None,
            "tools[0].function.name: must be 1-64 letters, digits, '_', '.' or '-'",
        ),
        ([TIME, TIME], None, "tools[1].function.name: 'get_time' is defined twice"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": []}}],
            None,
            "tools[0].function.parameters: must be a JSON Schema object",
        ),
        (
            None,
            [{"role": "assistant", "content": None, "tool_calls": "x"}],
            "messages[0].tool_calls: expected a list of tool calls, got str",
        ),
        (
            None,
            [{"role": "assistant", "tool_calls": [{"id": "1"}]}],
            "messages[0].tool_calls[0]: expected an object with a function",
        ),
        (
            None,
            [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            "messages[0].tool_calls[0].function.name: expected a string, got null",
        ),
        (
            None,
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}],
            "messages[0].tool_calls[0].function.arguments: expected a string, got int",
        ),
        (
            None,
            [{"role": "assistant", "content": None}],
            "messages[0].content: expected a string, got null",
        ),
        (
            None,
            [{"role": "tool", "content": None}],
            "messages[0].content: expected a string, got null",
        ),
        (
            None,
            [{"role": "tool", "content": "x", "tool_call_id": 3}],
            "messages[0].tool_call_id: expected a string, got int",
        ),
    ],
)
def test_pc_100_pc_101_pc_102_bad_tools_and_tool_messages(
    tools: Any, messages: Any, message: str
) -> None:
    """PC-100, PC-101, PC-102, PC-070: each bad tool or tool message is a PromptError naming it."""
    msgs = messages or [{"role": "user", "content": "x"}]
    with pytest.raises(PromptError) as err:
        build_prompt(msgs, "qwen", tools=tools)
    assert str(err.value) == message


def test_pc_101_arguments_may_be_an_object() -> None:
    """PC-101: arguments given as an object render like the same JSON text."""
    as_text = [{"role": "assistant", "tool_calls": [_call("1", "f", '{"a": [1, 2]}')]}]
    as_obj = [
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "f", "arguments": {"a": [1, 2]}}}],
        }
    ]
    assert build_prompt(as_text, "qwen").text == build_prompt(as_obj, "qwen").text
