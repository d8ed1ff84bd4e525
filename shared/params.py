"""Validation of generation parameters at the HTTP edge, shared by the worker and orchestratord.

A `FieldReader` walks a JSON object and collects every problem as a `FieldError`, so a client
learns all its mistakes from one 400 response rather than one per round trip.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from shared.names import MAX_NAME_CHARS, NameRule
from shared.problem import FieldError, InvalidParams
from shared.prompt_constructor.errors import PromptError
from shared.prompt_constructor.messages import ROLES as PROMPT_ROLES
from shared.prompt_constructor.messages import message_json, validate_message
from shared.prompt_constructor.tools import validate_tools

# Limits, after llama-orch's: generous for real prompts, tight enough to refuse nonsense early.
MAX_PROMPT_CHARS = 262_144
MAX_MESSAGES = 512
MAX_TOKENS_LIMIT = 32_768
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 128
SEED_MAX = 2**32 - 1
# The roles a worker can build a prompt from: one list, the prompt constructor's, so that
# orchestratord refuses at submit what a worker would refuse later (issue 8).
ROLES = PROMPT_ROLES


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """What both APIs accept about generation itself."""

    prompt: str | None
    messages: tuple[dict[str, Any], ...] | None
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int | None
    stop: tuple[str, ...]
    # OpenAI tool definitions the prompt lists (specs/prompt_constructor.md PC-100).
    tools: tuple[dict[str, Any], ...] | None = None


async def read_json(request: Request) -> Any:
    """The request body as JSON, or InvalidParams naming the body."""
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidParams(
            f"the body is not valid JSON: {e}",
            errors=[{"field": "body", "message": "must be valid JSON"}],
        ) from None


class FieldReader:
    """Reads typed fields from a JSON object, recording errors instead of raising at once."""

    def __init__(self, body: object, known: set[str] | None = None) -> None:
        self.errors: list[FieldError] = []
        if not isinstance(body, Mapping):  # nothing else can be read: say so alone
            self.fail("body", "must be a JSON object")
            self.raise_if_failed()
        assert isinstance(body, Mapping)
        self.body: Mapping[str, Any] = body
        if known is not None:
            for name in sorted(set(body) - known):
                self.fail(name, "unknown field")

    def fail(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def raise_if_failed(self) -> None:
        if self.errors:
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)
            raise InvalidParams(summary, errors=self.errors)

    def string(
        self,
        name: str,
        default: str | None = None,
        *,
        max_len: int = 256,
        min_len: int = 1,
        required: bool = False,
    ) -> str | None:
        value = self.body.get(name, default)
        if value is None:
            if required:
                self.fail(name, "is required")
            return None
        if not isinstance(value, str):
            self.fail(name, "must be a string")
            return default
        if not min_len <= len(value) <= max_len:
            self.fail(name, f"length must be between {min_len} and {max_len} characters")
            return default
        return value

    def name(
        self, name: str, rule: NameRule, default: str | None = None, *, required: bool = False
    ) -> str | None:
        """A worker id, pool name or model name (shared.names): a string of its charset."""
        before = len(self.errors)
        value = self.string(name, default, max_len=MAX_NAME_CHARS, required=required)
        if value is None or len(self.errors) > before:
            return value
        problem = rule.problem(value)
        if problem:
            self.fail(name, problem)
            return default
        return value

    def integer(self, name: str, default: int | None, lo: int, hi: int) -> int | None:
        value = self.body.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, "must be an integer")
            return default
        if not lo <= value <= hi:
            self.fail(name, f"must be between {lo} and {hi}")
            return default
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.body.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.fail(name, "must be a number")
            return default
        if not lo <= value <= hi:
            self.fail(name, f"must be between {lo} and {hi}")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.body.get(name, default)
        if not isinstance(value, bool):
            self.fail(name, "must be true or false")
            return default
        return value

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.body.get(name, default)
        if value not in options:
            self.fail(name, f"must be one of {', '.join(options)}")
            return default
        return str(value)

    def stop_strings(self, name: str = "stop") -> tuple[str, ...]:
        value = self.body.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            self.fail(name, "must be a list of non-empty strings")
            return ()
        if len(value) > MAX_STOP_STRINGS:
            self.fail(name, f"at most {MAX_STOP_STRINGS} stop strings")
            return ()
        if any(len(s) > MAX_STOP_CHARS for s in value):
            self.fail(name, f"each stop string is at most {MAX_STOP_CHARS} characters")
            return ()
        return tuple(value)

    def messages(self, name: str = "messages") -> tuple[dict[str, Any], ...] | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.fail(name, "must be a non-empty list of {role, content} objects")
            return None
        if len(value) > MAX_MESSAGES:
            self.fail(name, f"at most {MAX_MESSAGES} messages")
            return None
        out: list[dict[str, Any]] = []
        total = 0
        for i, m in enumerate(value):
            where = f"{name}[{i}]"
            if not isinstance(m, Mapping):
                self.fail(where, "must be an object with role and content")
                continue
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                self.fail(f"{where}.role", f"must be one of {', '.join(ROLES)}")
                continue
            if not isinstance(content, str) and not (role == "assistant" and m.get("tool_calls")):
                self.fail(f"{where}.content", "must be a string")
                continue
            try:  # tool calls and results (PC-101, PC-102)
                msg = validate_message(m, where)
            except PromptError as e:
                self.fail(e.field, e.reason)
                continue
            total += len(msg.content) + sum(len(c.arguments) for c in msg.tool_calls)
            out.append(message_json(msg, arguments_as_text=True))
        if total > MAX_PROMPT_CHARS:
            self.fail(name, f"total content is at most {MAX_PROMPT_CHARS} characters")
        return tuple(out)

    def tools(self, name: str = "tools") -> tuple[dict[str, Any], ...] | None:
        value = self.body.get(name)
        if value is None:
            return None
        try:
            return validate_tools(value)
        except PromptError as e:
            self.fail(e.field, e.reason)
            return None

    def _repeat_penalty(self) -> float:
        value = self.number("repeat_penalty", 1.0, 0.0, 2.0)
        if value == 0.0:  # llama.cpp divides by it
            self.fail("repeat_penalty", "must be greater than 0 (1.0 disables it)")
            return 1.0
        return value

    def generation(self, *, max_tokens_default: int = 128) -> GenerationParams:
        """The fields every generation request shares; exactly one of prompt or messages."""
        # An empty prompt gives the model nothing to continue: refused, not answered with junk.
        prompt = self.string("prompt", max_len=MAX_PROMPT_CHARS, min_len=1)
        messages = self.messages()
        if (prompt is None) == (messages is None) and not any(
            e["field"].startswith(("prompt", "messages")) for e in self.errors
        ):
            self.fail("prompt", "exactly one of prompt or messages is required")
        return GenerationParams(
            prompt=prompt,
            messages=messages,
            max_tokens=self.integer("max_tokens", max_tokens_default, 1, MAX_TOKENS_LIMIT)
            or max_tokens_default,
            temperature=self.number("temperature", 0.8, 0.0, 2.0),
            top_p=self.number("top_p", 0.95, 0.0, 1.0),
            top_k=self.integer("top_k", 40, 0, 1000) or 0,
            min_p=self.number("min_p", 0.05, 0.0, 1.0),
            repeat_penalty=self._repeat_penalty(),
            seed=self.integer("seed", None, 0, SEED_MAX),
            stop=self.stop_strings(),
            tools=self.tools(),
        )


GENERATION_FIELDS = frozenset(
    {
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "seed",
        "stop",
        "tools",
    }
)
