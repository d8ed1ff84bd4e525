"""Tool calling on `/v1/chat/completions`, pure (ORCH-250..ORCH-257).

`tool_fields` maps OpenAI's `tools` / `tool_choice` (and the legacy `functions` /
`function_call`) onto the task: the tools go to the worker, which renders them with the model's
chat template (PC-105) or the fallback prompt (PC-103); `required` or a named function becomes a
`json_schema` that forces `{"name": ..., "arguments": ...}` valid against the function's
parameters. `tool_message` maps the tool-related messages of a conversation (assistant
`tool_calls` / `function_call`, `role: tool`, legacy `role: function`). `ToolMode` says how the
output is read back: parsed for calls (`auto`), read as the one forced call, or left as text
(`none`, or no tools).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestratord.domain.toolcalls import ParsedCall, parse_forced_call, parse_tool_calls
from shared.prompt_constructor.errors import PromptError
from shared.prompt_constructor.tools import validate_tools

_CHOICES = ("none", "auto", "required")


@dataclass(frozen=True, slots=True)
class ToolMode:
    names: tuple[str, ...]  # the functions a call may name
    forced: bool  # the output is exactly one call, forced by `schema`
    schema: dict[str, Any] | None = None
    # Asked with the legacy `functions`: answered with `function_call` (ORCH-257).
    legacy: bool = False

    @property
    def finish(self) -> str:
        """The finish_reason of a reply with a call."""
        return "function_call" if self.legacy else "tool_calls"

    def message_fields(self, calls: list[ParsedCall]) -> dict[str, Any]:
        """The reply message's `tool_calls`, or the legacy `function_call` (the first call)."""
        if self.legacy:
            return {"function_call": {"name": calls[0].name, "arguments": calls[0].arguments}}
        return {"tool_calls": [c.to_openai() for c in calls]}

    def delta(self, deltas: list[dict[str, Any]]) -> dict[str, Any]:
        """A stream chunk's delta for `tool_calls` deltas (legacy: the first call's, as
        `function_call` fragments)."""
        if not self.legacy:
            return {"tool_calls": deltas}
        fn: dict[str, Any] = {}
        for d in deltas:
            if d["index"] == 0:
                fn.update({k: v for k, v in d["function"].items() if k != "arguments"})
                fn["arguments"] = fn.get("arguments", "") + d["function"]["arguments"]
        return {"function_call": fn} if fn else {}

    def parse(self, text: str) -> tuple[str | None, list[ParsedCall]]:
        """The message content (None beside calls, as OpenAI sends it) and the calls."""
        if self.forced:
            call = parse_forced_call(text, self.names)
            return (None, [call]) if call else (text, [])
        content, calls = parse_tool_calls(text, self.names)
        return (content or None) if calls else content, calls


def _call_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    fn = tool["function"]
    return {
        "type": "object",
        "properties": {
            "name": {"const": fn["name"]},
            "arguments": fn.get("parameters") or {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _forcing_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    return (
        _call_schema(tools[0]) if len(tools) == 1 else {"anyOf": [_call_schema(t) for t in tools]}
    )


def tool_fields(
    body: Mapping[str, Any], task: dict[str, Any], errors: list[tuple[str, str]]
) -> ToolMode | None:
    """Put `body`'s tools on `task` and return how to read the output, or None for plain text.
    Problems are appended to `errors` as (field, message)."""
    raw, field, legacy = body.get("tools"), "tools", False
    if raw is None and body.get("functions") is not None:  # legacy: bare function objects
        raw, field, legacy = body["functions"], "functions", True
        if isinstance(raw, list):
            raw = [{"type": "function", "function": f} for f in raw]
    choice, choice_field = body.get("tool_choice"), "tool_choice"
    if choice is None and body.get("function_call") is not None:
        choice, choice_field = body["function_call"], "function_call"
        if isinstance(choice, Mapping):
            choice = {"type": "function", "function": choice}
    if raw is None or raw == []:
        if choice not in (None, "none"):
            errors.append((choice_field, f"needs {field}"))
        return None
    try:
        tools = list(validate_tools(raw))
    except PromptError as e:
        errors.append((e.field.replace("tools", field, 1), e.reason))
        return None
    names = tuple(t["function"]["name"] for t in tools)
    if choice is None:
        choice = "auto"
    if choice == "none":  # the model may not call: it is not told about the tools
        return None
    if choice == "auto":
        task["tools"] = tools
        return ToolMode(names, forced=False, legacy=legacy)
    if choice == "required":
        task["tools"] = tools
        return ToolMode(names, forced=True, schema=_forcing_schema(tools), legacy=legacy)
    fn = choice.get("function") if isinstance(choice, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str):
        errors.append(
            (
                choice_field,
                'must be none, auto, required or {"type": "function", "function": {"name": ...}}',
            )
        )
        return None
    if name not in names:
        errors.append((choice_field, f"names {name!r}, which is not in {field}"))
        return None
    task["tools"] = tools
    chosen = [t for t in tools if t["function"]["name"] == name]
    return ToolMode((name,), forced=True, schema=_forcing_schema(chosen), legacy=legacy)


def tool_message(m: Mapping[str, Any], role: str | None) -> dict[str, Any] | None:
    """The task message for a tool-related OpenAI message, or None when it is an ordinary one.
    Its details are validated where the prompt is built (shared.params, PC-101, PC-102)."""
    if role == "tool" or m.get("role") == "tool":
        out = {"role": "tool", "content": m.get("content")}
        for key in ("tool_call_id", "name"):
            if m.get(key) is not None:
                out[key] = m[key]
        return out
    if m.get("role") == "function":  # legacy: a function's result, by name
        return {"role": "tool", "content": m.get("content"), "name": m.get("name")}
    if role != "assistant":
        return None
    calls = m.get("tool_calls")
    legacy = m.get("function_call")
    if not calls and isinstance(legacy, Mapping):
        calls = [{"id": "call_0", "type": "function", "function": dict(legacy)}]
    if not calls:
        return None
    return {"role": "assistant", "content": m.get("content"), "tool_calls": calls}


def calls_json(calls: list[ParsedCall]) -> list[dict[str, Any]]:
    return [c.to_openai() for c in calls]


def arguments_value(call: ParsedCall) -> Any:
    return json.loads(call.arguments)
