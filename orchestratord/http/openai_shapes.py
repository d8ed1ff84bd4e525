"""OpenAI <-> llorch mapping for the /v1 routes, pure: request bodies in, OpenAI objects out.

`openai_task_body` turns an OpenAI request into a `/v2` task body (see `openai_api` for the
parameter mapping); `Shaper` builds `chat.completion(.chunk)` and `text_completion` objects
from a task's events; `openai_error` gives OpenAI's `error` member for an `ApiError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from orchestratord.http.openai_structured import Logprobs, structure_fields
from orchestratord.http.openai_tools import ToolMode, tool_fields, tool_message
from shared.problem import ApiError, Internal, InvalidParams
from shared.sse import encode_data

Kind = Literal["chat", "completion"]
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# OpenAI fields llorch refuses when set to anything but their "off" value.
_UNSUPPORTED: dict[str, str] = {
    "logit_bias": "logit_bias is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix (insertion) is not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
}
# Sampling and llorch's extensions, passed to the task as they are.
PASS_THROUGH = (
    "temperature",
    "top_p",
    "seed",
    "top_k",
    "min_p",
    "repeat_penalty",
    "priority",
    "session_id",
    "deadline_ms",
    "ignore_eos",
    "task_id",
)
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",  # legacy function result (ORCH-251)
}
_FINISH = {"MAX_TOKENS": "length", "EOS": "stop", "STOP_SEQUENCE": "stop", "CANCELLED": "stop"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    403: "permission_error",
    429: "rate_limit_error",
}


# --- request mapping (pure) -----------------------------------------------------------------


def openai_task_body(kind: Kind, body: Any) -> tuple[dict[str, Any], bool, bool]:
    """Map an OpenAI request body to a `/v2` task body; returns (body, stream, include_usage).

    Raises InvalidParams (listing every bad field) for what llorch cannot honour.
    """
    if not isinstance(body, Mapping):
        raise invalid([("body", "must be a JSON object")])
    errors: list[tuple[str, str]] = []
    task: dict[str, Any] = {"model": body.get("model")}
    if not isinstance(task["model"], str) or not task["model"]:
        errors.append(("model", "is required and must be a non-empty string"))
    if kind == "chat":
        task["messages"] = _messages(body.get("messages"), errors)
        tool_fields(body, task, errors)
        limit = body.get("max_completion_tokens")
        if limit is None:
            limit = body.get("max_tokens")
    else:
        task["prompt"] = _prompt(body.get("prompt"), errors)
        limit = body.get("max_tokens")
    if limit is not None:
        task["max_tokens"] = limit
    for name in PASS_THROUGH:
        if body.get(name) is not None:
            task[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        task["stop"] = [stop]
    elif stop is not None:
        task["stop"] = stop
    user = body.get("user")
    if user is not None and "session_id" not in task:
        if isinstance(user, str) and user:
            task["session_id"] = user[:256]
        else:
            errors.append(("user", "must be a non-empty string"))
    n = body.get("n")
    if n is not None and n != 1:
        # Choices of one prompt (ORCH-270): parse_task_request checks the range; each choice's
        # tool calls and logprobs are read from its own tokens (ORCH-271).
        task["n"] = n
    best_of = body.get("best_of")
    if best_of is not None and (best_of != 1 or isinstance(best_of, bool)):
        errors.append(("best_of", "only best_of=1 is supported"))
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            errors.append((name, "is not supported (use repeat_penalty); leave it unset or 0"))
    for name, why in _UNSUPPORTED.items():
        if body.get(name) not in (None, False, 0, "", [], {}, "none"):
            errors.append((name, why))
    task.update(structure_fields(kind, body, errors))  # response_format, logprobs (ORCH-242)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        errors.append(("stream", "must be a boolean"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, Mapping) or not isinstance(
            options.get("include_usage", False), bool
        ):
            errors.append(("stream_options", "must be an object with a boolean include_usage"))
        else:
            include_usage = bool(options.get("include_usage", False))
    if errors:
        raise invalid(errors)
    return task, bool(stream), include_usage


def _messages(raw: Any, errors: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        errors.append(("messages", "must be a non-empty list of messages"))
        return []
    out: list[dict[str, Any]] = []
    for n, m in enumerate(raw):
        where = f"messages[{n}]"
        if not isinstance(m, Mapping):
            errors.append((where, "must be an object"))
            continue
        raw_role = m.get("role")
        role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            errors.append((f"{where}.role", "must be system, developer, user, assistant or tool"))
            continue
        message = tool_message(m, role) or {"role": role, "content": m.get("content")}
        if message["content"] is None and "tool_calls" in message:
            out.append(message)
            continue
        content = _content(message["content"])
        if content is None:
            errors.append((f"{where}.content", "must be a string or a list of text parts"))
            continue
        out.append({**message, "content": content})
    return out


def _content(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (
                isinstance(part, Mapping)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                return None
            parts.append(part["text"])
        return "".join(parts)
    return None


def _prompt(raw: Any, errors: list[tuple[str, str]]) -> str:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        raw = raw[0]
    if not isinstance(raw, str):
        errors.append(("prompt", "must be a string (or a list of exactly one string)"))
        return ""
    return raw


def invalid(errors: list[tuple[str, str]]) -> InvalidParams:
    return InvalidParams(
        "; ".join(f"{f}: {m}" for f, m in errors),
        errors=[{"field": f, "message": m} for f, m in errors],
    )


# --- response shaping (pure) ----------------------------------------------------------------


class Shaper:
    """Builds OpenAI objects for one task: stream chunks, the final object, errors."""

    def __init__(
        self,
        kind: Kind,
        task_id: str,
        model: str,
        created: int,
        *,
        logprobs: Logprobs | None = None,
        tools: ToolMode | None = None,
    ) -> None:
        self.kind = kind
        # Set when the request asked for logprobs (ORCH-243): the template each choice's
        # collector is made from (`new_logprobs`).
        self.logprobs = logprobs
        self.tools = tools  # how to read tool calls from the output (ORCH-253)
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + task_id
        self.model = model
        self.created = created
        self.object = "chat.completion" if kind == "chat" else "text_completion"
        self.chunk_object = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(
        self,
        text: str | None,
        finish: str | None = None,
        *,
        role: bool = False,
        logprobs: dict[str, Any] | None = None,
        index: int = 0,
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index}
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        choice["logprobs"] = logprobs
        choice["finish_reason"] = finish
        return {**self._base(self.chunk_object), "choices": [choice]}

    def new_logprobs(self) -> Logprobs | None:
        """A fresh collector for one choice's logprobs, when the request asked for them."""
        proto = self.logprobs
        return None if proto is None else Logprobs(proto.kind, proto.start)

    def tool_calls_chunk(self, deltas: list[dict[str, Any]], index: int = 0) -> dict[str, Any]:
        """A chunk of OpenAI's streamed `tool_calls` entries of choice `index` (ORCH-255)."""
        delta = self.tools.delta(deltas) if self.tools else {"tool_calls": deltas}
        choice = {"index": index, "delta": delta, "logprobs": None}
        return {**self._base(self.chunk_object), "choices": [{**choice, "finish_reason": None}]}

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self._base(self.chunk_object), "choices": [], "usage": usage}

    def final(
        self, text: str, finish: str, usage: dict[str, Any], logprobs: Logprobs | None = None
    ) -> dict[str, Any]:
        """The object of a task of one choice."""
        return self.final_choices([(text, finish, logprobs)], usage)

    def final_choices(
        self, choices: list[tuple[str, str, Logprobs | None]], usage: dict[str, Any]
    ) -> dict[str, Any]:
        """The whole object: each choice's (text, finish_reason, logprobs) by index (ORCH-270)."""
        out = [self._choice(text, finish, k, lp) for k, (text, finish, lp) in enumerate(choices)]
        return {**self._base(self.object), "choices": out, "usage": usage}

    def _choice(
        self, text: str, finish: str, index: int, logprobs: Logprobs | None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.tools is not None:
                message["content"], calls = self.tools.parse(text)
                if calls:
                    message.update(self.tools.message_fields(calls))
                    finish = self.tools.finish
            choice["message"] = message
        else:
            choice["text"] = text
        choice["logprobs"] = logprobs.whole() if logprobs is not None else None
        choice["finish_reason"] = finish
        return choice


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's finish_reason for a worker stop_reason: `length` for MAX_TOKENS, else `stop`."""
    return _FINISH.get(str(stop_reason), "stop")


def usage(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
) -> dict[str, Any]:
    """OpenAI's `usage`; `cached_tokens`: the prompt tokens the worker took from its prefix
    cache, when it said (ORCH-246)."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return out


def openai_error(err: ApiError) -> dict[str, Any]:
    """The OpenAI `error` member for an ApiError."""
    param = err.errors[0]["field"] if err.errors else None
    kind = _ERROR_TYPES.get(err.status, "server_error" if err.status >= 500 else "api_error")
    code = err.openai_code or err.code
    return {"message": err.detail, "type": kind, "param": param, "code": code}


def event_error(data: Mapping[str, Any]) -> ApiError:
    """The ApiError for a task's `error` event: the class whose `code` matches, else 500."""
    code = str(data.get("code", "INTERNAL"))
    message = str(data.get("message") or "the task failed")
    for cls in _error_classes(ApiError):
        if cls.code == code:
            return cls(message)
    err = Internal(message)
    err.code = code  # type: ignore[misc]  # keep the task's own code (CANCELLED, DECODE_TIMEOUT)
    return err


def _error_classes(base: type[ApiError]) -> list[type[ApiError]]:
    out = []
    for cls in base.__subclasses__():
        out += [cls, *_error_classes(cls)]
    return out


def sse_data(obj: Mapping[str, Any] | str) -> bytes:
    """One OpenAI stream frame, escaped like every llorch SSE frame (shared.sse)."""
    return encode_data(obj)
