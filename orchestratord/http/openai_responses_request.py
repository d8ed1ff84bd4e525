"""A `POST /v1/responses` body as a chat completions body, pure (ORCH-260..ORCH-263).

The Responses API is mapped onto the chat path rather than given a second one: `instructions`
and the `input` items become `messages` (a `function_call` item an assistant `tool_calls` entry,
a `function_call_output` item a `role: tool` message), the flat function `tools` and
`tool_choice` the chat ones, `text.format` the `response_format`, `max_output_tokens`
`max_completion_tokens`. `openai_task_body` then validates and maps it like any chat body;
the params its errors name are renamed back to the Responses ones (`rename_params`).

llorch stores nothing, so what needs a stored response (`previous_response_id`, `store: true`,
`background`, `conversation`, `item_reference` items) is refused, as are built-in tools and
inputs other than text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestratord.http.openai_shapes import PASS_THROUGH, invalid
from shared.problem import ApiError, InvalidParams

_ROLES = ("system", "developer", "user", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text")
# Passed to the chat body as they are: the chat route's own and these (ORCH-240).
_PASS_THROUGH = ("model", "stream", "user", *PASS_THROUGH)
# Refused unless unset or "off": each needs state or a feature llorch does not have.
_REFUSED: dict[str, str] = {
    "previous_response_id": "is not supported: llorch stores no responses; send the whole "
    "conversation as input",
    "conversation": "is not supported: llorch stores no conversations",
    "background": "is not supported: responses run in the foreground",
    "prompt": "prompt templates are not supported",
    "top_logprobs": "is not supported on /v1/responses (use /v1/chat/completions)",
}


def chat_body(body: Any) -> tuple[dict[str, Any], list[str]]:
    """The chat completions body for a Responses body, and for each of its messages the
    Responses param it came from. Raises InvalidParams naming every bad param."""
    if not isinstance(body, Mapping):
        raise invalid([("body", "must be a JSON object")])
    errors: list[tuple[str, str]] = []
    out: dict[str, Any] = {k: body[k] for k in _PASS_THROUGH if k in body}
    if body.get("store") not in (None, False):
        errors.append(("store", "must be false or unset: llorch stores no prompt or output"))
    for name, why in _REFUSED.items():
        if body.get(name) not in (None, False, 0, "", [], {}):
            errors.append((name, why))
    if body.get("truncation") not in (None, "disabled"):
        errors.append(("truncation", 'only "disabled" is supported'))
    include = body.get("include")
    if include is not None and not isinstance(include, list):
        errors.append(("include", "must be a list"))
    elif include and "message.output_text.logprobs" in include:
        errors.append(("include", "logprobs are not supported on /v1/responses"))
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and any(v is not None for v in reasoning.values()):
        errors.append(("reasoning", "reasoning options are not supported"))
    if body.get("prompt_cache_key") is not None and "user" not in out:
        out["user"] = body["prompt_cache_key"]  # one key, one worker: its prefix cache
    origins: list[str] = []
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": instructions})
        origins.append("instructions")
    elif instructions is not None:
        errors.append(("instructions", "must be a string"))
    _input(body.get("input"), messages, origins, errors)
    out["messages"] = messages
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"], errors)
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"], errors)
    fmt = _format(body.get("text"), errors)
    if fmt is not None:
        out["response_format"] = fmt
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if errors:
        raise invalid(errors)
    return out, origins


def _input(
    raw: Any,
    messages: list[dict[str, Any]],
    origins: list[str],
    errors: list[tuple[str, str]],
) -> None:
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
        origins.append("input")
        return
    if not isinstance(raw, list) or not raw:
        errors.append(("input", "must be a string or a non-empty list of items"))
        return
    for n, item in enumerate(raw):
        where = f"input[{n}]"
        if not isinstance(item, Mapping):
            errors.append((where, "must be an object"))
            continue
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item, where, errors)
        elif kind == "function_call":
            message = _function_call(item, where, errors, messages)
        elif kind == "function_call_output":
            message = _function_output(item, where, errors)
        elif kind == "item_reference":
            errors.append((where, "item references are not supported: llorch stores no items"))
            continue
        else:
            errors.append((f"{where}.type", f"{kind!r} items are not supported"))
            continue
        if message is not None:
            messages.append(message)
            origins.append(where)


def _message(
    item: Mapping[str, Any], where: str, errors: list[tuple[str, str]]
) -> dict[str, Any] | None:
    role = item.get("role")
    if role not in _ROLES:
        errors.append((f"{where}.role", "must be user, assistant, system or developer"))
        return None
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        errors.append((f"{where}.content", "must be a string or a list of text parts"))
        return None
    parts: list[str] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            errors.append((f"{where}.content[{k}]", "only text parts are supported"))
            return None
        parts.append(part["text"])
    return {"role": role, "content": "".join(parts)}


def _function_call(
    item: Mapping[str, Any],
    where: str,
    errors: list[tuple[str, str]],
    messages: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """An assistant message with this call, or None when it joined the previous assistant
    message (a turn's calls, and the text before them, are one chat message)."""
    fields = [item.get(k) for k in ("call_id", "name", "arguments")]
    if not all(isinstance(f, str) for f in fields):
        errors.append((where, "a function_call needs call_id, name and arguments strings"))
        return None
    call_id, name, arguments = fields
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        return None
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _function_output(
    item: Mapping[str, Any], where: str, errors: list[tuple[str, str]]
) -> dict[str, Any] | None:
    call_id, output = item.get("call_id"), item.get("output")
    if isinstance(output, list):  # a list of content parts: text only
        texts = [p.get("text") if isinstance(p, Mapping) else None for p in output]
        output = "".join(t for t in texts if isinstance(t, str))
        if len(texts) != sum(isinstance(t, str) for t in texts):
            errors.append((f"{where}.output", "only text parts are supported"))
            return None
    if not isinstance(call_id, str) or not isinstance(output, str):
        errors.append((where, "a function_call_output needs call_id and output strings"))
        return None
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tools(raw: Any, errors: list[tuple[str, str]]) -> Any:
    if not isinstance(raw, list):
        return raw  # the chat validation names it
    out: list[Any] = []
    for n, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind != "function":
            errors.append((f"tools[{n}].type", f"{kind!r} tools are not supported (only function)"))
            continue
        assert isinstance(tool, Mapping)
        fn = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(raw: Any, errors: list[tuple[str, str]]) -> Any:
    if isinstance(raw, str):
        return raw  # none, auto, required; the chat validation names anything else
    if isinstance(raw, Mapping) and raw.get("type") == "function":
        return {"type": "function", "function": {"name": raw.get("name")}}
    errors.append(("tool_choice", 'must be none, auto, required or {"type": "function", "name"}'))
    return None


def _format(text: Any, errors: list[tuple[str, str]]) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, Mapping):
        errors.append(("text", "must be an object"))
        return None
    if text.get("verbosity") not in (None, "medium"):
        errors.append(("text.verbosity", 'only "medium" is supported'))
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping):
        errors.append(("text.format", "must be an object"))
        return None
    if fmt.get("type") != "json_schema":
        return dict(fmt)  # text, json_object; anything else is named by the chat validation
    spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", "json_schema": spec}


# --- params in errors --------------------------------------------------------------------------

_TOOL_FIELD = re.compile(r"^tools\[(\d+)\]\.function")
_MESSAGE_FIELD = re.compile(r"^messages\[(\d+)\]")
_RENAMES = {
    "response_format": "text.format",
    "json_schema": "text.format.schema",
    "max_completion_tokens": "max_output_tokens",
    "max_tokens": "max_output_tokens",
    "messages": "input",
}


def rename_params(err: ApiError, origins: list[str]) -> ApiError:
    """`err` with the chat or /v2 params it names as the Responses params they came from."""
    if not isinstance(err, InvalidParams) or not err.errors:
        return err

    def rename(field: str) -> str:
        m = _MESSAGE_FIELD.match(field)
        if m:
            n = int(m.group(1))
            return origins[n] if n < len(origins) else "input"
        field = _TOOL_FIELD.sub(r"tools[\1]", field)
        head, dot, rest = field.partition(".")
        return _RENAMES.get(head, head) + dot + rest

    return invalid([(rename(str(e["field"])), str(e["message"])) for e in err.errors])
