"""Chat messages: validation of the caller's message list into typed, immutable values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from shared.prompt_constructor.errors import PromptError

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = get_args(Role)
_ROLE_BY_NAME: dict[str, Role] = {r: r for r in ROLES}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call an assistant made: `arguments` is the JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str

    def arguments_value(self) -> Any:
        """The arguments as a JSON value (what Hugging Face templates expect), else the text."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    # An assistant's calls (PC-101); a tool result's call id and function name (PC-102).
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _tool_calls(raw: object, where: str) -> tuple[ToolCall, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise PromptError(where, f"expected a list of tool calls, got {_kind(raw)}")
    out: list[ToolCall] = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(call, Mapping) or not isinstance(fn, Mapping):
            raise PromptError(at, "expected an object with a function")
        name, arguments, call_id = fn.get("name"), fn.get("arguments", "{}"), call.get("id", "")
        if not isinstance(name, str) or not name:
            raise PromptError(f"{at}.function.name", f"expected a string, got {_kind(name)}")
        if isinstance(arguments, Mapping):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(arguments, str):
            raise PromptError(
                f"{at}.function.arguments", f"expected a string, got {_kind(arguments)}"
            )
        if not isinstance(call_id, str):
            raise PromptError(f"{at}.id", f"expected a string, got {_kind(call_id)}")
        out.append(ToolCall(call_id, name, arguments))
    return tuple(out)


def _optional_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise PromptError(f"{where}.{key}", f"expected a string, got {_kind(value)}")
    return value


def validate_message(raw: object, where: str) -> Message:
    """One message as a `Message`, or PromptError naming `where` and the bad field."""
    if not isinstance(raw, Mapping):
        raise PromptError(where, f"expected an object with role and content, got {_kind(raw)}")
    if "role" not in raw:
        raise PromptError(f"{where}.role", "missing")
    role = raw["role"]
    if not isinstance(role, str):
        raise PromptError(f"{where}.role", f"expected a string, got {_kind(role)}")
    known = _ROLE_BY_NAME.get(role)
    if known is None:
        raise PromptError(f"{where}.role", f"unknown role {role!r}; expected {', '.join(ROLES)}")
    calls: tuple[ToolCall, ...] = ()
    if known == "assistant" and raw.get("tool_calls") is not None:
        calls = _tool_calls(raw["tool_calls"], f"{where}.tool_calls")
    if "content" not in raw and not calls:
        raise PromptError(f"{where}.content", "missing")
    content = raw.get("content")
    if content is None and calls:
        content = ""  # OpenAI sends null content beside tool calls
    if not isinstance(content, str):
        raise PromptError(f"{where}.content", f"expected a string, got {_kind(content)}")
    if known != "tool":
        return Message(known, content, calls)
    call_id = _optional_str(raw, "tool_call_id", where)
    return Message(known, content, (), call_id, _optional_str(raw, "name", where))


def validate_messages(messages: object) -> tuple[Message, ...]:
    """Check every message and return them as `Message` values, in order.

    Keys other than ``role`` and ``content`` (and, for tool calling, an assistant's
    ``tool_calls``, a tool message's ``tool_call_id`` and ``name``) are ignored. The first
    problem found raises `PromptError` naming the message by index.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise PromptError("messages", f"expected a list of messages, got {_kind(messages)}")
    if not messages:
        raise PromptError("messages", "must hold at least one message")
    return tuple(validate_message(raw, f"messages[{i}]") for i, raw in enumerate(messages))


def message_json(m: Message, *, arguments_as_text: bool = False) -> dict[str, Any]:
    """The message as Hugging Face chat templates expect it: tool calls with their arguments
    as a JSON value (as JSON text, OpenAI's wire form, with `arguments_as_text`), tool results
    with their call id."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.name,
                    "arguments": c.arguments if arguments_as_text else c.arguments_value(),
                },
            }
            for c in m.tool_calls
        ]
    if m.role == "tool":
        if m.tool_call_id is not None:
            out["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            out["name"] = m.name
    return out
