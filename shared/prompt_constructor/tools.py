"""Tools in the prompt: validating OpenAI tool definitions, and the documented fallback that
writes tools, tool calls and tool results as plain system/user/assistant text for templates
that do not take ``tools`` themselves (specs/prompt_constructor.md, PC-100..PC-106).

The fallback is the Hermes format Qwen 2.5 was trained on (its ``tokenizer_config.json``
chat template): the functions' JSON schemas inside ``<tools></tools>`` in the system message,
each call as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` in the assistant turn,
and tool results as ``<tool_response>...</tool_response>`` in a user turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from shared.prompt_constructor.errors import PromptError
from shared.prompt_constructor.messages import Message, ToolCall

MAX_TOOLS = 128
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Whether a Jinja chat template reads the `tools` variable (Hugging Face's tool-use templates).
_TAKES_TOOLS = re.compile(r"\btools\b")

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def validate_tools(tools: object) -> tuple[dict[str, Any], ...]:
    """OpenAI `tools` as normalised `{"type": "function", "function": {...}}` dicts (PC-100)."""
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise PromptError("tools", f"expected a list of tools, got {_kind(tools)}")
    if len(tools) > MAX_TOOLS:
        raise PromptError("tools", f"at most {MAX_TOOLS} tools")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise PromptError(where, 'expected {"type": "function", "function": {...}}')
        fn = tool.get("function")
        if not isinstance(fn, Mapping):
            raise PromptError(f"{where}.function", f"expected an object, got {_kind(fn)}")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise PromptError(
                f"{where}.function.name", "must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if name in seen:
            raise PromptError(f"{where}.function.name", f"{name!r} is defined twice")
        seen.add(name)
        clean: dict[str, Any] = {"name": name}
        description = fn.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise PromptError(f"{where}.function.description", "must be a string")
            clean["description"] = description
        parameters = fn.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, Mapping):
                raise PromptError(f"{where}.function.parameters", "must be a JSON Schema object")
            clean["parameters"] = dict(parameters)
        out.append({"type": "function", "function": clean})
    return tuple(out)


def template_takes_tools(source: str) -> bool:
    """Whether an embedded Jinja template renders tools itself (it reads ``tools``)."""
    return bool(_TAKES_TOOLS.search(source))


def tools_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The fallback system text listing `tools` and the expected call format (PC-103)."""
    lines = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    return TOOLS_PREAMBLE + lines + TOOLS_POSTAMBLE


def call_text(call: ToolCall) -> str:
    """One call as the fallback writes it in an assistant turn."""
    arguments = json.dumps(call.arguments_value(), ensure_ascii=False)
    name = json.dumps(call.name, ensure_ascii=False)
    return f'<tool_call>\n{{"name": {name}, "arguments": {arguments}}}\n</tool_call>'


def lower_messages(
    messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None
) -> tuple[Message, ...]:
    """`messages` with tools, calls and results written as plain text (PC-103, PC-104).

    The tool list joins the first system message (after its text and a blank line) or becomes
    a new first system message; an assistant's calls follow its content, one per line; a run
    of tool results becomes one user message, each result in ``<tool_response>`` tags.
    """
    out: list[Message] = []
    if tools:
        block = tools_system_prompt(tools)
        if messages and messages[0].role == "system":
            first = messages[0].content
            out.append(Message("system", f"{first}\n\n{block}" if first else block))
            messages = messages[1:]
        else:
            out.append(Message("system", block))
    after_tool = False
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = "\n".join(call_text(c) for c in m.tool_calls)
            out.append(Message("assistant", f"{m.content}\n{calls}" if m.content else calls))
        elif m.role == "tool":
            response = f"<tool_response>\n{m.content}\n</tool_response>"
            if after_tool:
                out[-1] = Message("user", f"{out[-1].content}\n{response}")
            else:
                out.append(Message("user", response))
        else:
            out.append(Message(m.role, m.content))
        after_tool = m.role == "tool"
    return tuple(out)
