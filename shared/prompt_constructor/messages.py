"""Chat messages: validation of the caller's message list into typed, immutable values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from shared.prompt_constructor.errors import PromptError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = get_args(Role)
_ROLE_BY_NAME: dict[str, Role] = {r: r for r in ROLES}


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def validate_messages(messages: object) -> tuple[Message, ...]:
    """Check every message and return them as `Message` values, in order.

    Keys other than ``role`` and ``content`` are ignored. The first problem found raises
    `PromptError` naming the message by index.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise PromptError("messages", f"expected a list of messages, got {_kind(messages)}")
    if not messages:
        raise PromptError("messages", "must hold at least one message")
    out: list[Message] = []
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(raw, Mapping):
            raise PromptError(where, f"expected an object with role and content, got {_kind(raw)}")
        if "role" not in raw:
            raise PromptError(f"{where}.role", "missing")
        role = raw["role"]
        if not isinstance(role, str):
            raise PromptError(f"{where}.role", f"expected a string, got {_kind(role)}")
        known = _ROLE_BY_NAME.get(role)
        if known is None:
            raise PromptError(
                f"{where}.role", f"unknown role {role!r}; expected {', '.join(ROLES)}"
            )
        if "content" not in raw:
            raise PromptError(f"{where}.content", "missing")
        content = raw["content"]
        if not isinstance(content, str):
            raise PromptError(f"{where}.content", f"expected a string, got {_kind(content)}")
        out.append(Message(known, content))
    return tuple(out)
